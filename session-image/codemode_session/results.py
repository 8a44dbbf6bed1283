"""The answer of `POST /execute`, defined once for the worker, the server and the clients.

`ExecuteResult` is the source: the server's OpenAPI model is derived from it
(`server.models.ExecuteResponse`), a worker answers its `RUN_FIELDS`, and the
server adds `SERVER_FIELDS`. Plain dataclasses on purpose: workers import this
module, and they do not load pydantic.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, kw_only=True)
class ExecuteResult:
    value: Any = None
    stdout: str = ""
    stderr: str = ""
    error: str | None = None
    error_type: str | None = None
    execution_time_ms: float
    session_id: str
    worker_restarted: bool = False
    # Why an earlier run's variables are gone although this run went well (the session's
    # worker was released while idle); None when the session kept its interpreter.
    state_released: str | None = None
    # The session's snapshot after this run (snapshots on): `saved` and `unsaved` names
    # (name: why it cannot be saved), `bytes`, `seconds`, `changed` (stored anew).
    snapshot: dict[str, Any] | None = None
    # What this run's new worker loaded from the session's snapshot: `restored` names,
    # `lost` (name: why), `taken_at`; None when the worker kept its interpreter.
    state_restored: dict[str, Any] | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ExecuteResult:
        """Lenient: a server that leaves a field out (py-code-mode's) still gives a result."""
        return cls(
            value=data.get("value"),
            stdout=data.get("stdout", ""),
            stderr=data.get("stderr", ""),
            error=data.get("error"),
            error_type=data.get("error_type"),
            execution_time_ms=float(data.get("execution_time_ms", 0.0)),
            session_id=data.get("session_id", ""),
            worker_restarted=bool(data.get("worker_restarted", False)),
            state_released=data.get("state_released"),
            snapshot=data.get("snapshot"),
            state_restored=data.get("state_restored"),
        )


# Added around the run, not by the cell runner: the server times the run and restarts
# workers; the worker's session adds its snapshot's summary.
SERVER_FIELDS = (
    "execution_time_ms",
    "session_id",
    "worker_restarted",
    "state_released",
    "snapshot",
    "state_restored",
)
# What a worker answers for one run.
RUN_FIELDS = tuple(f.name for f in dataclasses.fields(ExecuteResult) if f.name not in SERVER_FIELDS)
_RUN_DEFAULTS = {
    f.name: f.default for f in dataclasses.fields(ExecuteResult) if f.name in RUN_FIELDS
}


def failed_run(error_type: str, message: str) -> dict[str, Any]:
    """A run's answer when it produced nothing but an error (no value, no output)."""
    return {**_RUN_DEFAULTS, "error": f"{error_type}: {message}", "error_type": error_type}
