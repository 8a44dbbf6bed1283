"""Storage backends sharing py-code-mode's Redis key layout (docs/architecture.md §3)."""

from codemode_session.storage.base import (
    TRANSACTION_ATTEMPTS,
    ArtifactInfo,
    LibraryRecord,
    Storage,
    StorageTransaction,
)
from codemode_session.storage.file_storage import FileStorage
from codemode_session.storage.keys import KeyLayout
from codemode_session.storage.redis_storage import RedisStorage

__all__ = [
    "TRANSACTION_ATTEMPTS",
    "ArtifactInfo",
    "FileStorage",
    "KeyLayout",
    "LibraryRecord",
    "RedisStorage",
    "Storage",
    "StorageTransaction",
]
