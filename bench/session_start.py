"""CodeSession apply -> Ready -> first /execute answered, on the node cluster.

Starts (or reuses) the node cluster, builds and imports our images if stale,
runs redis-server on the node's host address and the operator on this host,
then creates sessions one after another and times each from `create` to the
first result of `1 + 1`. Prints one JSON object on its last line.

With `--warm N` the workspace keeps a warm pool of N pods (spec.warmPool): before
each session the bench waits until the pool has a ready pod (`--full`: until all N
are ready, so no pool pod is starting beside the measurement), so every sample is a
bind of a warm pod (the JSON says how many were); the pool refills in between.

Each sample is also broken down by step, from wall-clock timestamps on this host: the
client's own (create returned, Ready seen through its watch, connected, first result)
and the operator's (`codemode_operator.trace`: its log line for each session gives the
time its watch brought the CodeSession and when each step of the start finished). The
JSON's `steps_ms` holds, per step, the p50 of the time from the apply to its end.

    python bench/session_start.py [--sessions 20] [--warm 2 [--full]]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import time
from typing import Any

from cluster_setup import Bench, cluster_workspace, wait_for


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def _pool_ready(bench: Bench, workspace: str, wanted: int) -> bool:
    """`wanted` pool pods are ready now (the workspace's status may be a moment behind)."""
    pods = bench.kinds.core.list_namespaced_pod(
        bench.namespace, label_selector=f"codemode.dev/warm={workspace},!codemode.dev/session"
    ).items
    ready = [
        p
        for p in pods
        if p.metadata.deletion_timestamp is None
        and any(c.type == "Ready" and c.status == "True" for c in p.status.conditions or [])
    ]
    return len(ready) >= wanted


def _operator_marks(log_text: str, namespace: str) -> dict[str, dict[str, float]]:
    """Each session's operator marks, as absolute times, from its `session start` lines."""
    found: dict[str, dict[str, float]] = {}
    pattern = re.compile(rf"session start {re.escape(namespace)}/(\S+) (\{{.*\}})")
    for line in log_text.splitlines():
        try:
            message = json.loads(line).get("message", "")
        except ValueError:
            continue
        match = pattern.search(message)
        if match:
            marks = json.loads(match.group(2))
            start = marks.pop("start")
            found[match.group(1)] = {"seen": start} | {
                k: start + v / 1000 for k, v in marks.items()
            }
    return found


def _steps(samples: list[dict[str, float]]) -> dict[str, float]:
    """p50 per step of the time from the apply to its end, in ms, in the order of the
    steps (by that p50)."""
    names = {k for sample in samples for k in sample}
    p50 = {k: round(statistics.median([s[k] for s in samples if k in s]) * 1000, 1) for k in names}
    return dict(sorted(p50.items(), key=lambda kv: kv[1]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sessions", type=int, default=20)
    parser.add_argument("--warm", type=int, default=0, help="warm pool size (0: cold starts)")
    parser.add_argument(
        "--full",
        action="store_true",
        help="with --warm, wait until the whole pool is ready before each session (no pool "
        "pod starting beside the measurement), not just one pod",
    )
    args = parser.parse_args()
    samples: list[float] = []
    ready_samples: list[float] = []
    loads: list[float] = []
    client_marks: dict[str, dict[str, float]] = {}
    warm_pods = 0
    spec: dict[str, Any] = {"warmPool": {"size": args.warm}} if args.warm else {}
    with cluster_workspace("bench", args.sessions + args.warm + 5, workspace_spec=spec) as bench:
        sessions = bench.sessions
        wanted = args.warm if args.full else 1
        for i in range(args.sessions):
            name = f"s{i}"
            if args.warm:
                wait_for(lambda: _pool_ready(bench, "bench", wanted), 180, "ready pool pods")
            loads.append(os.getloadavg()[0])
            started = time.perf_counter()
            wall = time.time()
            created = sessions.ensure(name, "bench")
            t_created = time.time()
            session = sessions.wait_ready(name, timeout=120, seen=created)
            ready_samples.append(time.perf_counter() - started)
            t_ready = time.time()
            with sessions.connect(name) as client:
                t_connected = time.time()
                result = client.execute("1 + 1")
            elapsed = time.perf_counter() - started
            client_marks[name] = {
                "apply": wall,
                "client_created": t_created,
                "client_saw_ready": t_ready,
                "client_connected": t_connected,
                "client_first_result": wall + elapsed,
            }
            if result.value != 2:
                raise SystemExit(f"session {name} answered {result}")
            samples.append(elapsed)
            if not str(session["status"].get("podName", "")).endswith(f"{name}-session"):
                warm_pods += 1
            bench.kinds.delete("codesessions", session["metadata"]["name"])
        operator = _operator_marks(bench.operator.log(), bench.namespace)
    breakdown = []
    for name, marks in client_marks.items():
        apply = marks["apply"]
        merged = {k: t - apply for k, t in (operator.get(name, {}) | marks).items() if k != "apply"}
        breakdown.append(merged)
    load = round(statistics.median(loads), 2)
    result = {
        "benchmark": "session_start",
        "mode": "warm" if args.warm else "cold",
        "warm_pool_size": args.warm,
        "waited_for_full_pool": bool(args.warm and args.full),
        "sessions": len(samples),
        "bound_warm_pods": warm_pods,
        "apply_to_ready_p50_s": round(statistics.median(ready_samples), 3),
        "apply_to_ready_p99_s": round(percentile(ready_samples, 0.99), 3),
        "apply_to_first_result_p50_s": round(statistics.median(samples), 3),
        "apply_to_first_result_p95_s": round(percentile(samples, 0.95), 3),
        "apply_to_first_result_max_s": round(max(samples), 3),
        # p50 ms from the apply to the end of each step (operator steps from its trace)
        "steps_ms": _steps(breakdown),
        "sessions_with_operator_marks": sum(1 for n in client_marks if n in operator),
        # the 1-minute load average as each sample started (median), beside every figure
        "load_avg_1m_during": load,
        "targets_s": (
            {"apply_to_ready_p50": 0.1, "apply_to_ready_p99": 0.3, "apply_to_first_result_p50": 0.2}
            if args.warm
            else {"apply_to_first_result_p50": 1.5}
        ),
        "load_avg_1m": os.getloadavg()[0],
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
