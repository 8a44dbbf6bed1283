"""A Workspace's kstatus conditions, written by the real operator on the real API server,
through an outage (Reconciling), a configuration only a person can fix (Stalled) and the
fix (Current), checked on every version of the object the watch delivers.

The CodeSession half needs a real kubelet (an image that cannot be had): it is in
tests/e2e/test_kstatus_nodes.py. WorkflowLibrary's Stalled and Reconciling are in
tests/k8s/test_operator_reconcile.py.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import free_port
from tests.k8s.kstatus import History, check_history, kstatus, progress_path, wait_kstatus
from tests.k8s.operator_env import Env

pytestmark = pytest.mark.k8s


def conditions(obj: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in obj["status"]["conditions"]}


def test_workspace_reconciling_then_stalled_then_current(env: Env) -> None:
    name = "ws-kstatus"
    down = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    with History(env.api, "workspaces", env.ns, name) as history:
        env.workspace(name, redis={"url": down})

        # An outage may pass by itself: the operator keeps trying (Reconciling).
        obj = wait_kstatus(
            env,
            "workspaces",
            name,
            ready=("False", "RedisUnreachable"),
            reconciling=("True", "Progressing"),
            stalled=("False", "NotStalled"),
        )
        assert obj["metadata"]["generation"] == 1
        conds = conditions(obj)
        assert conds["Reconciling"]["message"] == conds["Ready"]["message"]
        assert "127.0.0.1" in conds["Ready"]["message"]
        assert obj["status"]["redisReachable"] is False

        # A Secret that does not exist needs someone to create it or change the spec.
        env.kinds.patch(
            "workspaces",
            name,
            {"spec": {"redis": {"url": None, "urlSecretRef": {"name": "absent", "key": "url"}}}},
        )
        obj = wait_kstatus(
            env,
            "workspaces",
            name,
            ready=("False", "RedisConfigInvalid"),
            reconciling=("False", "RedisConfigInvalid"),
            stalled=("True", "RedisConfigInvalid"),
        )
        assert obj["metadata"]["generation"] == 2
        conds = conditions(obj)
        assert "'absent'" in conds["Stalled"]["message"]
        assert conds["Stalled"]["message"] == conds["Ready"]["message"]

        # The fix: a Redis that answers.
        env.kinds.patch(
            "workspaces", name, {"spec": {"redis": {"urlSecretRef": None, "url": env.redis.url}}}
        )
        obj = wait_kstatus(
            env,
            "workspaces",
            name,
            ready=("True", "Provisioned"),
            reconciling=("False", "Provisioned"),
            stalled=("False", "NotStalled"),
        )
        assert obj["metadata"]["generation"] == 3
        assert {c["observedGeneration"] for c in obj["status"]["conditions"]} == {3}
        assert obj["status"]["redisReachable"] is True
        assert obj["status"]["credentialsSecret"] == f"{name}-redis"

        # Every version the API server held on the way, not only those polled above.
        versions = check_history(history)
    assert progress_path(versions) == ["Reconciling", "Stalled", "Current"], [
        (v["metadata"]["resourceVersion"], kstatus(v)) for v in versions
    ]
