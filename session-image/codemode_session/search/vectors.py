"""Where embeddings are cached: a Redis hash under the workspace, or FileStorage's `vectors/`.

Redis: `P:vectors:{index}` (KeyLayout.vectors), one field per workflow or tool. py-code-mode
keeps its vectors under `{prefix}:vectors:{index}:...` too, but as RediSearch documents of
its own model (bge-small, also 384-dim); our index names (`workflows_idx`, `tools_idx`)
differ from its `skills_idx`, so neither reads vectors of the other's model. One hash, not
a key per item: a search reads every vector it lacks in one HMGET, with commands the
workspace's ACL user has (HMGET, HSET, HDEL, HKEYS).

A record is `model\\ncontent-hash\\n` then the float32 vector: a changed text, or another
model, no longer matches and is embedded again.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import os
import re
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Protocol

from codemode_session.storage.base import Storage
from codemode_session.storage.file_storage import FileStorage
from codemode_session.storage.redis_storage import RedisStorage

NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
WORKFLOWS = "workflows_idx"
TOOLS = "tools_idx"


def encode(model: str, content_hash: str, vector: bytes) -> bytes:
    return f"{model}\n{content_hash}\n".encode() + base64.b64encode(vector)


def decode(record: bytes | str) -> tuple[str, str, bytes] | None:
    """(model, content hash, vector bytes); None for a record that is not ours."""
    raw = record.encode() if isinstance(record, str) else record
    parts = raw.split(b"\n", 2)
    if len(parts) != 3:
        return None
    try:
        return parts[0].decode(), parts[1].decode(), base64.b64decode(parts[2], validate=True)
    except (UnicodeDecodeError, binascii.Error):
        return None


class VectorStore(Protocol):
    async def get(self, names: Collection[str]) -> dict[str, bytes | str]: ...
    async def put(self, records: Mapping[str, bytes]) -> None: ...
    async def delete(self, names: Collection[str]) -> None: ...
    async def names(self) -> set[str]: ...


class RedisVectors:
    def __init__(self, storage: RedisStorage, index: str) -> None:
        self._redis = storage.redis
        self.key = storage.keys.vectors(index)

    async def get(self, names: Collection[str]) -> dict[str, bytes | str]:
        wanted = sorted(names)
        if not wanted:
            return {}
        values = await self._redis.hmget(self.key, wanted)
        return {n: v for n, v in zip(wanted, values, strict=True) if isinstance(v, bytes | str)}

    async def put(self, records: Mapping[str, bytes]) -> None:
        if records:
            mapping: dict[str | bytes, bytes] = dict(records.items())
            await self._redis.hset(self.key, mapping=mapping)  # type: ignore[arg-type]

    async def delete(self, names: Collection[str]) -> None:
        if names:
            await self._redis.hdel(self.key, *names)

    async def names(self) -> set[str]:
        found = await self._redis.hkeys(self.key)
        return {n.decode(errors="replace") if isinstance(n, bytes) else n for n in found}


class FileVectors:
    """`{scope}/vectors/{index}/{name}.vec`, written whole (temp file, then rename)."""

    def __init__(self, storage: FileStorage, index: str) -> None:
        self.folder = storage.scope / "vectors" / index

    def _path(self, name: str) -> Path:
        # Workflow and tool names only: never a path of any other shape.
        if not NAME_RE.match(name):
            raise ValueError(f"not a vector name: {name!r}")
        return self.folder / f"{name}.vec"

    def _get(self, names: Collection[str]) -> dict[str, bytes | str]:
        found: dict[str, bytes | str] = {}
        for name in names:
            try:
                found[name] = self._path(name).read_bytes()
            except (OSError, ValueError):
                continue
        return found

    def _put(self, records: Mapping[str, bytes]) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        for name, record in records.items():
            path = self._path(name)
            tmp = path.with_suffix(f".tmp{os.getpid()}")
            tmp.write_bytes(record)
            os.replace(tmp, path)

    def _delete(self, names: Collection[str]) -> None:
        for name in names:
            try:
                self._path(name).unlink()
            except (OSError, ValueError):
                continue

    def _names(self) -> set[str]:
        try:
            return {p.stem for p in self.folder.glob("*.vec")}
        except OSError:
            return set()

    async def get(self, names: Collection[str]) -> dict[str, bytes | str]:
        return await asyncio.to_thread(self._get, list(names))

    async def put(self, records: Mapping[str, bytes]) -> None:
        await asyncio.to_thread(self._put, dict(records))

    async def delete(self, names: Collection[str]) -> None:
        await asyncio.to_thread(self._delete, list(names))

    async def names(self) -> set[str]:
        return await asyncio.to_thread(self._names)


def vector_store(storage: Storage, index: str) -> VectorStore | None:
    """The cache beside `storage`; None for a backend that keeps none."""
    if isinstance(storage, RedisStorage):
        return RedisVectors(storage, index)
    if isinstance(storage, FileStorage):
        return FileVectors(storage, index)
    return None
