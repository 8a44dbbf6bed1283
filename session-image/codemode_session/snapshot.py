"""A session's globals as bytes and back, inside the worker (the session's own sandbox).

cloudpickle, chosen by measurement (bench/durable.py): on 10 MB of mixed globals it
dumps in ~35 ms where dill takes ~700 ms, and loads as fast. A snapshot is:

    MAGIC, a 4-byte length, a JSON header, then the pickle of the saved values

The header (`saved`, `modules`, `unsaved`) lets the server report what a snapshot holds
without ever unpickling it: only a worker of the same session loads one.

- Modules bound to names (`import numpy as np`) are kept by module name and imported
  again on restore, not pickled.
- Agent code's own functions and classes are pickled by value; their globals come
  back as the session's live namespace (so `f` still sees the `x` of later runs), and
  the objects the namespace starts with (`tools`, `workflows`, …) come back as the new
  worker's, never copies.
- A name whose value cannot be pickled (a socket, a lock, a generator, …) is listed in
  `unsaved` with the reason; the rest are saved. The values are pickled together, so two
  names bound to one object still share it after a restore.
"""

from __future__ import annotations

import hashlib
import importlib
import io
import json
import pickle
import struct
import sys
import time
import types
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import cloudpickle

MAGIC = b"CMSNAP1\n"
_LENGTH = struct.Struct(">I")
REASON_CHARS = 300


@dataclass
class Snapshot:
    """One snapshot of a namespace; `blob` is what storage keeps."""

    blob: bytes
    saved: list[str]
    modules: dict[str, str]
    unsaved: dict[str, str]
    digest: str
    seconds: float

    def summary(self) -> dict[str, Any]:
        return {
            "saved": self.saved + sorted(self.modules),
            "unsaved": self.unsaved,
            "bytes": len(self.blob),
            "seconds": round(self.seconds, 6),
        }


@dataclass
class Restored:
    restored: list[str] = field(default_factory=list)
    lost: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0

    def summary(self) -> dict[str, Any]:
        return {"restored": self.restored, "lost": self.lost, "seconds": round(self.seconds, 6)}


class _Globals(dict[str, Any]):
    """Stands in for the namespace as the globals of pickled functions (a dict subclass,
    so the pickler's reducer_override sees it; plain dicts skip that hook)."""


# What pickled references to the namespace resolve to while a snapshot loads.
_live: tuple[dict[str, Any], Mapping[str, Any]] | None = None


def _live_namespace() -> dict[str, Any]:
    if _live is None:
        raise pickle.UnpicklingError("a session snapshot loads only into a namespace")
    return _live[0]


def _live_builtin(name: str) -> Any:
    if _live is None or name not in _live[1]:
        raise pickle.UnpicklingError(f"this session has no {name!r} to restore into")
    return _live[1][name]


class _Pickler(cloudpickle.Pickler):  # type: ignore[misc]  # cloudpickle is untyped
    def __init__(
        self, file: io.BytesIO, namespace: dict[str, Any], builtins: Mapping[str, Any]
    ) -> None:
        super().__init__(file, protocol=pickle.HIGHEST_PROTOCOL)
        self._marker = _Globals()
        # cloudpickle gives functions that share a globals dict one dict at load time,
        # found through this map: ours makes it the marker, which loads as the namespace.
        self.globals_ref[id(namespace)] = self._marker
        self._builtins = {id(v): k for k, v in builtins.items()}

    def reducer_override(self, obj: Any) -> Any:
        if obj is self._marker:
            return _live_namespace, ()
        name = self._builtins.get(id(obj))
        if name is not None:
            return _live_builtin, (name,)
        return super().reducer_override(obj)


def _reason(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:REASON_CHARS]


def _dump(values: dict[str, Any], namespace: dict[str, Any], builtins: Mapping[str, Any]) -> bytes:
    buffer = io.BytesIO()
    _Pickler(buffer, namespace, builtins).dump(values)
    return buffer.getvalue()


def user_names(namespace: Mapping[str, Any], builtins: Mapping[str, Any]) -> dict[str, Any]:
    """The names agent code made: not dunders, not the objects the namespace starts with."""
    return {
        name: value
        for name, value in namespace.items()
        if not (name.startswith("__") and name.endswith("__"))
        and not (name in builtins and builtins[name] is value)
    }


def take(namespace: dict[str, Any], builtins: Mapping[str, Any]) -> Snapshot:
    """Snapshot the agent's names in `namespace` (`builtins`: what it started with)."""
    started = time.perf_counter()
    values: dict[str, Any] = {}
    modules: dict[str, str] = {}
    for name, value in user_names(namespace, builtins).items():
        if isinstance(value, types.ModuleType) and sys.modules.get(value.__name__) is value:
            modules[name] = value.__name__
        else:
            values[name] = value
    unsaved: dict[str, str] = {}
    try:
        data = _dump(values, namespace, builtins)
    except Exception:  # find the names at fault, keep the rest
        for name in list(values):
            try:
                _dump({name: values[name]}, namespace, builtins)
            except Exception as exc:
                unsaved[name] = _reason(exc)
                del values[name]
        try:
            data = _dump(values, namespace, builtins)
        except Exception as exc:  # only together do they fail (rare): keep none
            unsaved.update(dict.fromkeys(values, _reason(exc)))
            values = {}
            data = _dump(values, namespace, builtins)
    header = json.dumps(
        {"saved": sorted(values), "modules": modules, "unsaved": unsaved},
        ensure_ascii=True,
    ).encode()
    blob = b"".join((MAGIC, _LENGTH.pack(len(header)), header, data))
    return Snapshot(
        blob=blob,
        saved=sorted(values),
        modules=modules,
        unsaved=unsaved,
        digest=hashlib.blake2b(blob, digest_size=16).hexdigest(),
        seconds=time.perf_counter() - started,
    )


def read_header(blob: bytes) -> dict[str, Any]:
    """The header of a snapshot (no unpickling): safe for the server to call."""
    if not blob.startswith(MAGIC) or len(blob) < len(MAGIC) + _LENGTH.size:
        raise ValueError("not a codemode session snapshot")
    (size,) = _LENGTH.unpack_from(blob, len(MAGIC))
    start = len(MAGIC) + _LENGTH.size
    header = json.loads(blob[start : start + size])
    if not isinstance(header, dict):
        raise ValueError("snapshot header is not a JSON object")
    return header


def restore(namespace: dict[str, Any], builtins: Mapping[str, Any], blob: bytes) -> Restored:
    """Load a snapshot of this session into `namespace`. Inside the worker only."""
    global _live
    started = time.perf_counter()
    result = Restored()
    try:
        header = read_header(blob)
    except ValueError as exc:
        result.lost["(snapshot)"] = _reason(exc)
        return result
    offset = len(MAGIC) + _LENGTH.size + _LENGTH.unpack_from(blob, len(MAGIC))[0]
    for name, module in dict(header.get("modules") or {}).items():
        try:
            namespace[str(name)] = importlib.import_module(str(module))
        except Exception as exc:
            result.lost[str(name)] = _reason(exc)
        else:
            result.restored.append(str(name))
    _live = (namespace, builtins)
    try:
        values = pickle.loads(memoryview(blob)[offset:])
    except Exception as exc:
        for name in header.get("saved") or []:
            result.lost[str(name)] = f"the snapshot could not be loaded: {_reason(exc)}"
    else:
        if isinstance(values, dict):
            namespace.update(values)
            result.restored.extend(values)
    finally:
        _live = None
    for name, why in dict(header.get("unsaved") or {}).items():
        result.lost.setdefault(str(name), f"not saved: {why}")
    result.restored.sort()
    result.seconds = time.perf_counter() - started
    return result
