"""Benchmark `/execute` of a real `codemode serve` over loopback.

Starts its own redis-server and session server on free loopback ports, then
measures with raw keep-alive HTTP/1.1 connections (http.client, so the client
costs little):

- the round trip of `1+1` on one session: p50/p99 over --requests requests,
  and requests/s with one client;
- requests/s with 8 concurrent clients (threads, one keep-alive connection
  each) on ONE session;
- workflow invoke overhead: p50 of `workflows.noop()` minus p50 of `1+1`.

Targets: p50 <= 2 ms, >= 500 requests/s with 8 clients on one session.
Prints one JSON object on its last line.

    python bench/execute.py [--requests 2000] [--clients 8]
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

TOKEN = "bench-token-0123456789"
NOOP = "async def run():\n    return None\n"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.02)
    raise SystemExit(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time the processes have used so far."""
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            stat = Path(f"/proc/{pid}/stat").read_text()
            fields = stat[stat.rfind(")") + 2:].split()
            total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        with contextlib.suppress(OSError, IndexError):
            stat = Path(f"/proc/{entry}/stat").read_text()
            if int(stat[stat.rfind(")") + 2:].split()[1]) == pid:
                found.append(int(entry))
    return found


@contextlib.contextmanager
def redis_server(workdir: Path) -> Iterator[tuple[str, int]]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is not installed")
    port = free_port()
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(workdir)],
        stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
    )
    try:
        wait_for_port(port)
        yield f"redis://127.0.0.1:{port}/0", proc.pid
    finally:
        proc.terminate()
        proc.wait(10)


@contextlib.contextmanager
def session_server(redis_url: str, log: Path) -> Iterator[tuple[int, int]]:
    port = free_port()
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("CONTAINER_AUTH", "WORKSPACE_ID", "STORAGE_"))}
    env.update({"REDIS_URL": redis_url, "STORAGE_PREFIX": "bench", "CONTAINER_AUTH_TOKEN": TOKEN,
                "PYTHONUNBUFFERED": "1"})
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "codemode_session", "serve", "--host", "127.0.0.1",
             "--port", str(port), "--log-level", "warning"],
            env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                raise SystemExit(f"codemode serve exited:\n{log.read_text()}")
            with contextlib.suppress(OSError):
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                conn.request("GET", "/health")
                if conn.getresponse().status == 200:
                    conn.close()
                    break
            if time.monotonic() > deadline:
                raise SystemExit(f"codemode serve did not start:\n{log.read_text()}")
            time.sleep(0.05)
        yield port, proc.pid
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


class Client:
    """One keep-alive connection to the server."""

    def __init__(self, port: int, session_id: str | None = None) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        self.headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
        if session_id:
            self.headers["X-Session-ID"] = session_id

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        payload = None if body is None else json.dumps(body).encode()
        self.conn.request(method, path, body=payload, headers=self.headers)
        response = self.conn.getresponse()
        data = response.read()
        return response.status, json.loads(data) if data else None

    def execute(self, code: bytes) -> bytes:
        """POST /execute with a pre-encoded body; returns the raw response body."""
        self.conn.request("POST", "/execute", body=code, headers=self.headers)
        response = self.conn.getresponse()
        data = response.read()
        if response.status != 200:
            raise SystemExit(f"/execute answered {response.status}: {data[:500]!r}")
        return data

    def close(self) -> None:
        self.conn.close()


def body(code: str) -> bytes:
    return json.dumps({"code": code}).encode()


def timed(client: Client, payload: bytes, count: int, check: bytes,
          server_ms: list[float] | None = None) -> list[float]:
    """Round-trip times of `count` requests; the server's own `execution_time_ms`
    (session lock + worker round trip) goes to `server_ms` when given."""
    latencies = []
    for _ in range(count):
        started = time.perf_counter()
        data = client.execute(payload)
        latencies.append(time.perf_counter() - started)
        if check not in data:
            raise SystemExit(f"unexpected result: {data[:300]!r}")
        if server_ms is not None:
            server_ms.append(json.loads(data)["execution_time_ms"])
    return latencies


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def ms(seconds: float) -> float:
    return round(seconds * 1000, 3)


def concurrent_rps(port: int, session_id: str, clients: int, total: int) -> float:
    payload = body("1+1")
    per_client = total // clients
    connections = [Client(port, session_id) for _ in range(clients)]
    for conn in connections:  # connect and warm up outside the timed part
        conn.execute(payload)
    barrier = threading.Barrier(clients + 1)
    errors: list[BaseException] = []

    def work(conn: Client) -> None:
        barrier.wait()
        try:
            timed(conn, payload, per_client, b'"value":2')
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(c,)) for c in connections]
    for thread in threads:
        thread.start()
    barrier.wait()
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    for conn in connections:
        conn.close()
    if errors:
        raise errors[0]
    return per_client * clients / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--clients", type=int, default=8)
    args = parser.parse_args()
    load_before = [round(x, 2) for x in os.getloadavg()]

    with tempfile.TemporaryDirectory(prefix="codemode-bench-") as tmp, \
            redis_server(Path(tmp)) as (redis_url, redis_pid), \
            session_server(redis_url, Path(tmp) / "serve.log") as (port, server_pid):
        setup = Client(port)
        status, created = setup.call("POST", "/sessions", {})
        assert status == 201, created
        session_id = created["session_id"]
        status, _ = setup.call("POST", "/api/workflows", {"name": "noop", "source": NOOP})
        assert status == 201
        setup.close()

        client = Client(port, session_id)
        one_plus_one = body("1+1")
        timed(client, one_plus_one, 300, b'"value":2')  # warm up

        server_ms: list[float] = []
        workers = children(server_pid)
        cpu_before = (cpu_seconds([server_pid]), cpu_seconds(workers), time.process_time())
        started = time.perf_counter()
        latencies = timed(client, one_plus_one, args.requests, b'"value":2', server_ms)
        one_client_rps = args.requests / (time.perf_counter() - started)
        cpu_after = (cpu_seconds([server_pid]), cpu_seconds(workers), time.process_time())
        cpu_us = [round((b - a) / args.requests * 1e6, 1) for a, b in zip(cpu_before, cpu_after,
                                                                         strict=True)]

        noop_count = max(200, args.requests // 4)
        noop = body("workflows.noop()")
        timed(client, noop, 50, b'"error":null')
        noop_server: list[float] = []
        expr_server: list[float] = []
        redis_before = cpu_seconds([redis_pid])
        noop_latencies = timed(client, noop, noop_count, b'"error":null', noop_server)
        redis_us_per_invoke = (cpu_seconds([redis_pid]) - redis_before) / noop_count * 1e6
        expr_latencies = timed(client, one_plus_one, noop_count, b'"value":2', expr_server)
        client.close()

        many_rps = concurrent_rps(port, session_id, args.clients, args.requests)

    p50 = percentile(latencies, 50)
    result = {
        "bench": "execute",
        "requests": args.requests,
        "execute_1plus1_p50_ms": ms(p50),
        "execute_1plus1_p99_ms": ms(percentile(latencies, 99)),
        "execute_1plus1_mean_ms": ms(statistics.fmean(latencies)),
        # Where the time goes: the server's own figure covers the session lock and the
        # round trip to the worker process (which runs the cell); the rest is HTTP
        # (uvicorn, FastAPI validation and JSON) plus the client and loopback.
        "server_execution_p50_ms": round(percentile(server_ms, 50), 3),
        "http_and_client_p50_ms": round(ms(p50) - percentile(server_ms, 50), 3),
        # CPU per request (immune to other load): server (uvicorn + FastAPI + session
        # manager), worker process (the cell), and this client.
        "cpu_us_per_request": {"server": cpu_us[0], "worker": cpu_us[1], "client": cpu_us[2]},
        "rps_1_client": round(one_client_rps, 1),
        f"rps_{args.clients}_clients_one_session": round(many_rps, 1),
        "workflow_noop_p50_ms": ms(percentile(noop_latencies, 50)),
        "workflow_expr_p50_ms": ms(percentile(expr_latencies, 50)),
        "workflow_invoke_overhead_ms": ms(
            percentile(noop_latencies, 50) - percentile(expr_latencies, 50)),
        # The same difference as the server measures it (worker side only).
        "workflow_invoke_overhead_server_ms": round(
            percentile(noop_server, 50) - percentile(expr_server, 50), 3),
        "redis_cpu_us_per_invoke": round(redis_us_per_invoke, 1),
        "targets": {
            "p50_le_2ms": p50 <= 0.002,
            "rps_8_clients_ge_500": many_rps >= 500,
        },
        "cpus": os.cpu_count(),
        "loadavg_before": load_before,
        "uptime_after": subprocess.run(["uptime"], capture_output=True, text=True,
                                       check=False).stdout.strip(),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
