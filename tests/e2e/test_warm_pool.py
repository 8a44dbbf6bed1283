"""Warm pools on a real node (issue 14 item 1): a CodeSession bound from its workspace's
pool answers code of its own workspace with its own token; the pod it took is replaced;
a session whose settings no pool serves starts cold; the pool's pods roll when the
defaults change (bound pods stay); nothing of one session is visible to the next that
takes a pod (a pool pod is never reused after it was bound); a suspended session that
resumes takes a warm pod and gets its variables back."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from codemode_operator.sessions import Sessions

from tests.cluster.pytest_plugin import Cluster
from tests.e2e.host_operator import operator_workspace, run, wait
from tests.e2e.hostredis import HostRedis
from tests.k8s.operator_fixture import Kinds, OperatorProcess

pytestmark = pytest.mark.e2e

WORKSPACE = "warm"
POOL = 2


def _ready(kinds: Kinds, name: str) -> dict[str, Any] | None:
    obj = kinds.get("codesessions", name)
    conds = ((obj or {}).get("status") or {}).get("conditions") or []
    ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in conds)
    return obj if ready else None


def _phase(kinds: Kinds, name: str, phase: str) -> dict[str, Any] | None:
    obj = kinds.get("codesessions", name)
    return obj if ((obj or {}).get("status") or {}).get("phase") == phase else None


def pool_pods(kinds: Kinds) -> dict[str, Any]:
    """The pool's unbound pods by name (not terminating)."""
    pods = kinds.core.list_namespaced_pod(
        kinds.namespace, label_selector=f"codemode.dev/warm={WORKSPACE},!codemode.dev/session"
    ).items
    return {p.metadata.name: p for p in pods if p.metadata.deletion_timestamp is None}


def pool_ready(kinds: Kinds, n: int = POOL) -> dict[str, Any] | None:
    """The pool's pods once `n` are ready and the workspace's status says so."""
    pods = pool_pods(kinds)
    assert len(pods) <= POOL, f"the pool holds more than its size: {sorted(pods)}"
    ready = {
        name: p
        for name, p in pods.items()
        if any(c.type == "Ready" and c.status == "True" for c in p.status.conditions or [])
    }
    status = (kinds.status("workspaces", WORKSPACE) or {}).get("warmPool") or {}
    return ready if len(ready) == n and status.get("ready") == n else None


def pod_exists(kinds: Kinds, name: str) -> bool:
    try:
        kinds.core.read_namespaced_pod(name, kinds.namespace)
    except Exception:
        return False
    return True


@pytest.fixture
def env(
    cluster: Cluster,
    namespace: str,
    project_images: dict[str, str],
    host_redis: HostRedis,
    tmp_path: Path,
) -> Iterator[tuple[Kinds, Sessions, OperatorProcess]]:
    with operator_workspace(
        cluster,
        namespace,
        project_images["session"],
        host_redis.url,
        tmp_path,
        WORKSPACE,
        warmPool={"size": POOL},
        limits={"maxSessions": 6},
    ) as handles:
        yield handles


def through_service(kinds: Kinds, session: str) -> dict[str, Any] | None:
    """The session server's /health through the session's Service (its ClusterIP, which
    kube-proxy routes from this host too), or None while it does not answer with it: no
    connection, or an answer that is not the server's JSON (once, in a clean-clone run at
    load 4-5, the first answer through a just-written endpoint had an empty body; the
    caller's wait then asks again, and what it asserts is the answer's state id)."""
    svc = kinds.core.read_namespaced_service(f"{session}-session", kinds.namespace)
    try:
        with httpx.Client(
            base_url=f"http://{svc.spec.cluster_ip}:8080", trust_env=False, timeout=5
        ) as http:
            answer = http.get("/health")
            found: dict[str, Any] | None = answer.json() if answer.status_code == 200 else None
            return found
    except (httpx.HTTPError, ValueError):
        return None


def test_sessions_bind_warm_pods_that_are_replaced_rolled_and_never_reused(
    env: tuple[Kinds, Sessions, OperatorProcess],
) -> None:
    kinds, sessions, op = env
    first_pool = wait(op, "the pool's pods ready", lambda: pool_ready(kinds))
    assert kinds.status("workspaces", WORKSPACE)["warmPool"] == {"desired": POOL, "ready": POOL}

    # A session the pool serves binds one of its pods: that pod, not a new one.
    kinds.create("codesessions", "w1", {"workspaceRef": WORKSPACE, "agentId": "agent-w1"})
    w1 = wait(op, "w1 Ready", lambda: _ready(kinds, "w1"), timeout=60)["status"]
    assert w1["podName"] in first_pool
    assert not pod_exists(kinds, "w1-session")
    pod = kinds.core.read_namespaced_pod(w1["podName"], kinds.namespace)
    assert pod.metadata.labels["codemode.dev/session"] == "w1"
    assert [o.kind for o in pod.metadata.owner_references] == ["CodeSession"]
    assert pod.status.container_statuses[0].restart_count == 0

    # It answers code of its own workspace, with its own token (and no other).
    marker = "saved from w1"
    assert run(sessions, "w1", f"artifacts.save('w1-note', {marker!r})\nx = 41\nx + 1") == 42
    token = sessions.token(kinds.get("codesessions", "w1") or {})
    ip = pod.status.pod_ip
    with httpx.Client(base_url=f"http://{ip}:8080", trust_env=False, timeout=30) as http:
        health = http.get("/health").json()
        assert health["workspace_id"] == WORKSPACE
        assert health["state"]["state_id"] == w1["stateId"]
        assert http.post("/execute", json={"code": "1"}).status_code == 401
        wrong = {"Authorization": "Bearer not-the-token"}
        assert http.post("/execute", json={"code": "1"}, headers=wrong).status_code == 401
        mine = {"Authorization": f"Bearer {token}"}
        # the binding is for good: another one is refused
        other = http.post("/bind", json={"state_id": "cs.other"}, headers=mine)
        assert other.status_code == 409
    # the pod's own token Secret holds the same token the session's Secret does
    env_ref = next(e for e in pod.spec.containers[0].env if e.name == "CONTAINER_AUTH_TOKEN")
    pool_secret = env_ref.value_from.secret_key_ref.name
    assert sessions.kube.secret_data(kinds.namespace, pool_secret)["token"] == token
    # its Service reaches the pod it took (the endpoint the operator wrote as it bound it)
    via_service = wait(op, "w1's Service answers", lambda: through_service(kinds, "w1"), 30)
    assert via_service["state"]["state_id"] == w1["stateId"]

    # The pod it took is replaced.
    refilled = wait(
        op, "the pool refilled", lambda: (r := pool_ready(kinds)) and w1["podName"] not in r and r
    )
    assert len(refilled) == POOL

    # A session whose settings no pool serves starts cold, in a pod of its own.
    kinds.create("codesessions", "c1", {"workspaceRef": WORKSPACE, "defaultTimeout": "10s"})
    c1 = wait(op, "c1 Ready", lambda: _ready(kinds, "c1"))["status"]
    assert c1["podName"] == "c1-session"
    via_service = wait(op, "c1's Service answers", lambda: through_service(kinds, "c1"), 30)
    assert via_service["state"]["state_id"] == c1["stateId"]
    # (and it shares the workspace's storage with the bound session)
    assert run(sessions, "c1", "artifacts.load('w1-note')") == marker
    assert set(pool_pods(kinds)) == set(refilled)  # the pool was not touched

    # Nothing of w1 is visible to the next session that takes a pod.
    assert run(sessions, "w1", "import subprocess\nopen('/tmp/w1-file', 'w').write('w1')\n"
               "subprocess.Popen(['sleep', '600'])\nw1_secret = 'w1 only'\n1") == 1  # fmt: skip
    kinds.delete("codesessions", "w1")
    wait(op, "w1's pod gone", lambda: not pod_exists(kinds, w1["podName"]) or None)
    kinds.create("codesessions", "w2", {"workspaceRef": WORKSPACE})
    w2 = wait(op, "w2 Ready", lambda: _ready(kinds, "w2"), timeout=60)["status"]
    assert w2["podName"] in refilled and w2["podName"] != w1["podName"]
    seen = run(
        sessions,
        "w2",
        "import os\n"
        "procs = [open(f'/proc/{p}/cmdline').read() for p in os.listdir('/proc') if p.isdigit()]\n"
        "['w1_secret' in globals(), 'x' in globals(), os.path.exists('/tmp/w1-file'), "
        "any('sleep' in c for c in procs)]",
    )
    assert seen == [False, False, False, False]
    assert w1["podName"] not in pool_pods(kinds)

    # New defaults: the pool's pods roll; the bound pods stay.
    before = set(wait(op, "the pool refilled again", lambda: pool_ready(kinds)))
    kinds.patch("workspaces", WORKSPACE, {"spec": {"sessionDefaults": {"defaultTimeout": "20s"}}})

    def rolled() -> dict[str, Any] | None:
        ready = pool_ready(kinds)
        return ready if ready and not set(ready) & before else None

    new_pool = wait(op, "the pool's pods rolled", rolled)
    for member in new_pool.values():
        env_vars = {e.name: e.value for e in member.spec.containers[0].env}
        assert env_vars["DEFAULT_TIMEOUT"] == "20"
    assert pod_exists(kinds, w2["podName"]) and pod_exists(kinds, "c1-session")
    # the session created before the change is not served by the new pool: c2, of the
    # new defaults, is
    kinds.create("codesessions", "c2", {"workspaceRef": WORKSPACE, "defaultTimeout": "20s"})
    c2 = wait(op, "c2 Ready", lambda: _ready(kinds, "c2"), timeout=60)["status"]
    assert c2["podName"] in new_pool

    # A suspended session that resumes takes a warm pod, with its variables.
    assert run(sessions, "c2", "kept = [1, 2, 3]\nlen(kept)") == 3
    kinds.patch("codesessions", "c2", {"spec": {"suspend": True}})
    wait(op, "c2 Suspended", lambda: _phase(kinds, "c2", "Suspended"))
    wait(op, "c2's pod gone", lambda: not pod_exists(kinds, c2["podName"]) or None)
    wait(op, "the pool ready for the resume", lambda: pool_ready(kinds))
    kinds.patch("codesessions", "c2", {"spec": {"suspend": False}})
    resumed = wait(op, "c2 Ready after resume", lambda: _ready(kinds, "c2"), timeout=60)["status"]
    # A pool pod, claimed for c2 (the pool may have replaced a member between the list
    # above and the claim: any pool pod will do, a cold one would be c2-session).
    taken = kinds.core.read_namespaced_pod(resumed["podName"], kinds.namespace)
    assert resumed["podName"] != "c2-session"
    assert taken.metadata.labels.get("codemode.dev/warm") == "c2"
    assert run(sessions, "c2", "sum(kept)") == 6
