"""Prometheus metrics of the operator."""

from prometheus_client import Counter, Histogram

RECONCILES = Counter(
    "codemode_operator_reconciles_total", "Reconciles by kind and outcome", ["kind", "outcome"]
)
ERRORS = Counter("codemode_operator_errors_total", "Reconcile errors by kind", ["kind"])
SESSION_START = Histogram(
    "codemode_operator_session_start_seconds",
    "CodeSession created -> Ready, as seen by the operator",
    buckets=(0.5, 1, 1.5, 2, 3, 5, 8, 13, 21, 34, 60, 120),
)
LIBRARY_SYNCS = Counter(
    "codemode_operator_library_syncs_total", "Library sync Jobs by result", ["result"]
)
