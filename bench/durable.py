"""Benchmark durable sessions on a real `codemode serve` and redis-server (loopback).

- `overhead`: p50 of `/execute` of `1+1` with history and snapshots off, then on (the
  servers alternate --rounds times; a session holding a few small globals), and what
  they add;
- `state`: for globals of 1, 10 and 100 MB (half random bytes, half a list of small
  dicts), the worker's snapshot time (measured in the worker, reported in the run's
  `snapshot.seconds`), the snapshot's size, and, after the worker is killed from
  outside, the new worker's restore time (`state_restored.seconds`) and the latency of
  that first run as the client sees it.

With --cluster it adds the node cluster's figures (bench/durable_cluster.py): a
CodeSession's pod deleted, the session resumed on a cold pod, and a fork, each timed to
the first result that shows its variable. Prints one JSON object on its last line.

    python bench/durable.py [--requests 2000] [--rounds 3] [--sizes 1,10,100] [--cluster]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from execute import Client, body, ms, percentile, session_server, timed
from local_redis import redis_server

SETUP_SMALL = "a = 1\nb = 'text'\nc = [1, 2, 3]\n"
OFF = {"HISTORY_ENABLED": "false", "SNAPSHOTS_ENABLED": "false"}
ON = {"HISTORY_ENABLED": "true", "SNAPSHOTS_ENABLED": "true"}


def _session(client: Client) -> str:
    status, created = client.call("POST", "/sessions", {})
    if status != 200:
        raise SystemExit(f"POST /sessions answered {status}: {created}")
    return str(created["session_id"])


def overhead(redis_url: str, workdir: Path, requests: int, rounds: int) -> dict[str, Any]:
    p50s: dict[str, list[float]] = {"off": [], "on": []}
    for _ in range(rounds):
        for label, env in (("off", OFF), ("on", ON)):
            with session_server(redis_url, workdir / f"{label}.log", extra_env=env) as (port, _):
                setup = Client(port)
                session = _session(setup)
                client = Client(port, session)
                client.execute(body(SETUP_SMALL))
                timed(client, body("1+1"), 200, b'"value":2')  # warm-up
                latencies = timed(client, body("1+1"), requests, b'"value":2')
                p50s[label].append(percentile(latencies, 50))
                client.close()
                setup.close()
    off, on = statistics.median(p50s["off"]), statistics.median(p50s["on"])
    return {
        "execute_p50_ms_off": ms(off),
        "execute_p50_ms_on": ms(on),
        "added_p50_ms": ms(on - off),
        "rounds_p50_ms": {k: [ms(v) for v in vs] for k, vs in p50s.items()},
    }


def state_code(megabytes: int) -> str:
    half = megabytes * 1024 * 1024 // 2
    rows = half // 60  # a dict of three small fields pickles to about 60 bytes
    return (
        "import os\n"
        f"blob = os.urandom({half})\n"
        f"rows = [{{'id': i, 'name': f'row{{i}}', 'v': i * 0.5}} for i in range({rows})]\n"
        "len(blob) + len(rows)"
    )


def state(redis_url: str, workdir: Path, sizes: list[int]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    env = {**ON, "WORKER_MEMORY_MB": "4096"}
    with session_server(redis_url, workdir / "state.log", extra_env=env) as (port, _):
        for size in sizes:
            client = Client(port)
            session = _session(client)
            client = Client(port, session)
            made = json.loads(client.execute(body(state_code(size))))
            if made.get("error"):
                raise SystemExit(f"state of {size} MB: {made['error']}")
            snap = made["snapshot"]
            pid = json.loads(client.execute(body("import os; os.getpid()")))["value"]
            time.sleep(1.0)  # the server stores the snapshot just after the reply
            os.kill(int(pid), signal.SIGKILL)
            time.sleep(0.2)
            started = time.perf_counter()
            after = json.loads(client.execute(body("len(blob) + len(rows)")))
            first = time.perf_counter() - started
            if after.get("value") != made.get("value"):
                raise SystemExit(f"state of {size} MB did not come back: {after}")
            restored = after["state_restored"]
            found[f"{size}MB"] = {
                "snapshot_ms": round(snap["seconds"] * 1000, 1),
                "snapshot_bytes": snap["bytes"],
                "restore_ms": round(restored["seconds"] * 1000, 1),
                "first_run_after_kill_ms": round(first * 1000, 1),
            }
            client.call("DELETE", "/sessions")
            client.close()
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sizes", default="1,10,100")
    parser.add_argument("--cluster", action="store_true", help="add the node cluster's figures")
    parser.add_argument("--cluster-rounds", type=int, default=5)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",") if s]
    with tempfile.TemporaryDirectory(prefix="bench-durable-") as tmp:
        workdir = Path(tmp)
        with redis_server(workdir) as (redis_url, _):
            result = {
                "overhead": overhead(redis_url, workdir, args.requests, args.rounds),
                "state": state(redis_url, workdir, sizes),
                "serializer": "cloudpickle",
                "loadavg": Path("/proc/loadavg").read_text().split()[:3],
            }
    if args.cluster:
        from durable_cluster import cluster_figures

        result["cluster"] = cluster_figures(args.cluster_rounds)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
