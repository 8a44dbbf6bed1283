"""`up` repairs a control-plane cluster that lacks a component.

An ``up`` killed halfway leaves some components without a PID file; the next
``up`` used to see the API server ready and report "already up". Named to run
after the other k8s tests, since the repair restarts the session's cluster.
"""

from __future__ import annotations

import os

import pytest
from kubernetes import client

from tests.cluster import lifecycle, procs
from tests.cluster.layout import layout
from tests.cluster.pytest_plugin import Cluster
from tests.k8s.operator_fixture import wait_for

pytestmark = pytest.mark.k8s


def test_up_restarts_a_cluster_missing_a_component(
    k8s_cluster: Cluster, capsys: pytest.CaptureFixture[str]
) -> None:
    if os.environ.get("CODEMODE_KUBECONFIG"):
        pytest.skip("an external cluster (kind) is not ours to restart")
    lay = layout("control-plane")
    assert lifecycle.is_up(lay)
    procs.stop(lay.run, "kube-scheduler")  # as if `up` died before starting it
    assert not procs.pid_file(lay.run, "kube-scheduler").exists()

    assert lifecycle.missing(lay) == ["kube-scheduler"]
    assert lifecycle.is_up(lay) is False
    assert lifecycle.status("control-plane") is False
    assert "kube-scheduler" in capsys.readouterr().out

    assert lifecycle.up("control-plane") > 0  # restarted, not "already up"
    assert lifecycle.is_up(lay) and procs.running_pid(lay.run, "kube-scheduler")
    core = client.CoreV1Api(k8s_cluster.api_client())
    wait_for(lambda: core.read_namespace("default") or None, 30, "the API again after up")
