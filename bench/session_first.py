"""A new session's first request on a real `codemode serve`, with 8 sessions starting at
once, and the memory of the server's process tree while 8 sessions are open.

Each round opens --sessions sessions concurrently (threads, one connection each) and
times each one's first `/execute` of `1+1` (the session's worker comes from the pool's
spare or the worker template); the sessions are then ended. Memory is PSS (proportional
set size: shared pages split between the processes that share them) summed over the
server and all its descendants, read from /proc/PID/smaps_rollup with 8 sessions open.
--no-template runs the same with workers spawned as processes of their own; --spares N
sets the server's WORKER_SPARES (started workers kept ready; the server's default is 1).
Prints one JSON object on its last line.

    python bench/session_first.py [--sessions 8] [--rounds 10] [--no-template] [--spares N]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import threading
import time
from pathlib import Path

from execute import Client, body, ms, percentile, session_server
from local_redis import redis_server


def descendants(root: int) -> list[int]:
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            parents[int(entry)] = int(stat[stat.rfind(")") + 2 :].split()[1])
    found, frontier = [root], [root]
    while frontier:
        parent = frontier.pop()
        kids = [pid for pid, p in parents.items() if p == parent]
        found.extend(kids)
        frontier.extend(kids)
    return found


def pss_mb(pids: list[int]) -> float:
    total_kb = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total_kb += int(line.split()[1])
        except OSError:
            continue
    return round(total_kb / 1024, 1)


def round_of(port: int, count: int) -> tuple[list[float], list[str]]:
    sessions: list[str] = []
    latencies: list[float] = [0.0] * count
    opened = [Client(port) for _ in range(count)]
    for client in opened:
        status, created = client.call("POST", "/sessions", {})
        if status != 200:
            raise SystemExit(f"POST /sessions answered {status}: {created}")
        sessions.append(str(created["session_id"]))
    clients = [Client(port, sid) for sid in sessions]
    start = threading.Barrier(count)

    def first(i: int) -> None:
        start.wait()
        began = time.perf_counter()
        clients[i].execute(body("1+1"))
        latencies[i] = time.perf_counter() - began

    threads = [threading.Thread(target=first, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for client in opened + clients:
        client.close()
    return latencies, sessions


def end(port: int, sessions: list[str]) -> None:
    for sid in sessions:
        client = Client(port, sid)
        client.call("DELETE", "/sessions")
        client.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sessions", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--no-template", action="store_true")
    parser.add_argument("--spares", type=int, default=None, help="WORKER_SPARES for the server")
    args = parser.parse_args()
    extra = {"MAX_SESSIONS": str(args.sessions * 2)}
    if args.spares is not None:
        extra["WORKER_SPARES"] = str(args.spares)
    if args.no_template:
        extra["WORKER_TEMPLATE"] = "false"
    samples: list[float] = []
    pss: list[float] = []
    with tempfile.TemporaryDirectory(prefix="bench-first-") as tmp:
        workdir = Path(tmp)
        with (
            redis_server(workdir) as (redis_url, _),
            session_server(redis_url, workdir / "server.log", extra_env=extra) as (port, pid),
        ):
            time.sleep(2.0)  # the spare worker and the template are up
            for _ in range(args.rounds):
                latencies, sessions = round_of(port, args.sessions)
                samples.extend(latencies)
                pss.append(pss_mb(descendants(pid)))
                end(port, sessions)
                time.sleep(0.5)  # the pool refills its spare
    result = {
        "benchmark": "session_first",
        "template": not args.no_template,
        "worker_spares": args.spares if args.spares is not None else "default",
        "sessions_at_once": args.sessions,
        "first_request_p50_ms": ms(statistics.median(samples)),
        "first_request_p95_ms": ms(percentile(samples, 95)),
        "tree_pss_mb_with_sessions_open": statistics.median(pss),
        "targets": {"first_request_p50_ms": 4.0, "pss_mb": 170},
        "loadavg": Path("/proc/loadavg").read_text().split()[:3],
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
