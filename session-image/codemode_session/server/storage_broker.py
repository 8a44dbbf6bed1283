"""The server's side of agent storage: answers a worker's storage calls.

Everything in a call comes from agent code and is treated as hostile: only the
methods below exist, every argument is checked, the workspace is the one the
server bound the worker to (never one the call names), writes go through the
storage layer's quotas, and deps can only change when runtime deps are on.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from codemode_session.errors import CodemodeError, ForbiddenError, ValidationError
from codemode_session.names import validate_package_spec
from codemode_session.search.service import search_tools, search_workflows, workflows_changed
from codemode_session.storage.artifact_redis import SyncArtifacts
from codemode_session.storage.base import ArtifactInfo, Storage
from codemode_session.storage.redis_storage import RedisStorage
from codemode_session.tools import load_tools_dir, tool_specs
from codemode_session.workflow_model import parse_workflow

Answer = tuple[dict[str, Any], bytes | None]
Handler = Callable[[Storage, dict[str, Any], bytes | None], Awaitable[Answer]]


def _str(args: Mapping[str, Any], name: str) -> str:
    value = args.get(name)
    if not isinstance(value, str):
        raise ValidationError(f"{name} must be a string")
    return value


def _limit(args: Mapping[str, Any]) -> int:
    value = args.get("limit", 10)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValidationError("limit must be an integer")
    return max(0, min(value, 1000))


def _ok(result: Any = None, blob: bytes | None = None) -> Answer:
    return {"ok": True, "result": result}, blob


def _arguments(call: dict[str, Any]) -> tuple[dict[str, Any], bytes | None]:
    args = call.get("args")
    if not isinstance(args, dict):
        raise ValidationError("storage call arguments must be an object")
    attachment = call.get("blob")
    return args, attachment if isinstance(attachment, bytes) else None


def _failure(exc: Exception) -> dict[str, Any]:
    """What agent code learns of a failed call: our errors as they are, a malformed
    call as a ValidationError, anything else re-raised (a bug of ours, not an answer)."""
    if isinstance(exc, CodemodeError):
        return {"ok": False, "error_type": type(exc).__name__, "error": str(exc)}
    if isinstance(exc, ValueError | TypeError | RecursionError | MemoryError):
        return {
            "ok": False,
            "error_type": "ValidationError",
            "error": f"invalid storage call: {type(exc).__name__}",
        }
    raise exc


def _framed(reply: dict[str, Any], call: dict[str, Any]) -> dict[str, Any]:
    return {**reply, "op": "storage_answer", "id": call.get("id")}


def _attachment(blob: bytes | None) -> bytes:
    if blob is None:
        raise ValidationError("save_artifact needs the data as an attachment")
    return blob


def _artifact_info(args: Mapping[str, Any]) -> ArtifactInfo:
    metadata = args.get("metadata") or {}
    if not isinstance(metadata, dict):
        raise ValidationError("metadata must be an object")
    return ArtifactInfo(
        name=_str(args, "name"),
        description=str(args.get("description") or ""),
        created_at=time.time(),
        metadata=metadata,
    )


def _loaded(found: tuple[ArtifactInfo, bytes] | None) -> Answer:
    if found is None:
        return _ok(None)
    info, data = found
    return _ok(info.index_entry(), data)


class StorageBroker:
    def __init__(
        self,
        storage_for: Callable[[str | None], Storage],
        allow_deps: bool,
        install: Callable[[list[str]], Awaitable[None]] | None = None,
        tools_path: str | None = None,
    ) -> None:
        self._storage_for = storage_for
        self._tools_path = tools_path
        self._allow_deps = allow_deps
        self._install = install
        self._handlers: dict[str, Handler] = {
            "ping": self._ping,
            "list_workflows": self._list_workflows,
            "get_workflow": self._get_workflow,
            "save_workflow": self._save_workflow,
            "delete_workflow": self._delete_workflow,
            "save_artifact": self._save_artifact,
            "load_artifact": self._load_artifact,
            "get_artifact": self._get_artifact,
            "list_artifacts": self._list_artifacts,
            "delete_artifact": self._delete_artifact,
            "list_deps": self._list_deps,
            "add_dep": self._add_dep,
            "remove_dep": self._remove_dep,
            "install_deps": self._install_deps,
            "list_tools": self._list_tools,
            "search_workflows": self._search_workflows,
            "search_tools": self._search_tools,
        }

    async def answer(self, workspace_id: str | None, call: dict[str, Any]) -> Answer:
        """The answer frame (and attachment) for one call; errors become answers too."""
        try:
            handler = self._handlers.get(str(call.get("method")))
            if handler is None:
                raise ValidationError(f"unknown storage call {call.get('method')!r}")
            args, attachment = _arguments(call)
            reply, blob = await handler(self._storage_for(workspace_id), args, attachment)
        except Exception as exc:
            reply, blob = _failure(exc), None
        return _framed(reply, call), blob

    def blocking_for(self, workspace_id: str | None) -> SyncArtifacts | None:
        """The blocking artifact client of the workspace's storage, if it has one (Redis
        storage built from a URL): what `answer_blocking` uses in a worker's storage
        thread. Called on the event loop, where the storages are made."""
        storage = self._storage_for(workspace_id)
        return storage.sync_artifacts() if isinstance(storage, RedisStorage) else None

    def answer_blocking(self, fast: SyncArtifacts, call: dict[str, Any]) -> Answer | None:
        """The answer to an artifact save or load, from a storage thread with blocking
        I/O (the same checks, quota and errors as `answer`); None for any other call,
        and for the rare save that must go the asyncio way: then call `answer`."""
        method = call.get("method")
        if method not in ("save_artifact", "load_artifact"):
            return None
        try:
            args, attachment = _arguments(call)
            if method == "load_artifact":
                reply, blob = _loaded(fast.load_artifact(_str(args, "name")))
            else:
                if not fast.save_artifact(_artifact_info(args), _attachment(attachment)):
                    return None
                reply, blob = _ok()
        except Exception as exc:
            reply, blob = _failure(exc), None
        return _framed(reply, call), blob

    # ---- handlers -----------------------------------------------------------------

    async def _ping(self, storage: Storage, _: dict[str, Any], __: bytes | None) -> Answer:
        await storage.ping()
        return _ok()

    async def _list_workflows(
        self, storage: Storage, _: dict[str, Any], __: bytes | None
    ) -> Answer:
        return _ok([w.to_dict() for w in await storage.list_workflows()])

    async def _get_workflow(
        self, storage: Storage, args: dict[str, Any], _: bytes | None
    ) -> Answer:
        found = await storage.get_workflow(_str(args, "name"))
        return _ok(found.to_dict() if found else None)

    async def _save_workflow(
        self, storage: Storage, args: dict[str, Any], _: bytes | None
    ) -> Answer:
        description = args.get("description") or None
        if description is not None and not isinstance(description, str):
            raise ValidationError("description must be a string")
        # Parsed here, by the server (AST only, nothing runs): the worker's parse is
        # agent code's to change.
        workflow = parse_workflow(_str(args, "name"), _str(args, "source"), description)
        await storage.save_workflow(workflow)
        await workflows_changed(storage, saved=[workflow])
        return _ok()

    async def _delete_workflow(
        self, storage: Storage, args: dict[str, Any], _: bytes | None
    ) -> Answer:
        name = _str(args, "name")
        deleted = await storage.delete_workflow(name)
        await workflows_changed(storage, deleted=[name])
        return _ok(deleted)

    async def _search_workflows(
        self, storage: Storage, args: dict[str, Any], _: bytes | None
    ) -> Answer:
        found = await search_workflows(storage, _str(args, "query"), _limit(args))
        return _ok([w.summary() for w in found])

    async def _search_tools(
        self, storage: Storage, args: dict[str, Any], _: bytes | None
    ) -> Answer:
        texts = load_tools_dir(self._tools_path)
        texts.update(await storage.list_tools())
        found = await search_tools(storage, tool_specs(texts), _str(args, "query"), _limit(args))
        return _ok([s.summary() for s in found])

    async def _save_artifact(
        self, storage: Storage, args: dict[str, Any], blob: bytes | None
    ) -> Answer:
        await storage.save_artifact(_artifact_info(args), _attachment(blob))
        return _ok()

    async def _load_artifact(
        self, storage: Storage, args: dict[str, Any], _: bytes | None
    ) -> Answer:
        return _loaded(await storage.load_artifact(_str(args, "name")))

    async def _get_artifact(
        self, storage: Storage, args: dict[str, Any], _: bytes | None
    ) -> Answer:
        info = await storage.get_artifact(_str(args, "name"))
        return _ok(info.index_entry() if info else None)

    async def _list_artifacts(
        self, storage: Storage, _: dict[str, Any], __: bytes | None
    ) -> Answer:
        return _ok([{"name": i.name, **i.index_entry()} for i in await storage.list_artifacts()])

    async def _delete_artifact(
        self, storage: Storage, args: dict[str, Any], _: bytes | None
    ) -> Answer:
        return _ok(await storage.delete_artifact(_str(args, "name")))

    async def _list_deps(self, storage: Storage, _: dict[str, Any], __: bytes | None) -> Answer:
        return _ok(await storage.list_deps())

    def _require_deps(self, verb: str) -> None:
        if not self._allow_deps:
            raise ForbiddenError(
                f"deps.{verb}() is disabled: runtime dependencies are off for this session "
                "(ALLOW_RUNTIME_DEPS=false); ask an operator to add the package to the image "
                "or the workspace"
            )

    async def _add_dep(self, storage: Storage, args: dict[str, Any], _: bytes | None) -> Answer:
        self._require_deps("add")
        return _ok(await storage.add_dep(validate_package_spec(_str(args, "spec"))))

    async def _remove_dep(self, storage: Storage, args: dict[str, Any], _: bytes | None) -> Answer:
        self._require_deps("remove")
        return _ok(await storage.remove_dep(validate_package_spec(_str(args, "spec"))))

    async def _install_deps(
        self, storage: Storage, args: dict[str, Any], _: bytes | None
    ) -> Answer:
        self._require_deps("add")
        specs = args.get("specs")
        if not isinstance(specs, list) or not all(isinstance(s, str) for s in specs):
            raise ValidationError("specs must be a list of strings")
        checked = [validate_package_spec(s) for s in specs]
        if self._install is None:
            raise ForbiddenError("this server installs no packages")
        await self._install(checked)
        return _ok(checked)

    async def _list_tools(self, storage: Storage, _: dict[str, Any], __: bytes | None) -> Answer:
        return _ok(await storage.list_tools())
