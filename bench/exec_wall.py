"""`codemode exec SESSION CODE` on a Ready CodeSession, wall time as a user sees it.

The first call finds the session through Kubernetes and remembers its address; the
--calls after it take the fast path (the standard library, the remembered address).
Each call is a new `python -m codemode_session exec` process with KUBECONFIG set, a
cache of its own (XDG_CACHE_HOME in a temporary folder). Prints one JSON object on its
last line.

    python bench/exec_wall.py [--calls 20]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

from cluster_setup import cluster_workspace


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=20)
    args = parser.parse_args()
    with cluster_workspace("wall", 5) as bench, tempfile.TemporaryDirectory() as cache:
        bench.sessions.ensure("s0", "wall")
        bench.sessions.wait_ready("s0", timeout=180)
        env = {**os.environ, "KUBECONFIG": str(bench.kubeconfig), "XDG_CACHE_HOME": cache}
        command = [sys.executable, "-m", "codemode_session", "exec", "-n", bench.namespace, "s0"]

        def call(code: str) -> float:
            started = time.perf_counter()
            proc = subprocess.run([*command, code], env=env, capture_output=True, text=True)
            elapsed = time.perf_counter() - started
            if proc.returncode != 0:
                raise SystemExit(f"codemode exec failed: {proc.stderr}")
            return elapsed

        first = call("n = 0")
        walls = [call("n += 1\nn") for _ in range(args.calls)]
    result = {
        "benchmark": "exec_wall",
        "calls": len(walls),
        "first_call_s": round(first, 3),
        "wall_p50_s": round(statistics.median(walls), 3),
        "wall_p95_s": round(percentile(walls, 0.95), 3),
        "target_p50_s": 0.3,
        "load_avg_1m": os.getloadavg()[0],
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
