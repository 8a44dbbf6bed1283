"""A workspace's storage limits, checked by the storage layer in each write.

The session server is the only writer agent code can reach (workers hold no
credentials), so limits checked here bind agent code. The usage they compare
against is kept in the same transaction as every write (see RedisStorage).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from codemode_session.errors import QuotaExceededError, ValidationError

ENV = {
    "max_bytes": "STORAGE_MAX_BYTES",
    "max_artifact_bytes": "STORAGE_MAX_ARTIFACT_BYTES",
    "max_workflows": "STORAGE_MAX_WORKFLOWS",
    "max_deps": "STORAGE_MAX_DEPS",
}

# Packages a workspace's agents may add on top of the shared ones when nothing says
# otherwise: plenty for an agent, and it keeps the set (and each install) small.
DEFAULT_MAX_DEPS = 100


def _limit(env: Mapping[str, str], name: str, default: int | None = None) -> int | None:
    raw = (env.get(name) or "").strip()
    if not raw:
        return default
    if raw == "0":
        return None
    if not raw.isdigit():
        raise ValidationError(f"{name}={raw!r} is not a whole number (0 or unset: no limit)")
    return int(raw)


@dataclass(frozen=True)
class Quota:
    """None means unlimited."""

    max_bytes: int | None = None
    max_artifact_bytes: int | None = None
    max_workflows: int | None = None
    max_deps: int | None = DEFAULT_MAX_DEPS

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Quota:
        """Unset or 0 means no limit, except STORAGE_MAX_DEPS (unset: DEFAULT_MAX_DEPS)."""
        defaults = {"max_deps": DEFAULT_MAX_DEPS}
        return cls(**{field: _limit(env, name, defaults.get(field)) for field, name in ENV.items()})

    def check_artifact(self, name: str, size: int) -> None:
        if self.max_artifact_bytes is not None and size > self.max_artifact_bytes:
            raise QuotaExceededError(
                f"artifact {name!r} is {size} bytes; this workspace's largest artifact may "
                f"be {self.max_artifact_bytes} bytes (maxArtifactBytes)"
            )

    def check_bytes(self, used_after: int, grows: bool) -> None:
        """A write that shrinks or keeps usage is always allowed (it can only help)."""
        if grows and self.max_bytes is not None and used_after > self.max_bytes:
            raise QuotaExceededError(
                f"this write would make the workspace's storage {used_after} bytes; its limit "
                f"is {self.max_bytes} bytes (maxStorageBytes): delete artifacts first"
            )

    def check_deps(self, count_after: int) -> None:
        if self.max_deps is not None and count_after > self.max_deps:
            raise QuotaExceededError(
                f"this workspace may add {self.max_deps} packages of its own "
                "(STORAGE_MAX_DEPS); remove one with deps.remove() first"
            )

    def check_workflows(self, count_after: int, grows: bool) -> None:
        if grows and self.max_workflows is not None and count_after > self.max_workflows:
            raise QuotaExceededError(
                f"this workspace may hold {self.max_workflows} workflows (maxWorkflows); "
                "delete one first"
            )
