"""Session history in Agentix's layout (issue 13, item 1), in Redis or in files.

Under the workspace's namespace P (so its Redis ACL, `P:*`, covers every key):

- `P:session:{id}`: hash of `session_id`, `agent_id`, `created_at`, `updated_at` (ISO 8601
  strings) and `metadata` (a JSON object as a string);
- `P:messages:{id}`: list of JSON messages `{"role", "content", "timestamp"}`, oldest first,
  at most `max_messages` (the newest are kept);
- `P:index:{agent_id}`: sorted set of the agent's session ids scored by `updated_at` as a
  unix timestamp;
- (ours) `P:messages:{id}:count`: how many messages were ever appended, so a reader can
  tell how many the bound dropped (count minus the list's length).

Only the session server writes history (never a worker: agent code must not be able to
forge it). FileStorage keeps the same records as JSON files under
`{workspace base}/history/` (`sessions/{id}/{session,messages,count}.json`,
`index/{agent_id}.json`), each written atomically.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import fcntl
import hashlib
import json
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from codemode_session.errors import StorageUnavailableError, ValidationError
from codemode_session.storage.artifact_redis import counter as _counter
from codemode_session.storage.base import Storage
from codemode_session.storage.file_storage import FileStorage, _flock, atomic_write
from codemode_session.storage.keys import KeyLayout
from codemode_session.storage.redis_storage import RedisStorage

AGENT_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,127}$")
AGENT_ID_HELP = "1-128 of letters, digits, '_', '.', '@', '-', starting with a letter or digit"
# Ids a history is stored under: session ids (client-chosen or derived, see history_id)
# and fork ids. No ':' (it would read as another key of the layout) and no '/'.
HISTORY_ID_RE = re.compile(r"^[A-Za-z0-9_.-]{1,160}$")
HISTORY_ID_HELP = "1-160 of letters, digits, '_', '.', '-'"
DEFAULT_AGENT_ID = "default"


def validate_agent_id(agent_id: str) -> str:
    if not isinstance(agent_id, str) or not AGENT_ID_RE.match(agent_id):
        raise ValidationError(f"invalid agent id {agent_id!r}: {AGENT_ID_HELP}")
    return agent_id


def validate_history_id(history: str) -> str:
    if not HISTORY_ID_RE.match(history) or history in (".", ".."):
        raise ValidationError(f"invalid history session id {history!r}: {HISTORY_ID_HELP}")
    return history


def history_id(session_id: str) -> str:
    """The id a server session's history is kept under.

    An id the server issued (`s.…`) is the capability to run code in that session and is
    never listed, so its history goes under a digest of it (`h.…`): listing an agent's
    sessions reveals no live session. A client-chosen id is bound to its creator's token
    anyway, so it is kept as is (py-code-mode's and Agentix's clients know it)."""
    if session_id.startswith("s."):
        digest = hashlib.sha256(session_id.encode()).digest()
        return "h." + base64.urlsafe_b64encode(digest).decode()[:32]
    return session_id


def iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat()


def _unix(value: str) -> float | None:
    try:
        return datetime.fromisoformat(value).timestamp()
    except (TypeError, ValueError):
        return None


@dataclass(frozen=True)
class HistoryLimits:
    max_messages: int = 1000  # per session; two per run
    max_output_bytes: int = 64 * 1024  # per stored field: code, value, stdout, stderr, error


def _cut(text: str, limit: int) -> tuple[str, bool]:
    raw = text.encode(errors="surrogatepass")
    if len(raw) <= limit:
        return text, False
    head = raw[:limit].decode(errors="ignore")
    return f"{head}\n... [truncated: {len(raw) - limit} more bytes]", True


def run_messages(
    code: str, reply: dict[str, Any], started: float, finished: float, limits: HistoryLimits
) -> list[dict[str, Any]]:
    """The two messages of one run: its code (role `user`) and its result (`assistant`).

    Both contents are strings, as chat readers expect: the assistant's is the JSON of
    `{value, stdout, stderr, error, error_type, execution_time_ms, worker_restarted,
    truncated}`, `truncated` naming the fields cut to `max_output_bytes`."""
    limit = limits.max_output_bytes
    code_text, _ = _cut(code, limit)
    truncated: list[str] = []
    result: dict[str, Any] = {}
    value = reply.get("value")
    try:
        value_json = json.dumps(value, ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError):
        value, value_json = repr(value), ""
    if len(value_json.encode(errors="surrogatepass")) > limit:
        value, _ = _cut(value_json, limit)
        truncated.append("value")
    result["value"] = value
    for name in ("stdout", "stderr", "error"):
        text = reply.get(name)
        if isinstance(text, str):
            text, cut = _cut(text, limit)
            if cut:
                truncated.append(name)
        result[name] = text
    result["error_type"] = reply.get("error_type")
    result["execution_time_ms"] = reply.get("execution_time_ms")
    result["worker_restarted"] = bool(reply.get("worker_restarted"))
    result["truncated"] = truncated
    content = json.dumps(result, ensure_ascii=False, allow_nan=False)
    return [
        {"role": "user", "content": code_text, "timestamp": iso(started)},
        {"role": "assistant", "content": content, "timestamp": iso(finished)},
    ]


def _record(raw: dict[str, str]) -> dict[str, Any]:
    """A session hash for the API: its string fields, `metadata` parsed."""
    try:
        metadata = json.loads(raw.get("metadata", "{}"))
    except ValueError:
        metadata = {}
    return {
        "session_id": raw.get("session_id", ""),
        "agent_id": raw.get("agent_id", ""),
        "created_at": raw.get("created_at", ""),
        "updated_at": raw.get("updated_at", ""),
        "metadata": metadata if isinstance(metadata, dict) else {},
    }


def _message(raw: str | bytes) -> dict[str, Any]:
    try:
        value = json.loads(raw)
    except ValueError:
        value = None
    return value if isinstance(value, dict) else {"role": "", "content": "", "timestamp": ""}


@dataclass
class Page:
    """A page of a session's messages: `offset` into the kept ones; `total` kept, `count`
    ever appended (`count - total` were dropped by the bound)."""

    session: dict[str, Any]
    messages: list[dict[str, Any]]
    total: int
    count: int


class HistoryStore(Protocol):
    async def record_run(
        self,
        session_id: str,
        agent_id: str,
        metadata: dict[str, Any],
        messages: list[dict[str, Any]],
        now: float,
    ) -> int:
        """Record one run; the number of messages the session's history keeps now."""
        ...

    async def list_sessions(
        self, agent_id: str, offset: int, limit: int
    ) -> tuple[list[dict[str, Any]], int]: ...

    async def get(self, session_id: str, offset: int, limit: int) -> Page | None: ...

    async def delete(self, session_id: str) -> bool: ...

    async def fork(self, session_id: str, new_id: str, now: float) -> dict[str, Any] | None: ...


def _s(value: bytes | str) -> str:
    return value.decode(errors="surrogateescape") if isinstance(value, bytes) else value


class RedisHistory:
    """History on the workspace storage's own Redis client (and so its credentials).

    Stored messages count toward the workspace's usage (`P:usage`, the storage quota):
    each write adds the bytes of the messages it appends and gives back those of the
    messages the bound drops, in the same WATCH/MULTI; `P:messages:{id}:bytes` (ours)
    keeps a session's total so a delete or a fork costs one read."""

    def __init__(self, storage: RedisStorage, limits: HistoryLimits) -> None:
        self.storage = storage
        self.redis: aioredis.Redis = storage.redis
        self.keys: KeyLayout = storage.keys
        self.limits = limits

    def count_key(self, session_id: str) -> str:
        return f"{self.keys.history_messages(session_id)}:count"

    def bytes_key(self, session_id: str) -> str:
        return f"{self.keys.history_messages(session_id)}:bytes"

    async def _used(self, pipe: Any, delta: int) -> tuple[int | None, int | None]:
        """(the usage counter, or None if never started; the total to start it at)."""
        used = await self.storage._usage(pipe)
        if used is None and delta > 0:
            start = await self.storage._measure_usage() + delta
            self.storage.quota.check_bytes(start, grows=True)
            return None, start
        self.storage.quota.check_bytes((used or 0) + delta, grows=delta > 0)
        return used, None

    def _count(self, pipe: Any, used: int | None, start: int | None, delta: int) -> None:
        if start is not None:
            pipe.hset(self.keys.usage, "bytes", str(start))
        elif used is not None:
            pipe.hincrby(self.keys.usage, "bytes", max(delta, -used))

    async def record_run(
        self,
        session_id: str,
        agent_id: str,
        metadata: dict[str, Any],
        messages: list[dict[str, Any]],
        now: float,
    ) -> int:
        """One WATCH/MULTI: the run's messages, the bound (the oldest dropped, their bytes
        given back), the session, the index, the usage; QuotaExceededError when the
        messages would not fit in the workspace's storage limit."""
        keys, stamp = self.keys, iso(now)
        session_key, list_key = keys.history_session(session_id), keys.history_messages(session_id)
        encoded = [json.dumps(m, ensure_ascii=False) for m in messages]
        added = sum(len(e.encode(errors="surrogatepass")) for e in encoded)

        async def plan(reads: list[Any]) -> Any:
            kept, used_raw, oldest = int(reads[0]), reads[1], reads[2]
            dropping = min(max(0, kept + len(encoded) - self.limits.max_messages), kept)
            dropped = sum(len(m) for m in oldest[:dropping])
            delta = added - dropped
            used = _counter(used_raw)
            start: int | None = None
            if used is None and delta > 0:
                start = await self.storage._measure_usage() + delta
                self.storage.quota.check_bytes(start, grows=True)
            else:
                self.storage.quota.check_bytes((used or 0) + delta, grows=delta > 0)

            def write(p: Any) -> None:
                p.hsetnx(session_key, "created_at", stamp)
                p.hsetnx(session_key, "metadata", json.dumps(metadata))
                p.hset(
                    session_key,
                    mapping={"session_id": session_id, "agent_id": agent_id, "updated_at": stamp},
                )
                p.rpush(list_key, *encoded)
                p.ltrim(list_key, -self.limits.max_messages, -1)
                p.incrby(self.count_key(session_id), len(messages))
                p.incrby(self.bytes_key(session_id), delta)
                p.zadd(keys.history_index(agent_id), {session_id: now})
                self._count(p, used, start, delta)

            return write

        # Two round trips: WATCH with the reads, then MULTI/EXEC (the oldest messages are
        # read in case the bound drops them: at most as many as this run appends).
        written = await self.storage._watched_reads(
            [list_key, keys.usage],
            [
                ("LLEN", list_key),
                ("HGET", keys.usage, "bytes"),
                ("LRANGE", list_key, 0, len(encoded) - 1),
            ],
            f"record history of session {session_id!r}",
            plan,
        )
        return min(int(written[3]), self.limits.max_messages)  # RPUSH's length, then LTRIM

    async def _call(self, coro: Any) -> Any:
        try:
            return await coro
        except RedisError as exc:
            raise StorageUnavailableError(f"Redis failed reading history: {exc}") from None

    async def list_sessions(
        self, agent_id: str, offset: int, limit: int
    ) -> tuple[list[dict[str, Any]], int]:
        index = self.keys.history_index(agent_id)

        async def read() -> tuple[list[dict[str, Any]], int]:
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.zrevrange(index, offset, offset + limit - 1)
                pipe.zcard(index)
                ids, total = await pipe.execute()
            async with self.redis.pipeline(transaction=False) as pipe:
                for raw_id in ids:
                    pipe.hgetall(self.keys.history_session(_s(raw_id)))
                hashes = await pipe.execute()
            found = []
            for raw_id, raw in zip(ids, hashes, strict=True):
                record = _record({_s(k): _s(v) for k, v in raw.items()})
                record["session_id"] = record["session_id"] or _s(raw_id)
                found.append(record)
            return found, int(total)

        result: tuple[list[dict[str, Any]], int] = await self._call(read())
        return result

    async def get(self, session_id: str, offset: int, limit: int) -> Page | None:
        async def read() -> Page | None:
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.hgetall(self.keys.history_session(session_id))
                pipe.lrange(self.keys.history_messages(session_id), offset, offset + limit - 1)
                pipe.llen(self.keys.history_messages(session_id))
                pipe.get(self.count_key(session_id))
                raw, messages, total, count = await pipe.execute()
            if not raw:
                return None
            kept = int(total)
            return Page(
                _record({_s(k): _s(v) for k, v in raw.items()}),
                [_message(m) for m in messages],
                kept,
                max(kept, int(count or 0)),
            )

        page: Page | None = await self._call(read())
        return page

    async def delete(self, session_id: str) -> bool:
        key = self.keys.history_session(session_id)

        async def plan(pipe: Any) -> Any:
            agent = await pipe.hget(key, "agent_id")
            stored = int(await pipe.get(self.bytes_key(session_id)) or 0)
            used = await self.storage._usage(pipe)

            def write(p: Any) -> None:
                p.unlink(
                    key,
                    self.keys.history_messages(session_id),
                    self.count_key(session_id),
                    self.bytes_key(session_id),
                )
                if agent is not None:
                    p.zrem(self.keys.history_index(_s(agent)), session_id)
                self._count(p, used, None, -stored)

            return write

        removed = await self.storage._watched(
            [key, self.bytes_key(session_id), self.keys.usage],
            f"delete history of session {session_id!r}",
            plan,
        )
        return bool(removed[0])

    async def fork(self, session_id: str, new_id: str, now: float) -> dict[str, Any] | None:
        """Copy the session hash and all messages to `new_id` (COPY is denied by the
        workspace ACL, so read, then write in one MULTI), indexed under the same agent."""

        async def run() -> dict[str, Any] | None:
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.hgetall(self.keys.history_session(session_id))
                pipe.lrange(self.keys.history_messages(session_id), 0, -1)
                pipe.get(self.count_key(session_id))
                raw, messages, count = await pipe.execute()
            if not raw:
                return None
            record = {_s(k): _s(v) for k, v in raw.items()}
            parsed = _record(record)
            metadata = {**parsed["metadata"], "forked_from": session_id}
            stamp = iso(now)
            fields: dict[str, str] = {
                **record,
                "session_id": new_id,
                "agent_id": parsed["agent_id"] or DEFAULT_AGENT_ID,
                "created_at": stamp,
                "updated_at": stamp,
                "metadata": json.dumps(metadata),
            }
            size = sum(len(m) for m in messages)

            async def plan(pipe: Any) -> Any:
                replaced = int(await pipe.get(self.bytes_key(new_id)) or 0)
                used, start = await self._used(pipe, size - replaced)

                def write(p: Any) -> None:
                    p.hset(self.keys.history_session(new_id), mapping=fields)
                    p.delete(self.keys.history_messages(new_id))
                    if messages:
                        p.rpush(self.keys.history_messages(new_id), *messages)
                    p.set(self.count_key(new_id), int(count or 0) or len(messages))
                    p.set(self.bytes_key(new_id), size)
                    p.zadd(self.keys.history_index(fields["agent_id"]), {new_id: now})
                    self._count(p, used, start, size - replaced)

                return write

            await self.storage._watched(
                [self.bytes_key(new_id), self.keys.usage], f"fork session {session_id!r}", plan
            )
            return _record(fields)

        forked: dict[str, Any] | None = await self._call(run())
        return forked


def _read(path: Path, default: Any) -> Any:
    try:
        return json.loads(path.read_bytes())
    except FileNotFoundError:
        return default
    except ValueError:
        raise StorageUnavailableError(f"{path} is corrupt (not JSON); remove it") from None


def _size_of(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.glob("*.json") if p.is_file())


def _write(path: Path, value: Any) -> None:
    atomic_write(path, json.dumps(value, ensure_ascii=False).encode(errors="surrogatepass"))


class FileHistory:
    """The same records as files: `history/sessions/{id}/session.json` (the hash),
    `messages.json` (the list), `count.json`, and `history/index/{agent_id}.json`
    (`{session_id: score}`). Writers hold `history/.lock`: history writes are small and
    a FileStorage deployment is one server."""

    def __init__(
        self, base: Path, limits: HistoryLimits, storage: FileStorage | None = None
    ) -> None:
        self.base = base
        self.limits = limits
        self.storage = storage  # its quota bounds what history adds (measured usage)

    def _check_quota(self, adding: int) -> None:
        quota = None if self.storage is None else self.storage.quota
        if quota is not None and quota.max_bytes is not None and adding > 0:
            assert self.storage is not None
            quota.check_bytes(self.storage._usage() + adding, grows=True)

    def _dir(self, session_id: str) -> Path:
        return self.base / "sessions" / session_id

    def _index(self, agent_id: str) -> Path:
        return self.base / "index" / f"{agent_id}.json"

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.base.mkdir(parents=True, exist_ok=True)
        with open(self.base / ".lock", "a") as fh:
            _flock(fh, fcntl.LOCK_EX, self.base / ".lock")
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def _record_run(
        self,
        session_id: str,
        agent_id: str,
        metadata: dict[str, Any],
        messages: list[dict[str, Any]],
        now: float,
    ) -> int:
        folder, stamp = self._dir(session_id), iso(now)
        with self._locked():
            record = _read(folder / "session.json", {})
            record.setdefault("created_at", stamp)
            record.setdefault("metadata", json.dumps(metadata))
            record.update(session_id=session_id, agent_id=agent_id, updated_at=stamp)
            self._check_quota(len(json.dumps(messages, ensure_ascii=False).encode()))
            kept = _read(folder / "messages.json", []) + messages
            count = int(_read(folder / "count.json", 0)) + len(messages)
            _write(folder / "messages.json", kept[-self.limits.max_messages :])
            _write(folder / "count.json", count)
            _write(folder / "session.json", record)
            index = _read(self._index(agent_id), {})
            index[session_id] = now
            _write(self._index(agent_id), index)
            return min(len(kept), self.limits.max_messages)

    async def record_run(
        self,
        session_id: str,
        agent_id: str,
        metadata: dict[str, Any],
        messages: list[dict[str, Any]],
        now: float,
    ) -> int:
        return await asyncio.to_thread(
            self._record_run, session_id, agent_id, metadata, messages, now
        )

    def _list(self, agent_id: str, offset: int, limit: int) -> tuple[list[dict[str, Any]], int]:
        index = _read(self._index(agent_id), {})
        ordered = sorted(index, key=lambda k: (index[k], k), reverse=True)
        found = []
        for session_id in ordered[offset : offset + limit]:
            record = _record(_read(self._dir(session_id) / "session.json", {}))
            record["session_id"] = record["session_id"] or session_id
            found.append(record)
        return found, len(ordered)

    async def list_sessions(
        self, agent_id: str, offset: int, limit: int
    ) -> tuple[list[dict[str, Any]], int]:
        return await asyncio.to_thread(self._list, agent_id, offset, limit)

    def _get(self, session_id: str, offset: int, limit: int) -> Page | None:
        folder = self._dir(session_id)
        raw = _read(folder / "session.json", None)
        if not isinstance(raw, dict):
            return None
        messages = _read(folder / "messages.json", [])
        count = int(_read(folder / "count.json", len(messages)))
        return Page(_record(raw), messages[offset : offset + limit], len(messages), count)

    async def get(self, session_id: str, offset: int, limit: int) -> Page | None:
        return await asyncio.to_thread(self._get, session_id, offset, limit)

    def _delete(self, session_id: str) -> bool:
        folder = self._dir(session_id)
        with self._locked():
            raw = _read(folder / "session.json", None)
            if not isinstance(raw, dict):
                return False
            agent = raw.get("agent_id")
            if isinstance(agent, str) and AGENT_ID_RE.match(agent):
                index = _read(self._index(agent), {})
                if index.pop(session_id, None) is not None:
                    _write(self._index(agent), index)
            shutil.rmtree(folder, ignore_errors=True)
            return True

    async def delete(self, session_id: str) -> bool:
        return await asyncio.to_thread(self._delete, session_id)

    def _fork(self, session_id: str, new_id: str, now: float) -> dict[str, Any] | None:
        source, target, stamp = self._dir(session_id), self._dir(new_id), iso(now)
        with self._locked():
            raw = _read(source / "session.json", None)
            if not isinstance(raw, dict):
                return None
            parsed = _record(raw)
            agent = parsed["agent_id"] or DEFAULT_AGENT_ID
            record = {
                **raw,
                "session_id": new_id,
                "agent_id": agent,
                "created_at": stamp,
                "updated_at": stamp,
                "metadata": json.dumps({**parsed["metadata"], "forked_from": session_id}),
            }
            messages = _read(source / "messages.json", [])
            self._check_quota(_size_of(source))
            _write(target / "messages.json", messages)
            _write(target / "count.json", int(_read(source / "count.json", len(messages))))
            _write(target / "session.json", record)
            index = _read(self._index(agent), {})
            index[new_id] = now
            _write(self._index(agent), index)
            return _record(record)

    async def fork(self, session_id: str, new_id: str, now: float) -> dict[str, Any] | None:
        return await asyncio.to_thread(self._fork, session_id, new_id, now)


def history_for(storage: Storage, limits: HistoryLimits) -> HistoryStore:
    """The history beside a workspace's storage, on the same connection or folder."""
    if isinstance(storage, RedisStorage):
        return RedisHistory(storage, limits)
    if isinstance(storage, FileStorage):
        return FileHistory(storage.scope / "history", limits, storage)
    raise ValidationError(f"no session history for storage {type(storage).__name__}")
