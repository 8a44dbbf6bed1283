"""A kwok-simulated node for control-plane mode: pods get scheduled and become
Running without any container runtime, so operator tests stay fast."""

from __future__ import annotations

import json

from . import build, paths, procs, wait
from .kubectl import apply, kubectl, node_ready
from .layout import Layout

# Far more than any test or benchmark asks for: scheduling on the simulated
# node should fail only for reasons a test means to provoke.
CAPACITY = {"cpu": "1k", "memory": "4Ti", "ephemeral-storage": "100Ti", "pods": "10k"}


def _node_manifest(name: str) -> str:
    node = {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": {"node.alpha.kubernetes.io/ttl": "0", "kwok.x-k8s.io/node": "fake"},
            "labels": {
                "kubernetes.io/arch": "amd64",
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "type": "kwok",
            },
        },
        "status": {"allocatable": CAPACITY, "capacity": CAPACITY},
    }
    return json.dumps(node)


def start(lay: Layout) -> None:
    procs.start(
        lay.run,
        "kwok",
        [
            str(paths.binary("kwok")),
            f"--kubeconfig={lay.kubeconfig}",
            f"--config={build.kwok_stages_path()}",
            f"--manage-single-node={lay.node_name}",
            "--server-address=",
        ],
    )
    apply(lay, _node_manifest(lay.node_name))
    # apply ignores status of an existing node; set capacity explicitly.
    status = {"status": {"allocatable": CAPACITY, "capacity": CAPACITY}}
    kubectl(
        lay,
        "patch",
        "node",
        lay.node_name,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps(status),
    )

    wait.until(lay.run, "kwok", lambda: node_ready(lay), timeout=30)
