"""Addresses, ports and file locations of each cluster mode.

The two modes use disjoint ports so a control-plane cluster (for ``k8s`` tests)
and a node cluster (for ``e2e`` tests) can run side by side.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from . import paths

Mode = Literal["control-plane", "node"]
MODES: tuple[Mode, ...] = ("control-plane", "node")

SERVICE_CIDR = "10.96.0.0/16"
KUBERNETES_SERVICE_IP = "10.96.0.1"
POD_CIDR = "10.244.0.0/24"
BRIDGE = "cm-cni0"
# Node mode: an address added to ``lo`` that the API server, kubelet and
# CoreDNS bind to. Pods reach it through their bridge gateway; nothing is
# exposed on the machine's real interfaces.
NODE_HOST_IP = "10.250.250.1"
CLUSTER_DOMAIN = "cluster.local"


@dataclass(frozen=True)
class Layout:
    mode: Mode
    api_ip: str
    api_port: int
    etcd_port: int
    etcd_peer_port: int
    controller_manager_port: int
    scheduler_port: int
    node_name: str

    @property
    def run(self) -> Path:
        return paths.run_dir(self.mode)

    @property
    def pki(self) -> Path:
        return self.run / "pki"

    @property
    def server(self) -> str:
        return f"https://{self.api_ip}:{self.api_port}"

    @property
    def kubeconfig(self) -> Path:
        """The admin kubeconfig users and tests point at."""
        return self.run / "kubeconfig"

    def component_kubeconfig(self, component: str) -> Path:
        return self.run / "kubeconfigs" / f"{component}.kubeconfig"


def layout(mode: Mode) -> Layout:
    if mode == "control-plane":
        return Layout(mode, "127.0.0.1", 26443, 23790, 23800, 20257, 20259, "kwok-node-0")
    return Layout(mode, NODE_HOST_IP, 6443, 2379, 2380, 10257, 10259, "codemode-node")
