"""Faults for tests/e2e/test_faults.py, each done the way it happens in production:

- `DurableRedis`: a redis-server on the host where pods reach it (as `hostredis`), but
  with an append-only file fsynced on every write, and a `kill()` (SIGKILL, no chance
  to flush anything) and `start()` again on the same port and data directory.
- `kill_session_server()`, `kill_container()`: SIGKILL of the session server (or another
  container's main process) of a pod, found through the node's containerd (the task's
  PID), as the kernel's OOM killer would.
- `kubelet_stopped()`: the node's kubelet stopped and started again: on the local node
  cluster through the code `tests.cluster` starts it with, under the cluster's own lock
  so a concurrent `up` never sees the node half down; on kind with `systemctl` in the
  node container.

Which node: the local node cluster's (this host: its containerd socket and PID files),
or, when ``CODEMODE_KUBECONFIG`` names tests.cluster's kind cluster, the kind node
container's (``docker exec codemode-control-plane``: its containerd, its systemd), so
nothing of the other cluster is touched. Every process signalled here is one this
module started, a PID the cluster's own PID files or systemd record, or a container
task that the cluster's containerd reports.
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

import pytest
import redis

from tests.cluster import kind, locks, node, paths, procs, wait
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


# ---- which cluster ---------------------------------------------------------------------


def on_kind() -> bool:
    """The tests' cluster: this tooling's kind cluster (``CODEMODE_KUBECONFIG`` naming
    its kubeconfig) or, without ``CODEMODE_KUBECONFIG``, the local node cluster. Faults
    need a node this host controls: any other external cluster skips the test."""
    if not os.environ.get("CODEMODE_KUBECONFIG"):
        return False
    if kind.targets_kind():
        return True
    pytest.skip("faults need the local node cluster or tests.cluster's kind cluster")


# ---- the session server's process --------------------------------------------------------


def _task_pid(container_id: str, tasks: str) -> int:
    for line in tasks.splitlines()[1:]:
        fields = line.split()
        if len(fields) >= 2 and fields[0] == container_id:
            return int(fields[1])
    raise AssertionError(f"containerd runs no task {container_id}")


def _kill_task(pod: Any, *expect: bytes) -> int:
    """SIGKILL the task of `pod`'s first container (a V1Pod read just before) whose
    command line contains every `expect`; returns its PID. The PID is the one the
    cluster's containerd reports: the local cluster's on this host, or on kind the one
    in the node container (`ctr` there; the PID is in the node's PID namespace, so the
    command line is read and the signal sent there too)."""
    status = pod.status.container_statuses[0]
    runtime, _, container_id = str(status.container_id).partition("://")
    assert runtime == "containerd", status.container_id
    if on_kind():
        pid = _task_pid(container_id, kind.node_exec("ctr", "-n", "k8s.io", "tasks", "list"))
        cmdline = kind.node_exec("cat", f"/proc/{pid}/cmdline").replace("\0", " ").encode()
        assert all(e in cmdline for e in expect), cmdline
        kind.node_exec("kill", "-KILL", str(pid))
        return pid
    pid = _task_pid(container_id, node.ctr("tasks", "list"))
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
    assert all(e in cmdline for e in expect), cmdline
    os.kill(pid, signal.SIGKILL)
    return pid


def kill_container(pod: Any, expect: bytes) -> int:
    """SIGKILL the main process of `pod`'s first container (a V1Pod read just before),
    as the OOM killer would; its command line must contain `expect`."""
    return _kill_task(pod, expect)


def kill_session_server(pod: Any) -> int:
    """SIGKILL the session server of `pod` (a V1Pod read just before), as the OOM killer
    would; the PID is the one the cluster's containerd reports for the container's task."""
    return _kill_task(pod, b"codemode_session", b"serve")


# ---- the kubelet ------------------------------------------------------------------------

KUBELET_HEALTHZ = "http://127.0.0.1:10248/healthz"


def _kubelet_healthy() -> bool:
    if on_kind():  # its healthz listens on the node's loopback: ask through the API server
        proc = subprocess.run(
            [
                str(paths.binary("kubectl")),
                f"--kubeconfig={os.environ['CODEMODE_KUBECONFIG']}",
                "get",
                f"--raw=/api/v1/nodes/{kind.node_container()}/proxy/healthz",
            ],
            capture_output=True,
            text=True,
            timeout=30,
        )
        return proc.returncode == 0 and proc.stdout.strip() == "ok"
    try:
        return wait.http_get(KUBELET_HEALTHZ)[0] == 200
    except OSError:
        return False


@contextlib.contextmanager
def _kind_kubelet_stopped() -> Iterator[int]:
    with locks.locked("kind"):
        unit = ("systemctl", "show", "--property=MainPID", "--value", "kubelet")
        pid = int(kind.node_exec(*unit).strip() or 0)
        assert pid, "the kind node's kubelet is not running"
        kind.node_exec("systemctl", "stop", "kubelet")
        try:
            assert int(kind.node_exec(*unit).strip() or 0) == 0
            yield pid
        finally:
            kind.node_exec("systemctl", "start", "kubelet")
            deadline = time.monotonic() + 60
            while not _kubelet_healthy():
                assert time.monotonic() < deadline, "kubelet /healthz not ok after restart"
                time.sleep(0.5)


@contextlib.contextmanager
def kubelet_stopped() -> Iterator[int]:
    """Stop the node's kubelet for the body, then start it again and wait until its
    /healthz answers. Yields the stopped PID. On the local node cluster: the PID its
    PID file records, SIGTERM to its process group as `down` does, started again with
    the cluster's own code, under the cluster's lock so a concurrent `up` waits instead
    of tearing the node down. On kind: ``systemctl stop|start kubelet`` in the node
    container (kind's own unit), under kind's lock."""
    if on_kind():
        with _kind_kubelet_stopped() as pid:
            yield pid
        return
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
