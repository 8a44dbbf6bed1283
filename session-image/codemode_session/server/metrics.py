"""Prometheus metrics of the session server."""

from prometheus_client import Counter, Gauge, Histogram

EXECUTIONS = Counter("codemode_executions_total", "Code executions by outcome", ["outcome"])
EXECUTION_SECONDS = Histogram(
    "codemode_execution_seconds",
    "Wall time of /execute",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)
SESSIONS = Gauge("codemode_sessions_active", "Sessions currently open")
WORKER_RESTARTS = Counter(
    "codemode_worker_restarts_total", "Workers killed and replaced", ["reason"]
)
AUTH_FAILURES = Counter("codemode_auth_failures_total", "Requests refused for bad credentials")
HISTORY_WRITE_FAILURES = Counter(
    "codemode_history_write_failures_total",
    "Runs whose history could not be written (the run itself still answered)",
)
SNAPSHOT_WRITE_FAILURES = Counter(
    "codemode_snapshot_write_failures_total",
    "Session snapshots that could not be stored (over quota, storage down)",
)
RESTORES = Counter(
    "codemode_session_restores_total", "New workers that loaded a session snapshot", ["outcome"]
)
