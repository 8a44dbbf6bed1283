"""Faults for tests/e2e/test_faults.py, each done the way it happens in production:

- `DurableRedis`: a redis-server on the host where pods reach it (as `hostredis`), but
  with an append-only file fsynced on every write, and a `kill()` (SIGKILL, no chance
  to flush anything) and `start()` again on the same port and data directory.
- `kill_session_server()`, `kill_container()`: SIGKILL of the session server (or another
  container's main process) of a pod, found on the host through containerd (the task's
  PID), as the kernel's OOM killer would.
- `kubelet_stopped()`: the node cluster's kubelet stopped and started again through
  the code `tests.cluster` starts it with, under the cluster's own lock so a
  concurrent `up` never sees the node half down.

Every process signalled here is one this module started, a PID the cluster's own
PID files record, or a container task that the cluster's containerd reports.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import redis

from tests.cluster import locks, node, procs, wait
from tests.cluster.layout import NODE_HOST_IP, layout
from tests.conftest import free_port, wait_for_port


class DurableRedis:
    """redis-server bound to loopback and the node's host address, password protected,
    with `appendfsync always`: a write Redis acknowledged survives a SIGKILL."""

    def __init__(self, password: str) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
        self.binary = binary
        self.password = password
        self.port = free_port()
        self.workdir = Path(tempfile.mkdtemp(prefix="codemode-faults-redis-"))
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        """The admin URL as pods see it."""
        return f"redis://:{self.password}@{NODE_HOST_IP}:{self.port}/0"

    def admin(self) -> redis.Redis:
        """An admin client over loopback (a new one: connections do not survive kill())."""
        return redis.Redis(
            host="127.0.0.1",
            port=self.port,
            password=self.password,
            socket_timeout=5,
            socket_connect_timeout=5,
        )

    def start(self) -> DurableRedis:
        assert self.proc is None or self.proc.poll() is not None, "already running"
        self.starts += 1
        log = (self.workdir / "redis.log").open("ab")
        self.proc = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                f"127.0.0.1 {NODE_HOST_IP}",
                "--requirepass",
                self.password,
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--dir",
                str(self.workdir),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        wait_for_port(self.port, timeout=30)
        deadline = time.monotonic() + 30
        while True:  # the port opens before the append-only file is loaded
            try:
                with self.admin() as client:
                    client.ping()
                return self
            except redis.BusyLoadingError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def kill(self) -> None:
        """SIGKILL: every connection cut, nothing flushed but what was already fsynced."""
        assert self.proc is not None and self.proc.poll() is None, "not running"
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> DurableRedis:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()


def parse_time(value: str | None) -> float:
    """A Kubernetes timestamp (RFC 3339, seconds) as epoch seconds; 0 when absent."""
    if not value:
        return 0.0
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def condition(obj: dict[str, Any] | None, type_: str) -> dict[str, Any]:
    conds = ((obj or {}).get("status") or {}).get("conditions") or []
    return next((dict(c) for c in conds if c.get("type") == type_), {})


def ready_since(obj: dict[str, Any] | None, since: float) -> bool:
    """Ready is True and became so at or after `since` (a status written before the fault
    that still says Ready does not count: it has not seen the fault yet)."""
    ready = condition(obj, "Ready")
    return ready.get("status") == "True" and parse_time(ready.get("lastTransitionTime")) >= int(
        since
    )


# ---- the session server's process --------------------------------------------------------


def _task_pid(container_id: str) -> int:
    for line in node.ctr("tasks", "list").splitlines()[1:]:
        fields = line.split()
        if len(fields) >= 2 and fields[0] == container_id:
            return int(fields[1])
    raise AssertionError(f"containerd runs no task {container_id}")


def kill_container(pod: Any, expect: bytes) -> int:
    """SIGKILL the main process of `pod`'s first container (a V1Pod read just before) on
    the host, as the OOM killer would; its command line must contain `expect`."""
    status = pod.status.container_statuses[0]
    runtime, _, container_id = str(status.container_id).partition("://")
    assert runtime == "containerd", status.container_id
    pid = _task_pid(container_id)
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
    assert expect in cmdline, cmdline
    os.kill(pid, signal.SIGKILL)
    return pid


def kill_session_server(pod: Any) -> int:
    """SIGKILL the session server of `pod` (a V1Pod read just before) on the host; the
    PID is the one the cluster's containerd reports for the container's task."""
    status = pod.status.container_statuses[0]
    runtime, _, container_id = str(status.container_id).partition("://")
    assert runtime == "containerd", status.container_id
    pid = _task_pid(container_id)
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
    assert b"codemode_session" in cmdline and b"serve" in cmdline, cmdline
    os.kill(pid, signal.SIGKILL)
    return pid


# ---- the kubelet ------------------------------------------------------------------------

KUBELET_HEALTHZ = "http://127.0.0.1:10248/healthz"


def _kubelet_healthy() -> bool:
    try:
        return wait.http_get(KUBELET_HEALTHZ)[0] == 200
    except OSError:
        return False


@contextlib.contextmanager
def kubelet_stopped() -> Iterator[int]:
    """Stop the node cluster's kubelet (the PID its PID file records, SIGTERM to its
    process group as `down` does) for the body, then start it again with the cluster's
    own code, which waits until the node is Ready. Yields the stopped PID. Held under
    the cluster's lock: a concurrent `up` waits instead of tearing the node down."""
    lay = layout("node")
    with locks.locked(f"cluster-{lay.mode}"):
        pid = procs.running_pid(lay.run, "kubelet")
        assert pid is not None, "the kubelet is not running"
        procs.stop(lay.run, "kubelet")
        try:
            assert procs.running_pid(lay.run, "kubelet") is None
            yield pid
        finally:
            node._start_kubelet(lay)
            deadline = time.monotonic() + 60
            while not _kubelet_healthy():
                assert time.monotonic() < deadline, "kubelet /healthz not ok after restart"
                time.sleep(0.2)
