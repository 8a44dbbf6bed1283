"""A CodeSession's kstatus conditions on the node cluster, where a real kubelet reports why
a container waits: a session whose image cannot be had is Stalled with the pod's own
waiting reason (no retry of the operator's can fix it), and a session whose server
answers is Current. Every version of each session the watch delivers keeps the kstatus
rules (tests/k8s/kstatus.py); the Workspace half is tests/k8s/test_kstatus.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.cluster.pytest_plugin import Cluster
from tests.e2e.hostredis import HostRedis
from tests.k8s.kstatus import KSTATUS, History, check_history, kstatus, progress_path, wait_kstatus
from tests.k8s.operator_env import Env, operator_env

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def env(
    e2e_cluster: Cluster,
    project_images: dict[str, str],
    host_redis: HostRedis,
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Env]:
    with operator_env(
        e2e_cluster,
        host_redis,
        request,
        tmp_path_factory.mktemp("operator"),
        "t-kstatus-nodes",
        {"CODEMODE_SESSION_IMAGE": project_images["session"]},
    ) as made:
        yield made


def _waiting_reason(env: Env, pod_name: str) -> str | None:
    pod = env.pod(pod_name)
    for cs in (pod.status.container_statuses or []) if pod is not None else []:
        if cs.state is not None and cs.state.waiting is not None:
            return str(cs.state.waiting.reason)
    return None


@pytest.mark.parametrize(
    ("policy", "image", "reasons"),
    [
        # the image is not on the node and may not be pulled
        ("Never", "localhost/codemode/absent:kstatus", {"ErrImageNeverPull"}),
        # a registry that refuses the connection
        (
            "IfNotPresent",
            "127.0.0.1:1/codemode/absent:kstatus",
            {"ErrImagePull", "ImagePullBackOff"},
        ),
    ],
    ids=["Never", "IfNotPresent"],
)
def test_session_whose_image_cannot_be_had_is_stalled(
    env: Env, policy: str, image: str, reasons: set[str]
) -> None:
    workspace, name = f"ws-{policy.lower()}", f"s-{policy.lower()}"
    env.workspace(workspace, sessionDefaults={"imagePullPolicy": policy})
    env.ready("workspaces", workspace, timeout=60)
    with History(env.api, "codesessions", env.ns, name) as history:
        env.kinds.create("codesessions", name, {"workspaceRef": workspace, "image": image})
        seen: dict[str, Any] = {}

        def stalled_on_the_pods_reason() -> dict[str, Any] | None:
            obj = env.kinds.get("codesessions", name)
            seen.update(session=kstatus(obj), pod=_waiting_reason(env, f"{name}-session"))
            reason = seen["pod"]
            if reason not in reasons:
                return None
            want = {
                "Ready": ("False", reason),
                "Reconciling": ("False", reason),
                "Stalled": ("True", reason),
            }
            return obj if seen["session"] == want else None

        try:
            obj = env.wait(stalled_on_the_pods_reason, 120, f"{name} Stalled on {reasons}")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\nlast seen: {seen}") from None
        status = obj["status"]
        assert (status["phase"], status["reason"]) == ("Starting", seen["pod"])
        assert status["observedGeneration"] == obj["metadata"]["generation"]
        assert "endpoint" not in status
        versions = check_history(history)
    # From the pod's start to the wait it cannot get out of; never Ready on the way.
    assert progress_path(versions) == ["Reconciling", "Stalled"], [
        (v["metadata"]["resourceVersion"], kstatus(v)) for v in versions
    ]


def test_session_whose_server_answers_is_current(env: Env) -> None:
    env.workspace("ws-ok")
    env.ready("workspaces", "ws-ok", timeout=60)
    with History(env.api, "codesessions", env.ns, "s-ok") as history:
        env.kinds.create("codesessions", "s-ok", {"workspaceRef": "ws-ok"})
        obj = wait_kstatus(
            env,
            "codesessions",
            "s-ok",
            timeout=180,
            ready=("True", "PodReady"),
            reconciling=("False", "PodReady"),
            stalled=("False", "NotStalled"),
        )
        status = obj["status"]
        assert status["phase"] == "Ready"
        assert status["endpoint"] == f"http://s-ok-session.{env.ns}.svc:8080"
        assert obj["metadata"]["generation"] == 1
        kstatus_conditions = [c for c in status["conditions"] if c["type"] in KSTATUS]
        assert {c["observedGeneration"] for c in kstatus_conditions} == {1}
        versions = check_history(history)
    assert progress_path(versions) == ["Reconciling", "Current"], [
        (v["metadata"]["resourceVersion"], kstatus(v)) for v in versions
    ]
