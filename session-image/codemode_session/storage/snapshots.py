"""Where session snapshots are kept, counted in the workspace's storage quota.

A snapshot is opaque bytes made and loaded by the session's own worker
(codemode_session.snapshot); storage only keeps it with a small record of what it
holds. Under the workspace's namespace P (so its Redis ACL covers it):

- `P:snapshot:{id}`: hash of `data` (the bytes) and `meta` (JSON: `saved`, `unsaved`,
  `bytes`, `taken_at`, `owner`, `runs`);
- `P:snapshots`: hash of id to stored size, so the usage counter can be rebuilt.

Both count toward the workspace's usage (`P:usage`), updated in the same transaction as
the write, so a session cannot hold more than `maxStorageBytes` through its snapshots.
FileStorage keeps `{workspace base}/snapshots/{id}.bin` and `{id}.json`.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from redis.asyncio.client import Pipeline

from codemode_session.errors import ValidationError
from codemode_session.storage.base import Storage
from codemode_session.storage.file_storage import FileStorage, atomic_write
from codemode_session.storage.history import validate_history_id
from codemode_session.storage.redis_storage import RedisStorage


class SnapshotStore(Protocol):
    async def save(self, snapshot_id: str, data: bytes, meta: dict[str, Any]) -> None:
        """Replace the snapshot; QuotaExceededError when it would not fit."""

    async def load(self, snapshot_id: str) -> tuple[bytes, dict[str, Any]] | None: ...

    async def meta(self, snapshot_id: str) -> dict[str, Any] | None: ...

    async def delete(self, snapshot_id: str) -> bool: ...

    async def copy(self, source: str, target: str, meta: dict[str, Any]) -> bool:
        """Copy `source` to `target` with `meta` merged in (a fork); False if none."""


def _meta(raw: bytes | str | None) -> dict[str, Any]:
    try:
        value = json.loads(raw) if raw is not None else {}
    except ValueError:
        value = {}
    return value if isinstance(value, dict) else {}


def _as_bytes(value: Any) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode(errors="surrogateescape")


class RedisSnapshots:
    def __init__(self, storage: RedisStorage) -> None:
        self.storage = storage
        self.redis = storage.redis
        self.keys = storage.keys

    def key(self, snapshot_id: str) -> str:
        return f"{self.keys.scope}:snapshot:{validate_history_id(snapshot_id)}"

    @property
    def index(self) -> str:
        return f"{self.keys.scope}:snapshots"

    async def _replace(
        self, snapshot_id: str, data: bytes | None, meta: str | None, verb: str
    ) -> list[Any]:
        """Write (or, with data None, delete) one snapshot in a WATCH/MULTI with the usage
        counter and the index, within the quota."""
        key, keys, quota = self.key(snapshot_id), self.keys, self.storage.quota
        size = 0 if data is None or meta is None else len(data) + len(meta.encode())

        async def plan(pipe: Pipeline) -> Callable[[Pipeline], None]:
            old = int(await pipe.hstrlen(key, "data")) + int(await pipe.hstrlen(key, "meta"))
            delta = size - old
            used = await self.storage._usage(pipe)
            if used is None and delta > 0:
                used = await self.storage._measure_usage() + await self._indexed_bytes()
                quota.check_bytes(used + delta, grows=True)
                start: int | None = used + delta
            else:
                quota.check_bytes((used or 0) + delta, grows=delta > 0)
                start = None

            def write(p: Pipeline) -> None:
                if data is None or meta is None:
                    p.unlink(key)
                    p.hdel(self.index, snapshot_id)
                else:
                    p.hset(key, mapping={"data": data, "meta": meta})
                    p.hset(self.index, snapshot_id, str(size))
                if start is not None:
                    p.hset(keys.usage, "bytes", str(start))
                elif used is not None:
                    p.hincrby(keys.usage, "bytes", max(delta, -used))

            return write

        return await self.storage._watched([key, self.index, keys.usage], verb, plan)

    async def _indexed_bytes(self) -> int:
        sizes = await self.redis.hvals(self.index)
        return sum(int(s) for s in sizes if _as_bytes(s).isdigit())

    async def save(self, snapshot_id: str, data: bytes, meta: dict[str, Any]) -> None:
        encoded = json.dumps({**meta, "bytes": len(data)})
        await self._replace(snapshot_id, data, encoded, f"save snapshot {snapshot_id!r}")

    async def load(self, snapshot_id: str) -> tuple[bytes, dict[str, Any]] | None:
        key = self.key(snapshot_id)
        raw = await self.storage._call(lambda: self.redis.hmget(key, ["data", "meta"]))
        if raw[0] is None:
            return None
        return _as_bytes(raw[0]), _meta(raw[1])

    async def meta(self, snapshot_id: str) -> dict[str, Any] | None:
        key = self.key(snapshot_id)
        raw = await self.storage._call(lambda: self.redis.hget(key, "meta"))
        return None if raw is None else _meta(raw)

    async def delete(self, snapshot_id: str) -> bool:
        removed = await self._replace(snapshot_id, None, None, f"delete snapshot {snapshot_id!r}")
        return bool(removed[0])

    async def copy(self, source: str, target: str, meta: dict[str, Any]) -> bool:
        return await _copy(self, source, target, meta)


class FileSnapshots:
    """`snapshots/{id}.bin` and `{id}.json` beside the workspace's artifacts; the quota
    is checked against FileStorage's measured usage (which counts this folder)."""

    def __init__(self, storage: FileStorage) -> None:
        self.storage = storage
        self.base = storage.scope / "snapshots"

    def _paths(self, snapshot_id: str) -> tuple[Path, Path]:
        validate_history_id(snapshot_id)
        return self.base / f"{snapshot_id}.bin", self.base / f"{snapshot_id}.json"

    def _save(self, snapshot_id: str, data: bytes, meta: dict[str, Any]) -> None:
        blob_path, meta_path = self._paths(snapshot_id)
        encoded = json.dumps({**meta, "bytes": len(data)}).encode()
        old = sum(p.stat().st_size for p in (blob_path, meta_path) if p.exists())
        delta = len(data) + len(encoded) - old
        quota = self.storage.quota
        if delta > 0 and quota.max_bytes is not None:
            quota.check_bytes(self.storage._usage() + delta, grows=True)
        self.base.mkdir(parents=True, exist_ok=True)
        atomic_write(blob_path, data)
        atomic_write(meta_path, encoded)

    def _load(self, snapshot_id: str) -> tuple[bytes, dict[str, Any]] | None:
        try:
            data = self._paths(snapshot_id)[0].read_bytes()
        except FileNotFoundError:
            return None
        return data, self._meta(snapshot_id) or {}

    def _meta(self, snapshot_id: str) -> dict[str, Any] | None:
        try:
            return _meta(self._paths(snapshot_id)[1].read_bytes())
        except FileNotFoundError:
            return None

    def _delete(self, snapshot_id: str) -> bool:
        found = False
        for path in self._paths(snapshot_id):
            try:
                os.unlink(path)
                found = True
            except FileNotFoundError:
                pass
        return found

    async def save(self, snapshot_id: str, data: bytes, meta: dict[str, Any]) -> None:
        await asyncio.to_thread(self._save, snapshot_id, data, meta)

    async def load(self, snapshot_id: str) -> tuple[bytes, dict[str, Any]] | None:
        return await asyncio.to_thread(self._load, snapshot_id)

    async def meta(self, snapshot_id: str) -> dict[str, Any] | None:
        return await asyncio.to_thread(self._meta, snapshot_id)

    async def delete(self, snapshot_id: str) -> bool:
        return await asyncio.to_thread(self._delete, snapshot_id)

    async def copy(self, source: str, target: str, meta: dict[str, Any]) -> bool:
        return await _copy(self, source, target, meta)


async def _copy(store: SnapshotStore, source: str, target: str, meta: dict[str, Any]) -> bool:
    """Read, then write: both stores' copy (a fork's snapshot is a new write, counted)."""
    found = await store.load(source)
    if found is None:
        return False
    data, old = found
    await store.save(target, data, {**old, **meta})
    return True


def snapshots_for(storage: Storage) -> SnapshotStore:
    """The snapshot store beside a workspace's storage, on the same connection or folder."""
    if isinstance(storage, RedisStorage):
        return RedisSnapshots(storage)
    if isinstance(storage, FileStorage):
        return FileSnapshots(storage)
    raise ValidationError(f"no session snapshots for storage {type(storage).__name__}")
