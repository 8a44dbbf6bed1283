"""Redis backend (redis-py asyncio) with py-code-mode's key layout."""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Awaitable, Callable, Collection, Mapping
from typing import Any, TypeVar
from urllib.parse import urlsplit

import redis.asyncio as aioredis
from redis import Redis as SyncRedis
from redis.asyncio.client import Pipeline
from redis.asyncio.retry import Retry
from redis.backoff import EqualJitterBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.exceptions import WatchError

from codemode_session.errors import (
    ConflictError,
    ForbiddenError,
    ValidationError,
)
from codemode_session.names import validate_artifact_name, validate_workflow_name
from codemode_session.storage.artifact_redis import (
    CONNECTION_RETRIES,
    SyncArtifacts,
    SyncArtifactsCache,
    conflict,
    exec_result,
    load_reads,
    loaded,
    packed,
    save_reads,
    save_size,
    save_watch,
    save_writes,
    storage_error,
)
from codemode_session.storage.artifact_redis import counter as _counter
from codemode_session.storage.artifact_redis import loads as _loads
from codemode_session.storage.base import (
    TRANSACTION_ATTEMPTS,
    ArtifactInfo,
    LibraryRecord,
    StorageTransaction,
)
from codemode_session.storage.keys import KeyLayout
from codemode_session.storage.parse_memo import ParseMemo
from codemode_session.storage.quota import Quota
from codemode_session.storage.sync_client import async_client_from_sync
from codemode_session.tools import stored_tool_value
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


# The skills-era hash (KeyLayout.skills) gets a copy of every workflow written here, marked
# as ours: py-code-mode's skills-era readers take it like any skill (they ignore the
# mark). Reads take a workflow from the workflows hash, else from the skills hash when a
# skills-era writer put it there (no mark); a marked copy whose original is gone (deleted
# by a client that knows only the workflows hash) is not brought back.
MIRROR_MARK = "codemode_mirror"


def _skills_record(workflow: Workflow) -> str:
    return json.dumps({**workflow.to_dict(), MIRROR_MARK: True}, sort_keys=True)


def _is_mirror(raw: bytes | str) -> bool:
    data = _loads(raw)
    return isinstance(data, dict) and data.get(MIRROR_MARK) is True


def _workflow_or_none(raw: bytes | str) -> Workflow | None:
    try:
        return Workflow.from_json(raw)
    except ValidationError:
        return None  # another client's record: skipped


# Parsed once per stored value (storage/parse_memo.py): listing and searching read every
# workflow of the workspace, most of them unchanged since the last time.
_mirror = ParseMemo(_is_mirror)
_workflow = ParseMemo(_workflow_or_none)


def _skills_era(raw: bytes | str | None) -> bytes | str | None:
    """A skills-hash record a skills-era writer put there; None for our marked copy."""
    return None if raw is None or _mirror(raw) else raw


def _workflows(
    raw: dict[bytes | str, bytes | str], skills: dict[bytes | str, bytes | str] | None = None
) -> list[Workflow]:
    """The hash's workflows, plus those only a skills-era writer put in the skills hash;
    records that are not workflows (another client's) are skipped."""
    merged: dict[str, bytes | str] = {}
    for name, value in (skills or {}).items():
        if (theirs := _skills_era(value)) is not None:
            merged[_s(name)] = theirs
    merged.update({_s(k): v for k, v in raw.items()})
    return [w for w in map(_workflow, merged.values()) if w is not None]


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
        pipe.hset(keys.skills, mapping={w.name: _skills_record(w) for w in upserts})
        pipe.hset(keys.workflow_owners, mapping={w.name: library for w in upserts})
    if removals:
        pipe.hdel(keys.workflows, *removals)
        pipe.hdel(keys.skills, *removals)
        pipe.hdel(keys.workflow_owners, *removals)
    pipe.delete(keys.library(library))
    if record is not None:
        pipe.hset(keys.library(library), mapping=dict(record.to_mapping().items()))


async def _exchange(conn: Any, commands: list[tuple[Any, ...]]) -> list[Any]:
    """Send `commands` at once on a raw connection and read every reply, in order (an
    error reply is raised, leaving the connection out of step: the caller drops it).

    One deadline (the connection's socket timeout) covers the whole exchange instead of
    one per reply: the replies arrive together, and a timer per reply was a fifth of
    the cost of a save."""
    await conn.send_packed_command(packed(commands))
    try:
        async with asyncio.timeout(conn.socket_timeout):
            return [await conn.read_response(timeout=math.inf) for _ in commands]
    except TimeoutError:
        raise RedisTimeoutError("Timeout reading the replies from Redis") from None


async def _exec(conn: Any, commands: list[tuple[Any, ...]]) -> list[Any] | None:
    """MULTI, `commands`, EXEC in one round trip on a raw connection: EXEC's replies,
    or None when a WATCHed key changed; a command's error reply is raised."""
    return exec_result(await _exchange(conn, [("MULTI",), *commands, ("EXEC",)]))


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
        key, skills = self._keys.workflows, self._keys.skills
        await self._watch(key)
        await self._watch(skills)
        wanted = sorted(set(names))
        if not wanted:
            return {}
        values: list[bytes | str | None] = await self._pipe.hmget(key, wanted)
        older: list[bytes | str | None] = await self._pipe.hmget(skills, wanted)
        found: dict[str, Workflow | None] = {}
        for name, current, skill in zip(wanted, values, older, strict=True):
            raw = current if current is not None else _skills_era(skill)
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
        redis: aioredis.Redis | SyncRedis | None = None,
        prefix: str = "codemode",
        workspace_id: str | None = None,
        socket_timeout: float = 10.0,
        quota: Quota | None = None,
    ) -> None:
        self.keys = KeyLayout(prefix=prefix, workspace_id=workspace_id)
        self.quota = quota or Quota()
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
            # A pooled connection Redis dropped (a restart, a failover, an idle cut by a
            # proxy) fails its next command; that command is sent again on a fresh
            # connection, a few times with short backoff, before anyone sees an error.
            # Safe: what is re-sent is idempotent or WATCHed; redis-py turns a lost
            # connection under WATCH into WatchError, and our transactions then rerun
            # from fresh reads instead of replaying their writes.
            redis = aioredis.Redis.from_url(
                url,
                socket_timeout=socket_timeout,
                socket_connect_timeout=socket_timeout,
                retry=Retry(EqualJitterBackoff(cap=1.0, base=0.05), 3),
                retry_on_error=[RedisConnectionError, RedisTimeoutError],
                # Idle connections are PINGed (and replaced if dead) before reuse.
                health_check_interval=10,
                # Artifacts are up to tens of MiB: read replies in large pieces, not 64 KiB.
                socket_read_size=1 << 20,
            )
            self._owns_client = True
        elif isinstance(redis, SyncRedis):  # py-code-mode's documented form: made asyncio
            redis = async_client_from_sync(redis, socket_timeout)
            self._owns_client = True
        else:
            self._owns_client = False
        self._url = redacted_url(url) if url else "redis://(client)"
        self.redis: aioredis.Redis = redis
        # The blocking twin of the artifact hot path, for the workers' storage threads;
        # only for a client built here from a URL (its credentials are ours to reuse).
        self._sync_artifacts = SyncArtifactsCache(
            lambda: (
                SyncArtifacts.from_url(url, self.keys, self.quota, self._url, socket_timeout)
                if url and self._owns_client
                else None
            )
        )

    @property
    def description(self) -> str:
        ws = self.workspace_id if self.workspace_id is not None else "(unscoped)"
        return f"{self._url} prefix={self.prefix} workspace={ws}"

    async def _call(self, fn: Callable[[], Awaitable[T]]) -> T:
        try:
            return await fn()
        except Exception as exc:
            mapped = storage_error(exc, self._url)
            if mapped is None:
                raise
            raise mapped from None

    async def ping(self) -> None:
        await self._call(self.redis.ping)

    async def close(self) -> None:
        self._sync_artifacts.close()
        if self._owns_client:
            await self.redis.aclose()

    # ---- workflows -------------------------------------------------------------------

    # Workflows: py-code-mode's workflows-era hash, and its skills-era one as MIRROR_MARK
    # above says; writes go to both, deletes from both.

    async def list_workflows(self) -> list[Workflow]:
        async def both() -> tuple[dict[bytes | str, bytes | str], dict[bytes | str, bytes | str]]:
            async with self.redis.pipeline(transaction=False) as reads:
                reads.hgetall(self.keys.workflows)
                reads.hgetall(self.keys.skills)
                current, older = await reads.execute()
            return current, older

        current, older = await self._call(both)
        return sorted(_workflows(current, older), key=lambda w: w.name)

    async def get_workflow(self, name: str) -> Workflow | None:
        validate_workflow_name(name)

        async def either() -> bytes | str | None:
            async with self.redis.pipeline(transaction=False) as reads:
                reads.hget(self.keys.workflows, name)
                reads.hget(self.keys.skills, name)
                current, older = await reads.execute()
            return current if current is not None else _skills_era(older)

        raw = await self._call(either)
        return Workflow.from_json(raw) if raw is not None else None

    async def _usage(self, pipe: Pipeline) -> int | None:
        """The usage counter on a watching pipeline; None when it was never started."""
        return _counter(await pipe.hget(self.keys.usage, "bytes"))

    async def _measure_usage(self) -> int:
        """Count what the usage counter covers (artifact data and index entries, agent
        workflow sources), for a workspace whose counter was never started (data written
        by other clients)."""
        names = [_s(n) for n in await self.redis.hkeys(self.keys.artifact_index)]
        owned = {_s(n) for n in await self.redis.hkeys(self.keys.workflow_owners)}
        agent = [_s(n) for n in await self.redis.hkeys(self.keys.workflows) if _s(n) not in owned]
        async with self.redis.pipeline(transaction=False) as reads:
            for name in names:
                reads.strlen(self.keys.artifact(name))
                reads.hstrlen(self.keys.artifact_index, name)
            for name in agent:
                reads.hstrlen(self.keys.workflows, name)
            sizes = await reads.execute()
        return sum(int(size) for size in sizes)

    def _count(self, pipe: Pipeline, used: int | None, delta: int) -> None:
        """Queue the usage update that goes with a write (inside its MULTI)."""
        if used is None:
            return  # started, with the true total, by the next write that grows usage
        pipe.hincrby(self.keys.usage, "bytes", delta)

    async def _watched(
        self,
        keys: list[str],
        verb: str,
        plan: Callable[[Pipeline], Awaitable[Callable[[Pipeline], None]]],
    ) -> list[Any]:
        """WATCH `keys`, let `plan` read and decide (it may raise), then run the writes it
        returns in MULTI/EXEC; rerun on a concurrent change."""

        async def run() -> list[Any]:
            for _ in range(TRANSACTION_ATTEMPTS):
                async with self.redis.pipeline(transaction=True) as pipe:
                    try:
                        await pipe.watch(*keys)
                        queue = await plan(pipe)
                        pipe.multi()  # type: ignore[no-untyped-call]
                        queue(pipe)
                        result: list[Any] = await pipe.execute()
                        return result
                    except WatchError:
                        continue
            raise conflict(verb)

        return await self._call(run)

    async def _on_connection(
        self, attempt: Callable[[Any], Awaitable[list[Any] | None]], verb: str
    ) -> list[Any]:
        """Run `attempt` on one pooled connection; None from it means "decide again".

        A connection lost mid-exchange (even with EXEC's answer in flight) is dropped
        and the attempt reruns on a fresh one from fresh reads, so an EXEC that did
        land is never counted twice; anything else drops the connection too (its
        replies are out of step) and propagates.
        """

        async def run() -> list[Any]:
            pool = self.redis.connection_pool
            lost = 0
            for _ in range(TRANSACTION_ATTEMPTS):
                conn: Any = await pool.get_connection()  # type: ignore[no-untyped-call]
                try:
                    result = await attempt(conn)
                except (RedisConnectionError, RedisTimeoutError, OSError):
                    await conn.disconnect()
                    lost += 1
                    if lost > CONNECTION_RETRIES:
                        raise
                    await asyncio.sleep(0.05 * lost)
                    continue
                except BaseException:
                    await conn.disconnect()
                    raise
                finally:
                    await pool.release(conn)
                if result is not None:
                    return result
            raise conflict(verb)

        return await self._call(run)

    async def _transaction(self, commands: list[tuple[Any, ...]], verb: str) -> list[Any]:
        """`commands` in one MULTI/EXEC, one round trip on a raw connection: the hot
        reads (artifact load) skip redis-py's pipeline objects, which cost more than
        the round trip itself."""

        async def attempt(conn: Any) -> list[Any] | None:
            return await _exec(conn, commands)

        return await self._on_connection(attempt, verb)

    async def _watched_reads(
        self,
        keys: list[str],
        reads: list[tuple[Any, ...]],
        verb: str,
        plan: Callable[[list[Any]], Awaitable[Callable[[Pipeline], None]]],
    ) -> list[Any]:
        """Like `_watched`, in two round trips instead of one per command: WATCH and
        `reads` go together, `plan` decides from their replies, then MULTI/writes/EXEC go
        together. The hot path of artifact saves (quota checks cost no extra latency)."""

        async def attempt(conn: Any) -> list[Any] | None:
            first = [("WATCH", *keys), *reads]
            replies = await _exchange(conn, first)
            try:
                queue = await plan(replies[1:])
            except BaseException:
                await conn.send_command("UNWATCH")
                await conn.read_response()
                raise
            collect = self.redis.pipeline(transaction=False)
            queue(collect)
            return await _exec(conn, [args for args, _ in collect.command_stack])

        return await self._on_connection(attempt, verb)

    async def _check_unowned(self, pipe: Pipeline, name: str, verb: str) -> None:
        owner = await pipe.hget(self.keys.workflow_owners, name)
        if owner is not None:
            raise ConflictError(
                f"cannot {verb} workflow {name!r}: it is managed by "
                f"WorkflowLibrary {_s(owner)!r} (change it in that "
                "library's git repository)"
            )

    async def save_workflow(self, workflow: Workflow) -> None:
        """Written only while no library owns the name (checked in the same WATCH/MULTI,
        so a bootstrap claiming it in between is never overwritten), within the quota."""
        validate_workflow_name(workflow.name)
        encoded = workflow.to_json()
        mirrored = _skills_record(workflow)
        keys = self.keys

        async def plan(pipe: Pipeline) -> Callable[[Pipeline], None]:
            await self._check_unowned(pipe, workflow.name, "overwrite")
            old = int(await pipe.hstrlen(keys.workflows, workflow.name))
            count = int(await pipe.hlen(keys.workflows)) + (0 if old else 1)
            self.quota.check_workflows(count, grows=not old)
            used = await self._usage(pipe)
            delta = len(encoded.encode()) - old
            if used is None and delta > 0:
                used = await self._measure_usage()
                self.quota.check_bytes(used + delta, grows=True)
                total = used + delta

                def start(p: Pipeline) -> None:
                    p.hset(keys.workflows, workflow.name, encoded)
                    p.hset(keys.skills, workflow.name, mirrored)
                    p.hset(keys.usage, "bytes", str(total))

                return start
            self.quota.check_bytes((used or 0) + delta, grows=delta > 0)

            def write(p: Pipeline) -> None:
                p.hset(keys.workflows, workflow.name, encoded)
                p.hset(keys.skills, workflow.name, mirrored)
                self._count(p, used, delta)

            return write

        await self._watched(
            [keys.workflow_owners, keys.workflows, keys.skills, keys.usage],
            f"save workflow {workflow.name!r}",
            plan,
        )

    async def delete_workflow(self, name: str) -> bool:
        validate_workflow_name(name)
        keys = self.keys

        async def plan(pipe: Pipeline) -> Callable[[Pipeline], None]:
            await self._check_unowned(pipe, name, "delete")
            old = int(await pipe.hstrlen(keys.workflows, name))
            used = await self._usage(pipe)

            def write(p: Pipeline) -> None:
                p.hdel(keys.workflows, name)
                p.hdel(keys.skills, name)
                self._count(p, used, -min(old, used or 0))

            return write

        removed = await self._watched(
            [keys.workflow_owners, keys.workflows, keys.skills, keys.usage],
            f"delete workflow {name!r}",
            plan,
        )
        return bool(removed[0]) or bool(removed[1])

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

    def sync_artifacts(self) -> SyncArtifacts | None:
        """The blocking client of this storage's artifact hot path (see artifact_redis),
        made on first use; None when this storage was given a client instead of a URL."""
        return self._sync_artifacts.get()

    async def save_artifact(self, info: ArtifactInfo, data: bytes) -> None:
        validate_artifact_name(info.name)
        keys = self.keys
        entry, size = save_size(info, data)
        self.quota.check_artifact(info.name, size)

        async def plan(reads: list[Any]) -> Callable[[Pipeline], None]:
            writes = save_writes(keys, info.name, data, entry, size, reads, self.quota)
            if writes is None:  # the counter never started: measure, then start it
                measured = await self._measure_usage()
                writes = save_writes(
                    keys, info.name, data, entry, size, reads, self.quota, measured
                )
                assert writes is not None

            def write(p: Pipeline) -> None:
                for command in writes:
                    p.execute_command(*command)

            return write

        await self._watched_reads(
            save_watch(keys, info.name),
            save_reads(keys, info.name),
            f"save artifact {info.name!r}",
            plan,
        )

    async def _stored_artifact_bytes(self, pipe: Pipeline, name: str) -> int:
        """What one artifact adds to usage: its data and its index entry."""
        data = int(await pipe.strlen(self.keys.artifact(name)))
        return data + int(await pipe.hstrlen(self.keys.artifact_index, name))

    async def load_artifact(self, name: str) -> tuple[ArtifactInfo, bytes] | None:
        validate_artifact_name(name)
        replies = await self._transaction(load_reads(self.keys, name), f"load artifact {name!r}")
        return loaded(name, replies)

    async def get_artifact(self, name: str) -> ArtifactInfo | None:
        validate_artifact_name(name)
        entry = await self._call(lambda: self.redis.hget(self.keys.artifact_index, name))
        return ArtifactInfo.from_index_entry(name, _loads(entry)) if entry else None

    async def list_artifacts(self) -> list[ArtifactInfo]:
        raw: dict[bytes | str, bytes | str] = await self._call(
            lambda: self.redis.hgetall(self.keys.artifact_index)
        )
        infos = [ArtifactInfo.from_index_entry(_s(k), _loads(v)) for k, v in raw.items()]
        return sorted(infos, key=lambda i: i.name)

    async def delete_artifact(self, name: str) -> bool:
        validate_artifact_name(name)
        keys = self.keys
        key = keys.artifact(name)

        async def plan(pipe: Pipeline) -> Callable[[Pipeline], None]:
            old = await self._stored_artifact_bytes(pipe, name)
            used = await self._usage(pipe)

            def write(p: Pipeline) -> None:
                p.delete(key)
                p.hdel(keys.artifact_index, name)
                self._count(p, used, -min(old, used or 0))

            return write

        deleted, unindexed, *_ = await self._watched(
            [key, keys.artifact_index, keys.usage], f"delete artifact {name!r}", plan
        )
        return bool(deleted or unindexed)

    async def usage_bytes(self) -> int:
        """What the quota compares with: the counter, or a measurement if it never ran."""
        raw = await self._call(lambda: self.redis.hget(self.keys.usage, "bytes"))
        if raw is not None:
            try:
                return max(0, int(raw))
            except ValueError:
                pass
        return await self._call(self._measure_usage)

    # ---- deps and tools ----------------------------------------------------------------

    async def list_deps(self) -> list[str]:
        """The shared specs and this workspace's own, together."""
        keys = sorted({self.keys.deps, self.keys.workspace_deps})
        raw: set[bytes | str] = await self._call(lambda: self.redis.sunion(keys))
        return sorted(_s(v) for v in raw)

    async def add_dep(self, spec: str) -> bool:
        """Added to this workspace's own set (never the shared one), within the quota."""
        keys = self.keys

        async def plan(pipe: Pipeline) -> Callable[[Pipeline], None]:
            if await pipe.sismember(keys.deps, spec) or await pipe.sismember(
                keys.workspace_deps, spec
            ):
                return lambda p: None
            self.quota.check_deps(int(await pipe.scard(keys.workspace_deps)) + 1)

            def write(p: Pipeline) -> None:
                p.sadd(keys.workspace_deps, spec)

            return write

        result = await self._watched(
            [keys.deps, keys.workspace_deps], f"add package {spec!r}", plan
        )
        return bool(result and result[0])

    async def remove_dep(self, spec: str) -> bool:
        """Only this workspace's own specs can go; a shared one belongs to the store."""
        keys = self.keys
        removed = await self._call(lambda: self.redis.srem(keys.workspace_deps, spec))
        if removed:
            return True
        shared: int = await self._call(lambda: self.redis.sismember(keys.deps, spec))
        if keys.workspace_deps != keys.deps and shared:
            raise ForbiddenError(
                f"package {spec!r} is shared by every workspace of prefix {self.prefix!r}; "
                "it can only be removed from the store (the library's deps), not by a session"
            )
        return False

    async def list_tools(self) -> dict[str, str]:
        raw: dict[bytes | str, bytes | str] = await self._call(
            lambda: self.redis.hgetall(self.keys.tools)
        )
        return {_s(k): _s(v) for k, v in sorted(raw.items())}

    async def save_tool(self, name: str, yaml_text: str) -> None:
        value = stored_tool_value(yaml_text)  # JSON, as py-code-mode stores tools
        await self._call(lambda: self.redis.hset(self.keys.tools, name, value))

    async def delete_tool(self, name: str) -> bool:
        removed = await self._call(lambda: self.redis.hdel(self.keys.tools, name))
        return bool(removed)
