"""Host programs each mode needs, and how to get them on Debian."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from .layout import Mode

# program -> Debian package providing it
NODE_PROGRAMS = {
    "containerd": "containerd",
    "ctr": "containerd",
    "runc": "runc",
    "iptables": "iptables",
    "conntrack": "conntrack",
    "ip": "iproute2",
}
IMAGE_PROGRAMS = {"buildah": "buildah", "debootstrap": "debootstrap", "gcc": "gcc"}
CNI_PLUGINS = Path("/usr/lib/cni/bridge")
CNI_PACKAGE = "containernetworking-plugins"


def missing_packages(mode: Mode) -> list[str]:
    """Debian packages still to install for ``mode`` (and for building images)."""
    if mode == "control-plane":
        return []
    wanted = {**NODE_PROGRAMS, **IMAGE_PROGRAMS}
    missing = {pkg for prog, pkg in wanted.items() if shutil.which(prog) is None}
    if not CNI_PLUGINS.exists():
        missing.add(CNI_PACKAGE)
    return sorted(missing)


def install(mode: Mode) -> None:
    """apt-get install what ``mode`` lacks (root, Debian only)."""
    pkgs = missing_packages(mode)
    if not pkgs:
        return
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-q"], check=True, env=env)
    subprocess.run(["apt-get", "install", "-y", "-q", *pkgs], check=True, env=env)


def go_binary() -> str | None:
    """Kubernetes 1.34 needs Go >= 1.24; Debian bookworm's golang is too old."""
    return shutil.which("go") or (
        "/usr/local/go/bin/go" if Path("/usr/local/go/bin/go").exists() else None
    )
