"""py-code-mode's `Session` shape, run on codemode: move over by changing the executor.

    async with Session(storage=RedisStorage(url=..., prefix=..., workspace_id=...),
                       executor=CodeSessionExecutor("agent-1")) as session:
        result = await session.run("workflows.list()")   # result.value, .stdout, .error

Code always runs in a codemode session server (a CodeSession's pod, or any `codemode
serve`), never in this process: that server's sandboxed worker is the executor. The
storage-side methods (workflows and their skills-era names, artifacts, deps, tools) go
through the same server, which is pinned to its workspace and enforces its quotas; the
`storage` argument says which workspace that must be, and a server bound to another one
refuses the session. Only the executor line differs from a py-code-mode program.
"""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

from codemode_session.client import AsyncSessionClient
from codemode_session.errors import ValidationError
from codemode_session.results import ExecuteResult


class _Workspaced(Protocol):
    workspace_id: str | None


class RemoteExecutor:
    """Code runs in the `codemode serve` at `url` (bearer `token`), one server session
    opened at `start` and ended at `close`."""

    def __init__(self, url: str, token: str | None = None, timeout: float = 330.0) -> None:
        self.url = url
        self.token = token
        self.timeout = timeout
        self._client: AsyncSessionClient | None = None

    async def _address(self) -> tuple[str, str | None]:
        return self.url, self.token

    async def start(self, workspace_id: str | None = None) -> None:
        if self._client is not None:
            return
        url, token = await self._address()
        self._client = AsyncSessionClient(url, token=token, timeout=self.timeout)
        try:
            await self._client.create_session(workspace_id)
        except BaseException:
            await self._client.close()
            self._client = None
            raise

    @property
    def client(self) -> AsyncSessionClient:
        if self._client is None:
            raise ValidationError("the executor is not started: use `async with Session(...)`")
        return self._client

    async def run(self, code: str, timeout: float | None = None) -> ExecuteResult:
        return await self.client.execute(code, timeout=timeout)

    async def reset(self) -> None:
        await self.client.reset()

    async def close(self) -> None:
        if self._client is None:
            return
        client, self._client = self._client, None
        try:
            await client.end_session()
        except Exception:  # the server may be gone: nothing is left to end
            pass
        finally:
            await client.close()


class CodeSessionExecutor(RemoteExecutor):
    """Code runs in the CodeSession `name` (created in `namespace` for `workspace` if it
    does not exist), found through the Kubernetes API with the current kubeconfig.
    Needs the operator extra (`pip install 'codemode[operator]'`)."""

    def __init__(
        self,
        name: str,
        namespace: str = "default",
        workspace: str | None = None,
        ready_timeout: float = 120.0,
        timeout: float = 330.0,
    ) -> None:
        super().__init__("", None, timeout)
        self.name = name
        self.namespace = namespace
        self.workspace = workspace
        self.ready_timeout = ready_timeout
        self._sessions: Any = None

    async def _address(self) -> tuple[str, str | None]:
        try:
            from codemode_operator.sessions import Sessions
        except ImportError:
            raise ValidationError(
                "CodeSessionExecutor needs the operator extra: pip install 'codemode[operator]'"
            ) from None
        self._sessions = Sessions(namespace=self.namespace)
        url, token = await asyncio.to_thread(
            self._sessions.address, self.name, self.workspace, self.ready_timeout
        )
        self.url, self.token = url, token
        return url, token

    async def close(self) -> None:
        await super().close()
        if self._sessions is not None:
            self._sessions.close()  # port-forwards it opened
            self._sessions = None


class Session:
    """A py-code-mode `Session` whose executor is a codemode session server."""

    def __init__(
        self,
        storage: _Workspaced | None = None,
        executor: RemoteExecutor | None = None,
        sync_deps_on_start: bool = False,
    ) -> None:
        if executor is None:
            raise ValidationError(
                "codemode runs code only in a session server: pass "
                "executor=CodeSessionExecutor(name) or RemoteExecutor(url, token)"
            )
        if not isinstance(executor, RemoteExecutor):
            raise ValidationError(
                f"executor must be a CodeSessionExecutor or RemoteExecutor, got "
                f"{type(executor).__name__}"
            )
        self.storage = storage
        self.executor = executor
        self._sync_deps_on_start = sync_deps_on_start
        self._closed = False

    async def start(self) -> None:
        if self._closed:
            raise ValidationError("the session is closed")
        await self.executor.start(getattr(self.storage, "workspace_id", None))
        if self._sync_deps_on_start:
            await self.sync_deps()

    async def __aenter__(self) -> Session:
        await self.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    async def run(self, code: str, timeout: float | None = None) -> ExecuteResult:
        if self._closed:
            return ExecuteResult.from_json({"error": "Session is closed"})
        await self.executor.start(getattr(self.storage, "workspace_id", None))
        return await self.executor.run(code, timeout)

    async def reset(self) -> None:
        await self.executor.reset()

    async def close(self) -> None:
        self._closed = True
        await self.executor.close()

    # ---- tools -------------------------------------------------------------------------
    async def list_tools(self) -> list[dict[str, Any]]:
        return await self.executor.client.list_tools()

    async def search_tools(self, query: str, limit: int = 10) -> list[dict[str, Any]]:
        return await self.executor.client.search_tools(query, limit)

    # ---- workflows (and their skills-era names) ----------------------------------------
    async def list_workflows(self) -> list[dict[str, Any]]:
        return await self.executor.client.list_workflows()

    async def search_workflows(self, query: str, limit: int = 5) -> list[dict[str, Any]]:
        return await self.executor.client.search_workflows(query, limit)

    async def add_workflow(self, name: str, source: str, description: str = "") -> dict[str, Any]:
        return await self.executor.client.create_workflow(name, source, description)

    async def get_workflow(self, name: str) -> dict[str, Any] | None:
        return await self.executor.client.get_workflow(name)

    async def remove_workflow(self, name: str) -> bool:
        return await self.executor.client.delete_workflow(name)

    list_skills = list_workflows
    search_skills = search_workflows
    add_skill = add_workflow
    get_skill = get_workflow
    remove_skill = remove_workflow
    create_workflow = add_workflow
    delete_workflow = remove_workflow

    # ---- artifacts ---------------------------------------------------------------------
    async def list_artifacts(self) -> list[dict[str, Any]]:
        return await self.executor.client.list_artifacts()

    async def save_artifact(
        self, name: str, data: Any, description: str = "", metadata: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        return await self.executor.client.save_artifact(name, data, description, metadata)

    async def load_artifact(self, name: str) -> Any:
        return await self.executor.client.load_artifact(name)

    async def delete_artifact(self, name: str) -> None:
        await self.executor.client.delete_artifact(name)

    # ---- deps --------------------------------------------------------------------------
    async def list_deps(self) -> list[str]:
        return await self.executor.client.list_deps()

    async def add_dep(self, package: str) -> dict[str, Any]:
        return await self.executor.client.add_dep(package)

    async def remove_dep(self, package: str) -> dict[str, Any]:
        return await self.executor.client.remove_dep(package)

    async def sync_deps(self) -> dict[str, Any]:
        return await self.executor.client.sync_deps()
