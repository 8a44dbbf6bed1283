"""Cross-process file locks: several pytest sessions share one cache."""

from __future__ import annotations

import contextlib
import fcntl
from collections.abc import Iterator

from . import paths


@contextlib.contextmanager
def locked(name: str) -> Iterator[None]:
    """Hold an exclusive lock on ``$CACHE/locks/<name>.lock`` (blocking)."""
    lock = paths.cache_root() / "locks" / f"{name}.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    with lock.open("w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
