"""CodeSession apply -> Ready -> first /execute answered, on the node cluster.

Starts (or reuses) the node cluster, builds and imports our images if stale,
runs redis-server on the node's host address and the operator on this host,
then creates sessions one after another and times each from `create` to the
first result of `1 + 1`. Prints one JSON object on its last line.

    python bench/session_start.py [--sessions 20]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

from cluster_setup import cluster_workspace


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sessions", type=int, default=20)
    args = parser.parse_args()
    samples: list[float] = []
    ready_samples: list[float] = []
    with cluster_workspace("bench", args.sessions + 5) as bench:
        sessions = bench.sessions
        for i in range(args.sessions):
            name = f"s{i}"
            started = time.perf_counter()
            sessions.ensure(name, "bench")
            session = sessions.wait_ready(name, timeout=120)
            ready_samples.append(time.perf_counter() - started)
            with sessions.connect(name) as client:
                result = client.execute("1 + 1")
            elapsed = time.perf_counter() - started
            if result.value != 2:
                raise SystemExit(f"session {name} answered {result}")
            samples.append(elapsed)
            bench.kinds.delete("codesessions", session["metadata"]["name"])
    result = {
        "benchmark": "session_start",
        "sessions": len(samples),
        "apply_to_first_result_p50_s": round(statistics.median(samples), 3),
        "apply_to_first_result_p95_s": round(percentile(samples, 0.95), 3),
        "apply_to_first_result_max_s": round(max(samples), 3),
        "apply_to_ready_p50_s": round(statistics.median(ready_samples), 3),
        "target_p50_s": 3.0,
        "load_avg_1m": os.getloadavg()[0],
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
