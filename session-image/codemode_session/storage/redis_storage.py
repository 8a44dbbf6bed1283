"""Redis backend (redis-py asyncio) with py-code-mode's key layout."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Collection, Mapping
from typing import Any, TypeVar
from urllib.parse import urlsplit

import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline
from redis.exceptions import AuthenticationError, NoPermissionError, ResponseError, WatchError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from codemode_session.errors import (
    ConflictError,
    ForbiddenError,
    StorageUnavailableError,
    ValidationError,
)
from codemode_session.names import validate_artifact_name, validate_workflow_name
from codemode_session.storage.base import (
    TRANSACTION_ATTEMPTS,
    ArtifactInfo,
    LibraryRecord,
    StorageTransaction,
)
from codemode_session.storage.keys import KeyLayout
from codemode_session.workflow_model import Workflow

T = TypeVar("T")


def redacted_url(url: str) -> str:
    """The URL without its password, for messages and /info."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    user = f"{parts.username}@" if parts.username else ""
    return f"{parts.scheme}://{user}{host}{parts.path}"


def _s(value: bytes | str) -> str:
    return value.decode(errors="surrogateescape") if isinstance(value, bytes) else value


def _loads(raw: bytes | str | None) -> Any:
    """JSON another client (or a corruption) stored; None when it is not JSON."""
    if raw is None:
        return None
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):
        return None


def _workflows(raw: dict[bytes | str, bytes | str]) -> list[Workflow]:
    """The hash's workflows; records that are not workflows (another client's) are skipped."""
    found: list[Workflow] = []
    for value in raw.values():
        try:
            found.append(Workflow.from_json(value))
        except ValidationError:
            continue
    return found


def _queue_library(
    pipe: Pipeline,
    keys: KeyLayout,
    library: str,
    upserts: list[Workflow],
    removals: list[str],
    record: LibraryRecord | None,
) -> None:
    """Queue one library's change on a MULTI pipeline."""
    if upserts:
        pipe.hset(keys.workflows, mapping={w.name: w.to_json() for w in upserts})
        pipe.hset(keys.workflow_owners, mapping={w.name: library for w in upserts})
    if removals:
        pipe.hdel(keys.workflows, *removals)
        pipe.hdel(keys.workflow_owners, *removals)
    pipe.delete(keys.library(library))
    if record is not None:
        pipe.hset(keys.library(library), mapping=dict(record.to_mapping().items()))


class _RedisTransaction:
    """Reads WATCH their key first (on the transaction's own connection); writes are
    queued as functions and run inside MULTI/EXEC by `RedisStorage.transaction`."""

    def __init__(self, keys: KeyLayout, pipe: Pipeline) -> None:
        self._keys = keys
        self._pipe = pipe
        self._watched: set[str] = set()
        self.writes: list[Callable[[Pipeline], None]] = []

    async def _watch(self, key: str) -> None:
        if key not in self._watched:
            await self._pipe.watch(key)
            self._watched.add(key)

    async def workflow_owners(self) -> dict[str, str]:
        key = self._keys.workflow_owners
        await self._watch(key)
        raw: dict[bytes | str, bytes | str] = await self._pipe.hgetall(key)
        return {_s(k): _s(v) for k, v in raw.items()}

    async def get_library(self, library: str) -> LibraryRecord | None:
        key = self._keys.library(library)
        await self._watch(key)
        raw: dict[bytes | str, bytes | str] = await self._pipe.hgetall(key)
        if not raw:
            return None
        return LibraryRecord.from_mapping({_s(k): _s(v) for k, v in raw.items()})

    async def get_workflows(self, names: Collection[str]) -> dict[str, Workflow | None]:
        key = self._keys.workflows
        await self._watch(key)
        wanted = sorted(set(names))
        if not wanted:
            return {}
        values: list[bytes | str | None] = await self._pipe.hmget(key, wanted)
        found: dict[str, Workflow | None] = {}
        for name, raw in zip(wanted, values, strict=True):
            if raw is None:
                continue
            try:
                found[name] = Workflow.from_json(raw)
            except ValidationError:
                found[name] = None  # another client's record: it exists, but is not ours
        return found

    async def list_tools(self) -> dict[str, str]:
        key = self._keys.tools
        await self._watch(key)
        raw: dict[bytes | str, bytes | str] = await self._pipe.hgetall(key)
        return {_s(k): _s(v) for k, v in sorted(raw.items())}

    async def list_deps(self) -> list[str]:
        key = self._keys.deps
        await self._watch(key)
        raw: set[bytes | str] = await self._pipe.smembers(key)
        return sorted(_s(v) for v in raw)

    def apply_library(
        self,
        library: str,
        upserts: list[Workflow],
        removals: list[str],
        record: LibraryRecord | None,
    ) -> None:
        keys, ups, rems = self._keys, list(upserts), list(removals)
        self.writes.append(lambda pipe: _queue_library(pipe, keys, library, ups, rems, record))

    def update_tools(self, save: Mapping[str, str], delete: Collection[str]) -> None:
        key, mapping, names = self._keys.tools, dict(save), sorted(delete)

        def queue(pipe: Pipeline) -> None:
            if mapping:
                pipe.hset(key, mapping=mapping)  # type: ignore[arg-type]
            if names:
                pipe.hdel(key, *names)

        self.writes.append(queue)

    def update_deps(self, add: Collection[str], remove: Collection[str]) -> None:
        key, added, removed = self._keys.deps, sorted(add), sorted(remove)

        def queue(pipe: Pipeline) -> None:
            if added:
                pipe.sadd(key, *added)
            if removed:
                pipe.srem(key, *removed)

        self.writes.append(queue)


class RedisStorage:
    """Storage in one Redis namespace: `prefix` plus an optional `workspace_id`."""

    def __init__(
        self,
        url: str | None = None,
        *,
        redis: aioredis.Redis | None = None,
        prefix: str = "codemode",
        workspace_id: str | None = None,
        socket_timeout: float = 10.0,
    ) -> None:
        self.keys = KeyLayout(prefix=prefix, workspace_id=workspace_id)
        self.prefix = prefix
        self.workspace_id = workspace_id
        if redis is None:
            if not url:
                raise ValidationError("RedisStorage needs url= or redis=")
            scheme = urlsplit(url).scheme
            if scheme not in ("redis", "rediss", "unix"):
                raise ValidationError(
                    f"invalid Redis URL scheme {scheme!r}: use redis://, rediss:// or unix://"
                )
            redis = aioredis.Redis.from_url(
                url,
                socket_timeout=socket_timeout,
                socket_connect_timeout=socket_timeout,
                health_check_interval=30,
            )
            self._owns_client = True
        else:
            self._owns_client = False
        self._url = redacted_url(url) if url else "redis://(client)"
        self.redis: aioredis.Redis = redis

    @property
    def description(self) -> str:
        ws = self.workspace_id if self.workspace_id is not None else "(unscoped)"
        return f"{self._url} prefix={self.prefix} workspace={ws}"

    async def _call(self, fn: Callable[[], Awaitable[T]]) -> T:
        try:
            return await fn()
        except NoPermissionError as exc:
            raise ForbiddenError(f"Redis refused the operation: {exc}") from None
        except AuthenticationError as exc:
            raise StorageUnavailableError(
                f"Redis authentication failed at {self._url}: {exc}") from None
        except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
            raise StorageUnavailableError(f"Redis unreachable at {self._url}: {exc}") from None
        except ResponseError as exc:
            raise StorageUnavailableError(f"Redis error at {self._url}: {exc}") from None

    async def ping(self) -> None:
        await self._call(self.redis.ping)

    async def close(self) -> None:
        if self._owns_client:
            await self.redis.aclose()

    # ---- workflows -------------------------------------------------------------------

    async def list_workflows(self) -> list[Workflow]:
        raw: dict[bytes | str, bytes | str] = await self._call(
            lambda: self.redis.hgetall(self.keys.workflows)
        )
        return sorted(_workflows(raw), key=lambda w: w.name)

    async def get_workflow(self, name: str) -> Workflow | None:
        validate_workflow_name(name)
        raw = await self._call(
            lambda: self.redis.hget(self.keys.workflows, name)
        )
        return Workflow.from_json(raw) if raw is not None else None

    async def _write_unowned(
        self, name: str, verb: str, queue: Callable[[Pipeline], object]
    ) -> list[Any]:
        """Run `queue`'s writes only while no library owns `name`, checked and written
        in one WATCH/MULTI/EXEC, so a bootstrap claiming the name in between cannot have
        its workflow overwritten (nor an agent's workflow be claimed mid-write)."""
        owners = self.keys.workflow_owners

        async def run() -> list[Any]:
            for _ in range(TRANSACTION_ATTEMPTS):
                async with self.redis.pipeline(transaction=True) as pipe:
                    try:
                        await pipe.watch(owners)
                        owner = await pipe.hget(owners, name)
                        if owner is not None:
                            raise ConflictError(
                                f"cannot {verb} workflow {name!r}: it is managed by "
                                f"WorkflowLibrary {_s(owner)!r} (change it in that "
                                "library's git repository)"
                            )
                        pipe.multi()  # type: ignore[no-untyped-call]
                        queue(pipe)
                        result: list[Any] = await pipe.execute()
                        return result
                    except WatchError:
                        continue
            raise ConflictError(
                f"cannot {verb} workflow {name!r}: workflow owners kept changing "
                f"({TRANSACTION_ATTEMPTS} attempts); nothing was written, try again"
            )

        return await self._call(run)

    async def save_workflow(self, workflow: Workflow) -> None:
        validate_workflow_name(workflow.name)
        await self._write_unowned(
            workflow.name, "overwrite",
            lambda pipe: pipe.hset(self.keys.workflows, workflow.name, workflow.to_json()),
        )

    async def delete_workflow(self, name: str) -> bool:
        validate_workflow_name(name)
        removed = await self._write_unowned(
            name, "delete", lambda pipe: pipe.hdel(self.keys.workflows, name)
        )
        return bool(removed[0])

    async def workflow_owners(self) -> dict[str, str]:
        raw: dict[bytes | str, bytes | str] = await self._call(
            lambda: self.redis.hgetall(self.keys.workflow_owners)
        )
        return {_s(k): _s(v) for k, v in raw.items()}

    async def apply_library(
        self,
        library: str,
        upserts: list[Workflow],
        removals: list[str],
        record: LibraryRecord | None,
    ) -> None:
        """Publish one library's change in a single MULTI/EXEC: readers see all or none.

        `record=None` forgets the library (used when a library is deleted).
        """

        async def run() -> None:
            async with self.redis.pipeline(transaction=True) as pipe:
                _queue_library(pipe, self.keys, library, upserts, removals, record)
                await pipe.execute()

        await self._call(run)

    async def transaction(
        self,
        body: Callable[[StorageTransaction], Awaitable[T]],
        what: str,
        attempts: int = TRANSACTION_ATTEMPTS,
    ) -> T:
        """WATCH what `body` reads, then MULTI/EXEC what it queued; rerun on WatchError.

        redis-py also reports a connection lost while watching as WatchError: the rerun
        then reconnects (or fails with StorageUnavailableError), and since `body`
        decides from fresh reads, publishing twice is harmless.
        """

        async def run() -> T:
            for _ in range(attempts):
                async with self.redis.pipeline(transaction=True) as pipe:
                    txn = _RedisTransaction(self.keys, pipe)
                    try:
                        result = await body(txn)
                        if not txn.writes:
                            return result  # leaving the block UNWATCHes
                        pipe.multi()  # type: ignore[no-untyped-call]
                        for queue in txn.writes:
                            queue(pipe)
                        await pipe.execute()
                    except WatchError:
                        continue
                    return result
            raise ConflictError(
                f"{what}: another writer changed the target while this update was being "
                f"decided ({attempts} attempts); nothing was written, try again"
            )

        return await self._call(run)

    async def get_library(self, library: str) -> LibraryRecord | None:
        raw: dict[bytes | str, bytes | str] = await self._call(
            lambda: self.redis.hgetall(self.keys.library(library))
        )
        if not raw:
            return None
        return LibraryRecord.from_mapping({_s(k): _s(v) for k, v in raw.items()})

    # ---- artifacts -------------------------------------------------------------------

    async def save_artifact(self, info: ArtifactInfo, data: bytes) -> None:
        validate_artifact_name(info.name)

        async def run() -> None:
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.set(self.keys.artifact(info.name), data)
                pipe.hset(self.keys.artifact_index, info.name, json.dumps(info.index_entry()))
                await pipe.execute()

        await self._call(run)

    async def load_artifact(self, name: str) -> tuple[ArtifactInfo, bytes] | None:
        validate_artifact_name(name)

        async def run() -> tuple[Any, Any]:
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.get(self.keys.artifact(name))
                pipe.hget(self.keys.artifact_index, name)
                data, entry = await pipe.execute()
                return data, entry

        data, entry = await self._call(run)
        if data is None:
            return None
        info = ArtifactInfo.from_index_entry(name, _loads(entry))
        return info, bytes(data)

    async def get_artifact(self, name: str) -> ArtifactInfo | None:
        validate_artifact_name(name)
        entry = await self._call(
            lambda: self.redis.hget(self.keys.artifact_index, name)
        )
        return ArtifactInfo.from_index_entry(name, _loads(entry)) if entry else None

    async def list_artifacts(self) -> list[ArtifactInfo]:
        raw: dict[bytes | str, bytes | str] = await self._call(
            lambda: self.redis.hgetall(self.keys.artifact_index)
        )
        infos = [ArtifactInfo.from_index_entry(_s(k), _loads(v)) for k, v in raw.items()]
        return sorted(infos, key=lambda i: i.name)

    async def delete_artifact(self, name: str) -> bool:
        validate_artifact_name(name)

        async def run() -> bool:
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.delete(self.keys.artifact(name))
                pipe.hdel(self.keys.artifact_index, name)
                deleted, unindexed = await pipe.execute()
                return bool(deleted or unindexed)

        return await self._call(run)

    # ---- deps and tools ----------------------------------------------------------------

    async def list_deps(self) -> list[str]:
        raw: set[bytes | str] = await self._call(
            lambda: self.redis.smembers(self.keys.deps)
        )
        return sorted(_s(v) for v in raw)

    async def add_dep(self, spec: str) -> bool:
        added = await self._call(lambda: self.redis.sadd(self.keys.deps, spec))
        return bool(added)

    async def remove_dep(self, spec: str) -> bool:
        removed = await self._call(lambda: self.redis.srem(self.keys.deps, spec))
        return bool(removed)

    async def list_tools(self) -> dict[str, str]:
        raw: dict[bytes | str, bytes | str] = await self._call(
            lambda: self.redis.hgetall(self.keys.tools)
        )
        return {_s(k): _s(v) for k, v in sorted(raw.items())}

    async def save_tool(self, name: str, yaml_text: str) -> None:
        await self._call(lambda: self.redis.hset(self.keys.tools, name, yaml_text))

    async def delete_tool(self, name: str) -> bool:
        removed = await self._call(lambda: self.redis.hdel(self.keys.tools, name))
        return bool(removed)
