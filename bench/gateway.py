"""What the gateway adds: latency and throughput through one gateway replica, beside the
same requests sent straight to the session pod, in the same run.

On the node cluster (started if needed, our images built and imported if stale): the
operator on this host, one CodeSession, the chart's gateway as one pod, and a
ServiceAccount that RBAC allows on the session. From this host, over keep-alive HTTP/1.1
(http.client: the client costs little), each of `GET /health` and `POST /execute` (`1+1`)
is timed --requests times directly (the pod IP, the session's token) and through the
gateway (its pod IP, the ServiceAccount's token; reviews are cached, as in use), the two
alternating request by request so both see the same load; then --clients threads with a
connection each measure requests/s of `/execute`, direct then through the gateway.

Target: the gateway adds at most 0.5 ms at p50. Prints one JSON object on its last line.

    python bench/gateway.py [--requests 2000] [--clients 8]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import sys
import threading
import time
from typing import Any
from urllib.parse import urlsplit

from cluster_setup import cluster_workspace

from tests.cluster import images
from tests.e2e.gateway_support import agent_token, gateway_pod
from tests.k8s.operator_fixture import wait_for


class Conn:
    """One keep-alive connection to a base URL, with a bearer token and a session id."""

    def __init__(self, base: str, token: str, session_id: str | None = None) -> None:
        parts = urlsplit(base)
        self.prefix = parts.path.rstrip("/")
        self.conn = http.client.HTTPConnection(parts.hostname or "", parts.port or 80, timeout=30)
        self.headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        if session_id:
            self.headers["X-Session-ID"] = session_id

    def call(self, method: str, path: str, body: bytes | None = None) -> bytes:
        self.conn.request(method, self.prefix + path, body=body, headers=self.headers)
        response = self.conn.getresponse()
        data = response.read()
        if response.status >= 400:
            raise SystemExit(f"{method} {path}: {response.status} {data[:300]!r}")
        return data

    def close(self) -> None:
        self.conn.close()


EXECUTE = json.dumps({"code": "1+1"}).encode()
CALLS = {"health": ("GET", "/health", None), "execute": ("POST", "/execute", EXECUTE)}


def latencies(conns: dict[str, Conn], what: str, count: int) -> dict[str, list[float]]:
    """Each route timed in turn, request by request: both see the same load on the host."""
    method, path, body = CALLS[what]
    for conn in conns.values():
        for _ in range(50):  # warm up: connections, caches, the worker
            conn.call(method, path, body)
    samples: dict[str, list[float]] = {route: [] for route in conns}
    for _ in range(count):
        for route, conn in conns.items():
            started = time.perf_counter()
            conn.call(method, path, body)
            samples[route].append(time.perf_counter() - started)
    return samples


def rps(base: str, token: str, session_id: str, clients: int, total: int) -> float:
    per_client = total // clients
    conns = [Conn(base, token, session_id) for _ in range(clients)]
    for conn in conns:
        conn.call("POST", "/execute", EXECUTE)
    barrier = threading.Barrier(clients + 1)

    def work(conn: Conn) -> None:
        barrier.wait()
        for _ in range(per_client):
            conn.call("POST", "/execute", EXECUTE)

    threads = [threading.Thread(target=work, args=(c,)) for c in conns]
    for thread in threads:
        thread.start()
    barrier.wait()
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    for conn in conns:
        conn.close()
    return per_client * clients / elapsed


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def ms(seconds: float) -> float:
    return round(seconds * 1000, 3)


def measure(args: argparse.Namespace) -> dict[str, Any]:
    with cluster_workspace("bench", 2, {"SESSION_POLL_SECONDS": "1"}) as bench:
        kinds = bench.kinds
        kinds.create("codesessions", "g", {"workspaceRef": "bench"})
        token = agent_token(bench.kubeconfig, kinds, "g")
        with gateway_pod(bench.kubeconfig, kinds, images.OPERATOR) as gateway:
            direct_url, session_token = bench.sessions.address("g", timeout=180)
            wait_for(lambda: kinds.status("codesessions", "g").get("phase") == "Ready", 60, "g")
            via_url = f"{gateway['pod']}/v1/namespaces/{bench.namespace}/codesessions/g"
            setup = Conn(direct_url, session_token)
            session_id = json.loads(setup.call("POST", "/sessions", b"{}"))["session_id"]
            setup.close()
            routes = {"direct": (direct_url, session_token), "gateway": (via_url, token)}
            load_before = [round(x, 2) for x in os.getloadavg()]
            figures: dict[str, Any] = {}
            for what in CALLS:
                conns = {r: Conn(base, bearer, session_id) for r, (base, bearer) in routes.items()}
                timed = latencies(conns, what, args.requests)
                for route, samples in timed.items():
                    conns[route].close()
                    figures[f"{what}_{route}_p50_ms"] = ms(statistics.median(samples))
                    figures[f"{what}_{route}_p99_ms"] = ms(pct(samples, 99))
                for q in ("p50", "p99"):
                    added = figures[f"{what}_gateway_{q}_ms"] - figures[f"{what}_direct_{q}_ms"]
                    figures[f"{what}_added_{q}_ms"] = round(added, 3)
            for route, (base, bearer) in routes.items():
                figures[f"execute_{route}_rps_{args.clients}_clients"] = round(
                    rps(base, bearer, session_id, args.clients, args.requests), 1
                )
            figures["loadavg_before"] = load_before
            figures["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--clients", type=int, default=8)
    args = parser.parse_args()
    figures = measure(args)
    print(
        json.dumps(
            {
                "benchmark": "gateway",
                "requests": args.requests,
                "clients": args.clients,
                "gateway_replicas": 1,
                "target_added_p50_ms": 0.5,
                **figures,
                "cpus": os.cpu_count(),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
