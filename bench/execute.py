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

With --artifacts it measures instead what agent code waits for in
`artifacts.save(name, data)` and `artifacts.load(name)`: a cell timed from
inside the worker (perf_counter around each call) over --iterations rounds per
payload size (1 KiB, 64 KiB, 1 MiB by default): per-op p50/p95, CPU per
save+load of the server, its workers and redis, Redis commands per save+load,
and the same install's storage layer called directly (no server, no worker) so
what the hops add shows apart from what the storage costs. --python runs
another install (its `python -m codemode_session serve`, whose workers use the
same interpreter); --compare OLD NEW [MORE...] runs the installs alternately
--rounds times (a fresh redis-server and server each run) and reports ratios
of the save+load p50 to the first. It also times, from the client, one `/execute`
per save+load (a cell that saves and loads once): the latency an agent sees.

Prints one JSON object on its last line.

    python bench/execute.py [--requests 2000] [--clients 8] [--python PY]
    python bench/execute.py --artifacts [--python PY] [--iterations 300] [--sizes 1024,65536]
    python bench/execute.py --artifacts --compare /tmp/venv-old/bin/python \
        /tmp/venv-new/bin/python [--rounds 3]
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
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

from local_redis import free_port, redis_server

TOKEN = "bench-token-0123456789"
NOOP = "async def run():\n    return None\n"


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time the processes have used so far."""
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            stat = Path(f"/proc/{pid}/stat").read_text()
            fields = stat[stat.rfind(")") + 2 :].split()
            total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def voluntary_switches(pids: list[int]) -> int:
    """Times the processes' threads went to sleep so far: about one per round trip they
    wait for (to Redis, to the server, to the worker), whatever else loads the machine."""
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            for task in os.listdir(f"/proc/{pid}/task"):
                with contextlib.suppress(OSError, ValueError):
                    for line in Path(f"/proc/{pid}/task/{task}/status").read_text().splitlines():
                        if line.startswith("voluntary_ctxt_switches:"):
                            total += int(line.split()[1])
    return total


def children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        with contextlib.suppress(OSError, IndexError):
            stat = Path(f"/proc/{entry}/stat").read_text()
            if int(stat[stat.rfind(")") + 2 :].split()[1]) == pid:
                found.append(int(entry))
    return found


@contextlib.contextmanager
def session_server(
    redis_url: str,
    log: Path,
    python: str = sys.executable,
    extra_env: dict[str, str] | None = None,
) -> Iterator[tuple[int, int]]:
    port = free_port()
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("CONTAINER_AUTH", "WORKSPACE_ID", "STORAGE_"))
    }
    env.update(
        {
            "REDIS_URL": redis_url,
            "STORAGE_PREFIX": "bench",
            "CONTAINER_AUTH_TOKEN": TOKEN,
            "PYTHONUNBUFFERED": "1",
            **(extra_env or {}),
        }
    )
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                python,
                "-m",
                "codemode_session",
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--log-level",
                "warning",
            ],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
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


def redis_commandstats(url: str) -> dict[str, int]:
    """Calls per command so far (INFO commandstats), over a plain socket (RESP inline)."""
    host_port = url.split("//", 1)[1].split("/", 1)[0]
    host, port = host_port.rsplit(":", 1)
    with socket.create_connection((host, int(port)), 5) as sock:
        sock.sendall(b"INFO commandstats\r\n")
        reply = b""
        while b"\r\n" not in reply:
            reply += sock.recv(65536)
        header, rest = reply.split(b"\r\n", 1)
        size = int(header[1:])
        while len(rest) < size:
            rest += sock.recv(65536)
    calls = {}
    for line in rest[:size].decode().splitlines():
        if line.startswith("cmdstat_"):
            name, stats = line[len("cmdstat_") :].split(":", 1)
            fields = dict(item.split("=", 1) for item in stats.split(","))
            calls[name] = int(fields["calls"])
    return calls


# Run by the interpreter under test: its own storage layer against the same Redis,
# without the session server, the worker or its socket (what the storage costs alone).
STORAGE_PROBE = """
import asyncio, json, sys, time
from codemode_session.storage.base import ArtifactInfo
from codemode_session.storage.factory import storage_from_env

async def main(url, sizes, count, warmup):
    storage = storage_from_env({"REDIS_URL": url, "STORAGE_PREFIX": "benchdirect"}, None)
    out = {}
    for size in sizes:
        data = (b"codemode-bench--" * (size // 16 + 1))[:size]
        name = "direct-" + str(size)
        save, load = [], []
        for i in range(warmup + count):
            info = ArtifactInfo(name=name, metadata={"_data_type": "bytes"})
            t0 = time.perf_counter()
            await storage.save_artifact(info, data)
            t1 = time.perf_counter()
            found = await storage.load_artifact(name)
            t2 = time.perf_counter()
            assert found is not None and found[1] == data
            if i >= warmup:
                save.append(t1 - t0)
                load.append(t2 - t1)
        out[size] = {"save": save, "load": load}
    await storage.close()
    print(json.dumps(out))

asyncio.run(main(sys.argv[1], [int(s) for s in sys.argv[2].split(",")], int(sys.argv[3]),
                 int(sys.argv[4])))
"""


def storage_layer(
    python: str, redis_url: str, sizes: list[int], count: int, warmup: int
) -> dict[str, dict[str, float]]:
    """p50s of the install's RedisStorage save/load called directly (no server, no worker)."""
    done = subprocess.run(
        [
            python,
            "-c",
            STORAGE_PROBE,
            redis_url,
            ",".join(map(str, sizes)),
            str(count),
            str(warmup),
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    if done.returncode != 0:
        raise SystemExit(f"storage probe failed:\n{done.stderr}")
    found = json.loads(done.stdout.strip().splitlines()[-1])
    figures = {}
    for size in sizes:
        save, load = found[str(size)]["save"], found[str(size)]["load"]
        pairs = [a + b for a, b in zip(save, load, strict=True)]
        figures[size_label(size)] = {
            "save_p50_ms": ms(percentile(save, 50)),
            "load_p50_ms": ms(percentile(load, 50)),
            "save_load_p50_ms": ms(percentile(pairs, 50)),
        }
    return figures


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


def timed(
    client: Client, payload: bytes, count: int, check: bytes, server_ms: list[float] | None = None
) -> list[float]:
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


def run_execute(args: argparse.Namespace) -> dict[str, Any]:
    load_before = [round(x, 2) for x in os.getloadavg()]

    with (
        tempfile.TemporaryDirectory(prefix="codemode-bench-") as tmp,
        redis_server(Path(tmp)) as (redis_url, redis_pid),
        session_server(redis_url, Path(tmp) / "serve.log", args.python) as (port, server_pid),
    ):
        setup = Client(port)
        status, created = setup.call("POST", "/sessions", {})
        assert status in (200, 201), created  # 201 before py-code-mode's codes
        session_id = created["session_id"]
        status, _ = setup.call("POST", "/api/workflows", {"name": "noop", "source": NOOP})
        assert status in (200, 201)
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
        cpu_us = [
            round((b - a) / args.requests * 1e6, 1)
            for a, b in zip(cpu_before, cpu_after, strict=True)
        ]

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
    result: dict[str, Any] = {
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
            percentile(noop_latencies, 50) - percentile(expr_latencies, 50)
        ),
        # The same difference as the server measures it (worker side only).
        "workflow_invoke_overhead_server_ms": round(
            percentile(noop_server, 50) - percentile(expr_server, 50), 3
        ),
        "redis_cpu_us_per_invoke": round(redis_us_per_invoke, 1),
        "targets": {
            "p50_le_2ms": p50 <= 0.002,
            "rps_8_clients_ge_500": many_rps >= 500,
        },
        "cpus": os.cpu_count(),
        "loadavg_before": load_before,
        "uptime_after": subprocess.run(
            ["uptime"], capture_output=True, text=True, check=False
        ).stdout.strip(),
    }
    result["install"] = install_of(args.python)
    return result


ARTIFACT_CELL = """
import time as _time
_data = (b"codemode-bench--" * ({size} // 16 + 1))[:{size}]
_save, _load = [], []
for _ in range({count}):
    _t0 = _time.perf_counter()
    artifacts.save({name!r}, _data)
    _t1 = _time.perf_counter()
    _back = artifacts.load({name!r})
    _t2 = _time.perf_counter()
    if _back != _data:
        raise RuntimeError("artifact came back different")
    _save.append(_t1 - _t0)
    _load.append(_t2 - _t1)
{{"save": _save, "load": _load}}
"""


def artifact_rounds(client: Client, size: int, count: int) -> tuple[list[float], list[float]]:
    """Seconds per save and per load, as agent code sees them (timed in the cell)."""
    save: list[float] = []
    load: list[float] = []
    batch = 50  # requests stay far below the server's execution timeout, even for 1 MiB
    done = 0
    while done < count:
        step = min(batch, count - done)
        code = ARTIFACT_CELL.format(size=size, count=step, name=f"bench-{size}")
        data = json.loads(client.execute(body(code)))
        if data.get("error"):
            raise SystemExit(f"artifact cell failed: {data['error']}")
        save += data["value"]["save"]
        load += data["value"]["load"]
        done += step
    return save, load


def execute_rounds(client: Client, size: int, count: int) -> list[float]:
    """Seconds per `/execute` of a cell that saves and then loads one artifact, from the
    client: what an agent waits for when its code keeps data (the data is built by an
    earlier cell, so only the storage calls and the request itself are timed)."""
    name = f"bench-exec-{size}"
    setup = f"_data = (b'codemode-bench--' * ({size} // 16 + 1))[:{size}]\nNone"
    json.loads(client.execute(body(setup)))
    payload = body(f"artifacts.save({name!r}, _data)\n_back = artifacts.load({name!r})\nNone")
    latencies = []
    for _ in range(count):
        started = time.perf_counter()
        answer = json.loads(client.execute(payload))
        latencies.append(time.perf_counter() - started)
        if answer.get("error"):
            raise SystemExit(f"artifact cell failed: {answer['error']}")
    return latencies


def size_label(size: int) -> str:
    if size % (1024 * 1024) == 0:
        return f"{size // (1024 * 1024)}MiB"
    if size % 1024 == 0:
        return f"{size // 1024}KiB"
    return f"{size}B"


def install_of(python: str) -> dict[str, Any]:
    """Which codemode_session the interpreter imports, and its git commit (+ dirty)."""
    probe = "import codemode_session; print(codemode_session.__file__)"
    found = subprocess.run([python, "-c", probe], capture_output=True, text=True, check=False)
    if found.returncode != 0:
        raise SystemExit(f"{python} cannot import codemode_session:\n{found.stderr}")
    package = Path(found.stdout.strip()).parent
    commit = subprocess.run(
        ["git", "-C", str(package), "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "-C", str(package), "status", "--porcelain", "--", "."],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    return {
        "python": python,
        "package": str(package),
        "commit": commit or None,
        "package_dirty": bool(dirty),
    }


def run_artifacts(python: str, sizes: list[int], iterations: int, warmup: int) -> dict[str, Any]:
    load_before = [round(x, 2) for x in os.getloadavg()]
    figures: dict[str, Any] = {}
    with (
        tempfile.TemporaryDirectory(prefix="codemode-bench-") as tmp,
        redis_server(Path(tmp)) as (redis_url, redis_pid),
        session_server(redis_url, Path(tmp) / "serve.log", python) as (port, server_pid),
    ):
        setup = Client(port)
        status, created = setup.call("POST", "/sessions", {})
        assert status in (200, 201), created  # 201 before py-code-mode's codes
        setup.close()
        client = Client(port, created["session_id"])
        for size in sizes:
            artifact_rounds(client, size, warmup)
            processes = ([server_pid], children(server_pid), [redis_pid])
            commands_before = redis_commandstats(redis_url)
            cpu_before = [cpu_seconds(pids) for pids in processes]
            switches_before = [voluntary_switches(pids) for pids in processes]
            save, load = artifact_rounds(client, size, iterations)
            switches_after = [voluntary_switches(pids) for pids in processes]
            cpu_after = [cpu_seconds(pids) for pids in processes]
            switches = [
                round((b - a) / iterations, 1)
                for a, b in zip(switches_before, switches_after, strict=True)
            ]
            commands_after = redis_commandstats(redis_url)
            execute_rounds(client, size, warmup)
            per_execute = execute_rounds(client, size, iterations)
            commands = {
                name: round((calls - commands_before.get(name, 0)) / iterations, 2)
                for name, calls in sorted(commands_after.items())
                if name != "info" and calls != commands_before.get(name, 0)
            }
            pairs = [a + b for a, b in zip(save, load, strict=True)]
            cpu_us = [
                round((b - a) / iterations * 1e6, 1)
                for a, b in zip(cpu_before, cpu_after, strict=True)
            ]
            figures[size_label(size)] = {
                "bytes": size,
                "iterations": iterations,
                "save_p50_ms": ms(percentile(save, 50)),
                "save_p95_ms": ms(percentile(save, 95)),
                "load_p50_ms": ms(percentile(load, 50)),
                "load_p95_ms": ms(percentile(load, 95)),
                "save_load_p50_ms": ms(percentile(pairs, 50)),
                "save_load_p95_ms": ms(percentile(pairs, 95)),
                "save_load_mean_ms": ms(statistics.fmean(pairs)),
                # One /execute whose cell saves and loads once, timed by the client.
                "execute_save_load_p50_ms": ms(percentile(per_execute, 50)),
                "execute_save_load_p95_ms": ms(percentile(per_execute, 95)),
                # CPU per save+load (immune to other load): the server (uvicorn + broker
                # since storage went through it), its workers (agent code) and redis.
                "cpu_us_per_save_load": {
                    "server": cpu_us[0],
                    "workers": cpu_us[1],
                    "redis": cpu_us[2],
                },
                "voluntary_switches_per_save_load": {
                    "server": switches[0],
                    "workers": switches[1],
                    "redis": switches[2],
                },
                # Redis commands per save+load (each WATCH-phase read is a round trip).
                "redis_commands_per_save_load": commands,
            }
        client.close()
        layer = storage_layer(python, redis_url, sizes, iterations, warmup)
        for key, figure in layer.items():
            # The same storage layer called directly: what the hops to it add is the rest.
            figures[key]["storage_layer_direct"] = figure
            figures[key]["beyond_storage_layer_p50_ms"] = round(
                figures[key]["save_load_p50_ms"] - figure["save_load_p50_ms"], 3
            )
    return {
        "bench": "execute_artifacts",
        "install": install_of(python),
        "sizes": figures,
        "cpus": os.cpu_count(),
        "loadavg_before": load_before,
        "loadavg_after": [round(x, 2) for x in os.getloadavg()],
    }


def compare(
    pythons: list[str], rounds: int, sizes: list[int], iterations: int, warmup: int
) -> dict[str, Any]:
    """The installs alternately, `rounds` times each; ratios to the first (the baseline)."""
    labels = ["old", "new"] if len(pythons) == 2 else [f"install{n}" for n in range(len(pythons))]
    runs: dict[str, list[dict[str, Any]]] = {label: [] for label in labels}
    for number in range(rounds):
        for label, python in zip(labels, pythons, strict=True):
            run = run_artifacts(python, sizes, iterations, warmup)
            runs[label].append(run)
            print(
                json.dumps({"round": number + 1, "label": label, **run}),
                file=sys.stderr,
                flush=True,
            )
    base = labels[0]
    summary: dict[str, Any] = {}
    for size in sizes:
        key = size_label(size)
        entry: dict[str, Any] = {}
        for figure in (
            "save_load_p50_ms",
            "save_p50_ms",
            "load_p50_ms",
            "save_load_p95_ms",
            "execute_save_load_p50_ms",
        ):
            per_round = {
                label: [run["sizes"][key][figure] for run in runs[label]] for label in labels
            }
            medians = {label: statistics.median(values) for label, values in per_round.items()}
            best = {label: min(values) for label, values in per_round.items()}
            entry[figure] = {
                **{f"{label}_runs": per_round[label] for label in labels},
                **{f"{label}_median": medians[label] for label in labels},
                **{
                    f"ratio_{label}_{base}": round(medians[label] / medians[base], 3)
                    for label in labels[1:]
                },
                # The least disturbed run of each (other load only ever adds time).
                **{
                    f"best_ratio_{label}_{base}": round(best[label] / best[base], 3)
                    for label in labels[1:]
                },
            }
        # Per storage call (timed inside the cell) and per request (what the agent sees).
        entry["within_1_25x"] = {
            label: entry["save_load_p50_ms"][f"ratio_{label}_{base}"] <= 1.25
            for label in labels[1:]
        }
        entry["within_1_25x_per_execute"] = {
            label: entry["execute_save_load_p50_ms"][f"ratio_{label}_{base}"] <= 1.25
            for label in labels[1:]
        }
        entry["storage_layer_direct_save_load_p50_ms_median"] = {
            label: statistics.median(
                run["sizes"][key]["storage_layer_direct"]["save_load_p50_ms"] for run in runs[label]
            )
            for label in labels
        }
        entry["cpu_us_per_save_load_median"] = {
            label: {
                part: statistics.median(
                    run["sizes"][key]["cpu_us_per_save_load"][part] for run in runs[label]
                )
                for part in ("server", "workers", "redis")
            }
            for label in labels
        }
        entry["voluntary_switches_per_save_load_median"] = {
            label: {
                part: statistics.median(
                    run["sizes"][key]["voluntary_switches_per_save_load"][part]
                    for run in runs[label]
                )
                for part in ("server", "workers", "redis")
            }
            for label in labels
        }
        entry["redis_commands_per_save_load"] = {
            label: runs[label][-1]["sizes"][key]["redis_commands_per_save_load"] for label in labels
        }
        summary[key] = entry
    return {
        "bench": "execute_artifacts_compare",
        "rounds": rounds,
        "iterations": iterations,
        "installs": {label: runs[label][0]["install"] for label in labels},
        "summary": summary,
        "loadavg_per_run": {
            label: [[run["loadavg_before"], run["loadavg_after"]] for run in runs[label]]
            for label in labels
        },
        "cpus": os.cpu_count(),
        "uptime_after": subprocess.run(
            ["uptime"], capture_output=True, text=True, check=False
        ).stdout.strip(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument(
        "--python",
        default=sys.executable,
        help="interpreter whose codemode_session to serve (default: this one)",
    )
    parser.add_argument(
        "--artifacts",
        action="store_true",
        help="measure artifacts.save + artifacts.load from agent code instead",
    )
    parser.add_argument(
        "--sizes",
        default="1024,65536,1048576",
        help="payload sizes in bytes, comma-separated (with --artifacts)",
    )
    parser.add_argument(
        "--iterations",
        type=int,
        default=300,
        help="timed save+load rounds per size (with --artifacts)",
    )
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument(
        "--compare",
        nargs="+",
        metavar="PYTHON",
        help="with --artifacts: these installs alternately (at least two; ratios to the first)",
    )
    parser.add_argument("--rounds", type=int, default=3, help="runs of each install (--compare)")
    args = parser.parse_args()
    if not args.artifacts:
        if args.compare:
            parser.error("--compare needs --artifacts")
        print(json.dumps(run_execute(args)))
        return
    sizes = [int(part) for part in args.sizes.split(",") if part.strip()]
    if args.compare:
        if len(args.compare) < 2:
            parser.error("--compare needs at least two interpreters")
        result = compare(args.compare, args.rounds, sizes, args.iterations, args.warmup)
    else:
        result = run_artifacts(args.python, sizes, args.iterations, args.warmup)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
