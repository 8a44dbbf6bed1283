"""Host programs each mode needs, and how to get them on Debian."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import urllib.request
import zipfile
from pathlib import Path

from . import paths, versions
from .layout import Mode

# program -> Debian package providing it
NODE_PROGRAMS = {
    "containerd": "containerd",
    "ctr": "containerd",
    "runc": "runc",
    "iptables": "iptables",
    "conntrack": "conntrack",
    "ipset": "ipset",  # kube-router's NetworkPolicy firewall
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


def _go_version_ok(go: str) -> bool:
    out = subprocess.run([go, "env", "GOVERSION"], capture_output=True, text=True).stdout
    m = re.match(r"go1\.(\d+)", out.strip())
    return m is not None and int(m.group(1)) >= 24


def go_binary() -> str:
    """Kubernetes 1.34 needs Go >= 1.24 and Debian bookworm's golang is too
    old, so fall back to the pinned toolchain from the Go module proxy."""
    for candidate in (shutil.which("go"), "/usr/local/go/bin/go"):
        if candidate and Path(candidate).exists() and _go_version_ok(candidate):
            return candidate
    return str(_fetch_toolchain())


def _fetch_toolchain() -> Path:
    version = versions.GO_TOOLCHAIN
    root = paths.cache_root() / f"go-{version}"
    module = f"v0.0.1-{version}.linux-amd64"
    go = root / f"golang.org/toolchain@{module}" / "bin" / "go"
    if go.exists():
        return go
    url = f"https://proxy.golang.org/golang.org/toolchain/@v/{module}.zip"
    print(f"fetching Go toolchain {url}", flush=True)
    root.mkdir(parents=True, exist_ok=True)
    archive = root / "toolchain.zip"
    urllib.request.urlretrieve(url, archive)
    with zipfile.ZipFile(archive) as zf:
        zf.extractall(root)
    archive.unlink()
    # Module zips carry no file modes; make the toolchain's programs executable.
    tree = go.parent.parent
    for exe in [*(tree / "bin").iterdir(), *(tree / "pkg" / "tool").glob("*/*")]:
        exe.chmod(0o755)
    return go
