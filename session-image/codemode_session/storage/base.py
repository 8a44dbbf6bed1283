"""The storage interface every backend implements, and its records."""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, Protocol, TypeVar

from codemode_session.workflow_model import Workflow

DataType = Literal["bytes", "text", "json"]
T = TypeVar("T")

# How often a transaction is recomputed when another writer changed what it read.
TRANSACTION_ATTEMPTS = 5


@dataclass(frozen=True)
class ArtifactInfo:
    name: str
    description: str = ""
    created_at: float = field(default_factory=time.time)
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def data_type(self) -> DataType:
        value = self.metadata.get("_data_type", "bytes")
        return value if value in ("bytes", "text", "json") else "bytes"

    def index_entry(self) -> dict[str, Any]:
        """The JSON stored in the artifacts index hash, as py-code-mode writes it:
        `created_at` an ISO 8601 string (its readers parse it with fromisoformat)."""
        return {
            "description": self.description,
            "created_at": datetime.fromtimestamp(self.created_at, UTC).isoformat(),
            "metadata": self.metadata,
        }

    def to_dict(self) -> dict[str, Any]:
        """The API's (and the namespace's) form: `created_at` in seconds since the epoch."""
        return {
            "name": self.name,
            "description": self.description,
            "created_at": self.created_at,
            "metadata": self.metadata,
            "data_type": self.data_type,
        }

    @classmethod
    def from_index_entry(cls, name: str, entry: Any) -> ArtifactInfo:
        """Read an index entry, tolerating what other clients (or corruption) left there."""
        if not isinstance(entry, dict):
            entry = {}
        created = entry.get("created_at", 0.0)
        if isinstance(created, str):  # ISO 8601 (ours and py-code-mode's); floats are older
            try:
                created = datetime.fromisoformat(created).timestamp()
            except ValueError:
                created = 0.0
        try:
            created = float(created) if not isinstance(created, bool) else 0.0
        except (TypeError, ValueError, OverflowError):
            created = 0.0
        if not math.isfinite(created):
            created = 0.0
        metadata = entry.get("metadata")
        description = entry.get("description")
        return cls(
            name=name,
            description=str(description) if isinstance(description, str | int | float) else "",
            created_at=created,
            metadata=dict(metadata) if isinstance(metadata, dict) else {},
        )


@dataclass(frozen=True)
class LibraryRecord:
    """What the last bootstrap of one WorkflowLibrary published."""

    revision: str
    digest: str
    count: int
    synced_at: float

    def to_mapping(self) -> dict[str, str]:
        return {
            "revision": self.revision,
            "digest": self.digest,
            "count": str(self.count),
            "synced_at": str(self.synced_at),
        }

    @classmethod
    def from_mapping(cls, data: dict[str, str]) -> LibraryRecord:
        return cls(
            revision=data.get("revision", ""),
            digest=data.get("digest", ""),
            count=int(data.get("count", "0") or 0),
            synced_at=float(data.get("synced_at", "0") or 0),
        )


class StorageTransaction(Protocol):
    """One optimistic read-decide-write (see `Storage.transaction`).

    Every read is watched: if another writer changes what was read before the
    writes are published, the whole body runs again on fresh data. Writes are
    only queued here and published together, all or nothing, when the body
    returns (Redis: WATCH + MULTI/EXEC; files: under the folder's lock).
    """

    async def workflow_owners(self) -> dict[str, str]: ...

    async def get_library(self, library: str) -> LibraryRecord | None:
        """The record; ValueError/TypeError when another client stored an unreadable one."""
        ...

    async def get_workflows(self, names: Collection[str]) -> dict[str, Workflow | None]:
        """What is stored under `names` (absent names are left out; an entry that
        cannot be decoded maps to None)."""
        ...

    async def list_tools(self) -> dict[str, str]: ...
    async def list_deps(self) -> list[str]: ...

    def apply_library(
        self,
        library: str,
        upserts: list[Workflow],
        removals: list[str],
        record: LibraryRecord | None,
    ) -> None: ...
    def update_tools(self, save: Mapping[str, str], delete: Collection[str]) -> None: ...
    def update_deps(self, add: Collection[str], remove: Collection[str]) -> None: ...


class Storage(Protocol):
    """Everything a session or a library bootstrap keeps, scoped to one namespace."""

    prefix: str
    workspace_id: str | None

    @property
    def description(self) -> str: ...

    async def ping(self) -> None: ...
    async def close(self) -> None: ...

    # workflows
    async def list_workflows(self) -> list[Workflow]: ...
    async def get_workflow(self, name: str) -> Workflow | None: ...
    async def save_workflow(self, workflow: Workflow) -> None: ...
    async def delete_workflow(self, name: str) -> bool: ...
    async def workflow_owners(self) -> dict[str, str]: ...
    async def apply_library(
        self,
        library: str,
        upserts: list[Workflow],
        removals: list[str],
        record: LibraryRecord | None,
    ) -> None: ...
    async def get_library(self, library: str) -> LibraryRecord | None: ...

    async def transaction(
        self,
        body: Callable[[StorageTransaction], Awaitable[T]],
        what: str,
        attempts: int = TRANSACTION_ATTEMPTS,
    ) -> T:
        """Run `body` (reads, then queued writes) and publish its writes atomically.

        When another writer changed something `body` read before the publish, nothing
        is written and `body` runs again; after `attempts` runs a ConflictError naming
        `what` is raised and storage is left as it was. `body` must only decide from
        what it reads through the transaction (it may run more than once).
        """
        ...

    # artifacts
    async def save_artifact(self, info: ArtifactInfo, data: bytes) -> None: ...
    async def load_artifact(self, name: str) -> tuple[ArtifactInfo, bytes] | None: ...
    async def get_artifact(self, name: str) -> ArtifactInfo | None: ...
    async def list_artifacts(self) -> list[ArtifactInfo]: ...
    async def delete_artifact(self, name: str) -> bool: ...

    # deps: the prefix's shared specs (read-only here) plus the workspace's own
    async def list_deps(self) -> list[str]: ...
    async def add_dep(self, spec: str) -> bool: ...
    async def remove_dep(self, spec: str) -> bool: ...

    # tools (shared by every workspace of a prefix): name -> YAML text
    async def list_tools(self) -> dict[str, str]: ...
    async def save_tool(self, name: str, yaml_text: str) -> None: ...
    async def delete_tool(self, name: str) -> bool: ...
