"""Durable CodeSessions on a real node (issue 13): variables survive a deleted pod, a
suspend and resume, and seed a fork that then diverges; an idle session is suspended,
not deleted; `spec.agentId` is a label; the status reports the saved state; history
survives every pod of the session.

A session's variables live as long as the CodeSession, whichever pod or server session
runs its code: `Sessions.connect` opens and ends a server session each time, and the
next one still sees `x`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from codemode_operator.sessions import Sessions

from tests.cluster.layout import NODE_HOST_IP
from tests.cluster.pytest_plugin import Cluster
from tests.conftest import free_port, wait_for_port
from tests.e2e.host_operator import (
    admin_secret,
    host_operator,
    operator_workspace,
    run,
    wait,
)
from tests.e2e.hostredis import HostRedis
from tests.k8s.operator_fixture import Kinds, OperatorProcess, install_crds

pytestmark = pytest.mark.e2e

WORKSPACE = "durable"


def _ready(kinds: Kinds, name: str) -> dict[str, Any] | None:
    obj = kinds.get("codesessions", name)
    conds = ((obj or {}).get("status") or {}).get("conditions") or []
    ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in conds)
    return obj if ready else None


def _phase(kinds: Kinds, name: str, phase: str) -> dict[str, Any] | None:
    obj = kinds.get("codesessions", name)
    return obj if ((obj or {}).get("status") or {}).get("phase") == phase else None


@pytest.fixture
def env(
    cluster: Cluster,
    namespace: str,
    project_images: dict[str, str],
    host_redis: HostRedis,
    tmp_path: Path,
) -> Iterator[tuple[Kinds, Sessions, OperatorProcess]]:
    with operator_workspace(
        cluster, namespace, project_images["session"], host_redis.url, tmp_path, WORKSPACE
    ) as handles:
        yield handles


def test_variables_survive_a_deleted_pod_a_suspend_and_seed_a_fork(
    env: tuple[Kinds, Sessions, OperatorProcess],
) -> None:
    kinds, sessions, op = env
    kinds.create("codesessions", "d1", {"workspaceRef": WORKSPACE, "agentId": "agent-9"})
    wait(op, "d1 Ready", lambda: _ready(kinds, "d1"))
    assert run(sessions, "d1", "import math\nx = 41\ndef inc(n): return n + x\nx") == 41
    # A second connection (a new server session) sees x.
    assert run(sessions, "d1", "x += 1\ninc(0)") == 42

    # The label makes an agent's sessions listable.
    labelled = kinds.custom.list_namespaced_custom_object(
        "codemode.dev",
        "v1alpha1",
        kinds.namespace,
        "codesessions",
        label_selector="codemode.dev/agent=agent-9",
    )
    assert [o["metadata"]["name"] for o in labelled["items"]] == ["d1"]

    # The pod is deleted: the operator makes a new one, and x comes back.
    old_uid = kinds.core.read_namespaced_pod("d1-session", kinds.namespace).metadata.uid
    kinds.core.delete_namespaced_pod("d1-session", kinds.namespace, grace_period_seconds=0)

    def new_ready_pod() -> Any:
        try:
            pod = kinds.core.read_namespaced_pod("d1-session", kinds.namespace)
        except Exception:
            return None
        return pod if pod.metadata.uid != old_uid and _ready(kinds, "d1") else None

    wait(op, "a new d1 pod Ready", new_ready_pod)
    wait(op, "d1 Ready after its pod was replaced", lambda: _ready(kinds, "d1"))
    assert run(sessions, "d1", "(x, inc(1), math.sqrt(16))") == [42, 43, 4.0]
    status = wait(
        op,
        "d1 status reports its state",
        lambda: (s := kinds.status("codesessions", "d1")).get("restoredNames") and s,
    )
    assert "x" in status["restoredNames"] and status["stateId"].startswith("cs.")
    assert status["snapshotBytes"] > 0 and status["lastSnapshotTime"]
    assert status["historyMessages"] >= 2

    # Suspend: the pod and Service go, the phase says so; resume: x is back.
    kinds.patch("codesessions", "d1", {"spec": {"suspend": True}})
    suspended = wait(op, "d1 Suspended", lambda: _phase(kinds, "d1", "Suspended"))
    ready = next(c for c in suspended["status"]["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "Suspended")
    wait(op, "d1's pod gone", lambda: not _pod_exists(kinds, "d1-session") or None)
    kinds.patch("codesessions", "d1", {"spec": {"suspend": False}})
    wait(op, "d1 Ready after resume", lambda: _ready(kinds, "d1"))
    assert run(sessions, "d1", "x") == 42

    # Fork: the fork starts from d1's state and history, then the two diverge.
    kinds.create("codesessions", "d2", {"workspaceRef": WORKSPACE, "forkFrom": {"session": "d1"}})
    wait(op, "d2 Ready", lambda: _ready(kinds, "d2"))
    assert run(sessions, "d2", "x") == 42
    assert run(sessions, "d2", "x = 'fork'\nx") == "fork"
    assert run(sessions, "d1", "x") == 42
    assert kinds.status("codesessions", "d2")["forkedFrom"] == status["stateId"]

    # History: every run of d1, through every pod, under its state id; the fork has a copy.
    with sessions.connect("d1") as client:
        page = client.history(status["stateId"])
    codes = [m["content"] for m in page["messages"] if m["role"] == "user"]
    assert codes[:2] == ["import math\nx = 41\ndef inc(n): return n + x\nx", "x += 1\ninc(0)"]
    assert "x" in codes  # the run after the resume
    with sessions.connect("d2") as client:
        forked = client.history(kinds.status("codesessions", "d2")["stateId"])
    assert [m["content"] for m in forked["messages"]][:1] == [codes[0]]


def _pod_exists(kinds: Kinds, name: str) -> bool:
    try:
        kinds.core.read_namespaced_pod(name, kinds.namespace)
    except Exception:
        return False
    return True


def test_an_idle_session_is_suspended_not_deleted(
    env: tuple[Kinds, Sessions, OperatorProcess],
) -> None:
    kinds, sessions, op = env
    kinds.create(
        "codesessions",
        "idle1",
        {"workspaceRef": WORKSPACE, "idleTimeout": "10s", "idleAction": "Suspend"},
    )
    wait(op, "idle1 Ready", lambda: _ready(kinds, "idle1"))
    assert run(sessions, "idle1", "y = [1, 2, 3]\nlen(y)") == 3
    started = time.monotonic()
    wait(op, "idle1 Suspended by its idle timeout", lambda: _phase(kinds, "idle1", "Suspended"))
    assert time.monotonic() - started >= 3
    assert kinds.get("codesessions", "idle1")["spec"]["suspend"] is True
    kinds.patch("codesessions", "idle1", {"spec": {"suspend": False}})
    wait(op, "idle1 Ready after resume", lambda: _ready(kinds, "idle1"))
    assert run(sessions, "idle1", "sum(y)") == 6


def cli(kubeconfig: Path, *argv: str) -> Any:
    """`codemode sessions --json ...` as a user runs it (its own process, KUBECONFIG)."""
    proc = subprocess.run(
        [sys.executable, "-m", "codemode_session", "sessions", "--json", *argv],
        env={**os.environ, "KUBECONFIG": str(kubeconfig)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_the_cli_lists_suspends_resumes_forks_and_reads_history(
    env: tuple[Kinds, Sessions, OperatorProcess],
    cluster: Cluster,
) -> None:
    kinds, sessions, op = env
    ns = [cluster.kubeconfig, "-n", kinds.namespace]
    kinds.create("codesessions", "c1", {"workspaceRef": WORKSPACE, "agentId": "cli-agent"})
    kinds.create("codesessions", "c2", {"workspaceRef": WORKSPACE})
    wait(op, "c1 Ready", lambda: _ready(kinds, "c1"))
    assert run(sessions, "c1", "z = 'cli'\nz") == "cli"
    listed = cli(*ns, "list", "--agent", "cli-agent")
    assert [r["name"] for r in listed] == ["c1"] and listed[0]["phase"] == "Ready"
    assert cli(*ns, "suspend", "c1", "--wait", "120")["phase"] == "Suspended"
    # A suspended session's history is read through another running session of its workspace.
    wait(op, "c2 Ready", lambda: _ready(kinds, "c2"))
    page = cli(*ns, "history", "c1")
    assert [m["content"] for m in page["messages"]][:1] == ["z = 'cli'\nz"]
    assert cli(*ns, "resume", "c1", "--wait", "180")["phase"] == "Ready"
    assert run(sessions, "c1", "z") == "cli"
    assert cli(*ns, "fork", "c1", "c3")["name"] == "c3"
    wait(op, "c3 Ready", lambda: _ready(kinds, "c3"))
    assert run(sessions, "c3", "z + '-fork'") == "cli-fork"


def _persistent_redis(port: int, workdir: Path, password: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", f"127.0.0.1 {NODE_HOST_IP}",
         "--requirepass", password, "--save", "", "--appendonly", "yes",
         "--appendfsync", "always", "--dir", str(workdir)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )  # fmt: skip


def test_history_and_state_survive_an_operator_restart_and_a_redis_restart(
    cluster: Cluster,
    namespace: str,
    project_images: dict[str, str],
    tmp_path: Path,
) -> None:
    """Redis with persistence on (AOF, fsync always), killed and started again on its
    data; the operator stopped and started. The Workspace's ACL user comes back with the
    operator's next workspace check, and the session's history and variables with it."""
    password, port = "durable-admin", free_port()
    data = tmp_path / "redis"
    data.mkdir()
    server = _persistent_redis(port, data, password)
    wait_for_port(port)
    api = cluster.api_client()
    install_crds(cluster.kubeconfig, api)
    kinds = Kinds(api, namespace)
    redis = admin_secret(kinds, f"redis://:{password}@{NODE_HOST_IP}:{port}/0")
    op = host_operator(
        cluster, namespace, project_images["session"], tmp_path, WORKSPACE_POLL_SECONDS="2"
    )
    sessions = Sessions(namespace=namespace, api=api)
    try:
        with op:
            kinds.create("workspaces", WORKSPACE, {"redis": redis})
            kinds.create("codesessions", "h1", {"workspaceRef": WORKSPACE})
            wait(op, "h1 Ready", lambda: _ready(kinds, "h1"))
            assert run(sessions, "h1", "x = 5\nx") == 5
            assert run(sessions, "h1", "y = x * 2\ny") == 10
            op.stop()
            op.start().wait_started()
            runs = [m["content"] for m in sessions.history("h1")["messages"] if m["role"] == "user"]
            assert runs == ["x = 5\nx", "y = x * 2\ny"]

            server.kill()
            server.wait(10)
            server = _persistent_redis(port, data, password)
            wait_for_port(port)
            # A new pod loads the state from the restarted Redis (its ACL user provisioned
            # again by the operator's workspace check).
            kinds.core.delete_namespaced_pod("h1-session", namespace, grace_period_seconds=0)
            time.sleep(1)
            wait(op, "h1 Ready again", lambda: _ready(kinds, "h1"))
            assert run(sessions, "h1", "(x, y)") == [5, 10]
            runs = [m["content"] for m in sessions.history("h1")["messages"] if m["role"] == "user"]
            assert runs == ["x = 5\nx", "y = x * 2\ny", "(x, y)"]
    finally:
        sessions.close()
        server.terminate()
        server.wait(10)
