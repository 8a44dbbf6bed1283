"""Storage for agent code: every call goes to the session server, never to Redis.

A worker holds no storage credentials: its namespaces (`artifacts`, `workflows`,
`tools`, `deps`) ask the server over the worker's socket, and the server
decides, scoped to the session's workspace and within its quotas. Raw Redis
commands are out of reach because there is nothing to connect with, and only the
calls below exist (no library publishing, tool writes or transactions).
"""

from __future__ import annotations

from typing import Any

from codemode_session import errors
from codemode_session.channel import StorageLine
from codemode_session.storage.base import ArtifactInfo
from codemode_session.workflow_model import Workflow

# What an answer's error_type may turn into; anything else is a plain CodemodeError.
ERROR_TYPES: dict[str, type[errors.CodemodeError]] = {
    cls.__name__: cls
    for cls in (
        errors.ValidationError,
        errors.NotFoundError,
        errors.ForbiddenError,
        errors.StorageUnavailableError,
        errors.ConflictError,
        errors.QuotaExceededError,
    )
}


class BrokeredStorage:
    """What agent code may ask of storage, answered by the session server.

    Synchronous on purpose: a call is one frame out and one back on the worker's storage
    line, so there is nothing to await, and no event loop sits on the hot path of
    `artifacts.save`/`load` (it cost more than the hop to the server).
    """

    def __init__(self, line: StorageLine, prefix: str, workspace_id: str | None) -> None:
        self._line = line
        self.prefix = prefix
        self.workspace_id = workspace_id

    @property
    def description(self) -> str:
        ws = self.workspace_id if self.workspace_id is not None else "(unscoped)"
        return f"session server storage, workspace={ws}"

    def _call(self, method: str, blob: bytes | None = None, **args: Any) -> dict[str, Any]:
        answer = self._line.call({"method": method, "args": args}, blob)
        if not answer.get("ok"):
            kind = ERROR_TYPES.get(str(answer.get("error_type")), errors.CodemodeError)
            raise kind(str(answer.get("error") or f"storage call {method} failed"))
        return answer

    def _result(self, method: str, **args: Any) -> Any:
        return self._call(method, **args).get("result")

    def ping(self) -> None:
        self._result("ping")

    # workflows
    def list_workflows(self) -> list[Workflow]:
        return [Workflow.from_dict(w) for w in self._result("list_workflows") or []]

    def get_workflow(self, name: str) -> Workflow | None:
        found = self._result("get_workflow", name=name)
        return Workflow.from_dict(found) if found is not None else None

    def save_workflow(self, workflow: Workflow) -> None:
        self._result(
            "save_workflow",
            name=workflow.name,
            source=workflow.source,
            description=workflow.description,
        )

    def delete_workflow(self, name: str) -> bool:
        return bool(self._result("delete_workflow", name=name))

    def search_workflows(self, query: str, limit: int) -> list[Workflow]:
        """Ranked by the server, where the search model and its vectors are."""
        found = self._result("search_workflows", query=query, limit=limit) or []
        return [Workflow.from_dict({**w, "source": ""}) for w in found]

    def search_tools(self, query: str, limit: int) -> list[dict[str, Any]]:
        found = self._result("search_tools", query=query, limit=limit) or []
        return [t for t in found if isinstance(t, dict)]

    # artifacts
    def save_artifact(self, info: ArtifactInfo, data: bytes) -> None:
        self._call(
            "save_artifact",
            blob=data,
            name=info.name,
            description=info.description,
            metadata=info.metadata,
        )

    def load_artifact(self, name: str) -> tuple[ArtifactInfo, bytes] | None:
        answer = self._call("load_artifact", name=name)
        found = answer.get("result")
        blob = answer.get("blob")
        if found is None or not isinstance(blob, bytes):
            return None
        return ArtifactInfo.from_index_entry(name, found), blob

    def get_artifact(self, name: str) -> ArtifactInfo | None:
        found = self._result("get_artifact", name=name)
        return ArtifactInfo.from_index_entry(name, found) if found is not None else None

    def list_artifacts(self) -> list[ArtifactInfo]:
        return [
            ArtifactInfo.from_index_entry(str(e.get("name", "")), e)
            for e in self._result("list_artifacts") or []
            if isinstance(e, dict)
        ]

    def delete_artifact(self, name: str) -> bool:
        return bool(self._result("delete_artifact", name=name))

    # deps and tools
    def list_deps(self) -> list[str]:
        return [str(s) for s in self._result("list_deps") or []]

    def add_dep(self, spec: str) -> bool:
        return bool(self._result("add_dep", spec=spec))

    def remove_dep(self, spec: str) -> bool:
        return bool(self._result("remove_dep", spec=spec))

    def install_deps(self, specs: list[str]) -> list[str]:
        """pip install by the server (into DEPS_DIR), which keeps the folder's manifest."""
        return [str(s) for s in self._result("install_deps", specs=specs) or []]

    def list_tools(self) -> dict[str, str]:
        found = self._result("list_tools") or {}
        return {str(k): str(v) for k, v in found.items()} if isinstance(found, dict) else {}
