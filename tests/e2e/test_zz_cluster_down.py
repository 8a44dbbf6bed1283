"""`down` leaves nothing of the node cluster behind, and `up` brings it back.

What a user checks after ``python -m tests.cluster down``: no process it started
(components, containerd shims, pod processes), no bridge, no pod network
namespaces, no mounts, no address on ``lo``. Named to run after the other e2e
tests, since it stops the session's cluster; it starts it again before it ends.

On kind (``CODEMODE_KUBECONFIG`` naming tests.cluster's kind cluster) the same for
``python -m tests.cluster kind down``: no node container, no dockerd of ours, none of
Docker's iptables chains or bridges, no routes to kind's ranges, ``ip_forward`` and
``lo`` as they were (kept while the local node cluster runs: it needs them); then
``kind up`` and ``kind load`` bring the cluster back as the session had it.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest
from kubernetes import client

from tests.cluster import kind, lifecycle, node, procs
from tests.cluster.images import BASE
from tests.cluster.layout import BRIDGE, NODE_HOST_IP, layout
from tests.cluster.pytest_plugin import Cluster
from tests.k8s.operator_fixture import wait_for

pytestmark = pytest.mark.e2e


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _shims() -> list[int]:
    needle = str(node.containerd_socket()).encode()
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmdline = (proc / "cmdline").read_bytes()
            except OSError:
                continue
            if b"containerd-shim" in cmdline and needle in cmdline and _alive(int(proc.name)):
                found.append(int(proc.name))
    return found


def _pod_processes() -> list[str]:
    found = []
    for procs_file in Path("/sys/fs/cgroup").glob("*/kubepods/**/cgroup.procs"):
        found += [pid for pid in procs_file.read_text().split() if _alive(int(pid))]
    return found


def _our_mounts(lay_run: Path) -> list[str]:
    prefixes = (str(node.containerd_state()), str(node.containerd_root()), str(lay_run))
    mounts = Path("/proc/mounts").read_text().splitlines()
    return [line for line in mounts if line.split()[1].startswith(prefixes)]


def _sh(*argv: str) -> str:
    return subprocess.run(argv, capture_output=True, text=True, check=False).stdout


def _kind_down_and_up(cluster: Cluster) -> None:
    state = json.loads((kind.run_dir() / "host-state.json").read_text())
    dockerd = procs.running_pid(kind.run_dir(), "dockerd")
    assert dockerd is not None and _alive(dockerd)
    assert kind.node_container() in _sh("docker", "ps", "--format", "{{.Names}}")
    kind.down()
    try:
        assert not _alive(dockerd), f"dockerd {dockerd} still running after kind down"
        assert procs.running_pid(kind.run_dir(), "dockerd") is None
        assert not kind.docker_ok()
        routes = _sh("ip", "-4", "route", "show")
        assert kind.POD_CIDR not in routes and kind.SERVICE_CIDR not in routes, routes
        assert kind._docker_bridges() == []
        for table, chains in kind.DOCKER_CHAINS.items():
            rules = _sh("iptables", "-t", table, "-S").split()
            assert not set(chains) & set(rules), f"{table}: Docker chains left: {rules}"
        assert not (kind.run_dir() / "host-state.json").exists()
        assert not kind.kubeconfig().exists()
        lo = _sh("ip", "-4", "-o", "addr", "show", "dev", "lo")
        forward = Path("/proc/sys/net/ipv4/ip_forward").read_text().strip()
        if not kind._node_cluster_running():
            assert (f"{NODE_HOST_IP}/" in lo) is not state["lo_ip_added"], lo
            assert forward == state["ip_forward"]
        else:  # the local node cluster uses both
            assert f"{NODE_HOST_IP}/" in lo and forward == "1"
    finally:
        kind.up()  # the session's cluster, back with our images for whatever runs next
        kind.load_project_images()
    assert cluster.kubectl("get", "--raw=/readyz").strip() == "ok"


def test_down_stops_everything_it_started_and_undoes_host_changes(e2e_cluster: Cluster) -> None:
    if kind.targets_kind():
        _kind_down_and_up(e2e_cluster)
        return
    if os.environ.get("CODEMODE_KUBECONFIG"):
        pytest.skip("an external cluster is not ours to stop")
    lay = layout("node")
    core = client.CoreV1Api(e2e_cluster.api_client())
    name = f"down-probe-{int(time.time())}"
    core.create_namespaced_pod(
        "default",
        {
            "metadata": {"name": name},
            "spec": {
                "containers": [
                    {
                        "name": "sleep",
                        "image": BASE,
                        "imagePullPolicy": "IfNotPresent",
                        "command": ["sleep", "600"],
                    }
                ],
                "terminationGracePeriodSeconds": 0,
            },
        },
    )
    wait_for(
        lambda: core.read_namespaced_pod(name, "default").status.phase == "Running" or None,
        120,
        "a pod running before down",
    )
    started = {n: procs.running_pid(lay.run, n) for n in procs.names(lay.run)}
    assert {"etcd", "kube-apiserver", "kubelet", "containerd", "coredns"} <= set(started)
    assert all(started.values()) and _shims() and _pod_processes()

    lifecycle.down("node")
    try:
        left = {n: pid for n, pid in started.items() if pid is not None and _alive(pid)}
        assert left == {}, f"processes still running after down: {left}"
        assert _shims() == [], "containerd shims left"
        assert _pod_processes() == [], "pod processes left"
        assert _our_mounts(lay.run) == []
        assert f"{BRIDGE}:" not in _sh("ip", "-o", "link", "show")
        assert not [ns for ns in _sh("ip", "netns", "list").split() if ns.startswith("cni-")]
        assert f"{NODE_HOST_IP}/" not in _sh("ip", "-4", "-o", "addr", "show", "dev", "lo")
        assert procs.names(lay.run) == []
        assert lifecycle.status("node") is False
    finally:
        lifecycle.up("node")  # the session's cluster, back for whatever runs next
    core = client.CoreV1Api(e2e_cluster.api_client())
    wait_for(
        lambda: (
            all(
                c.status == "True"
                for n in core.list_node().items
                for c in n.status.conditions
                if c.type == "Ready"
            )
            or None
        ),
        60,
        "the node Ready again after up",
    )
