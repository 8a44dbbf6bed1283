"""Where the cluster keeps its builds and runtime state (outside the repo)."""

from __future__ import annotations

import os
from pathlib import Path

from . import versions


def cache_root() -> Path:
    """The cache root; builds are slow, so they live outside any checkout."""
    return Path(os.environ.get("CODEMODE_CACHE", "/var/cache/codemode"))


def k8s_bin() -> Path:
    return cache_root() / f"k8s-{versions.KUBERNETES}" / "bin"


def etcd_bin() -> Path:
    return cache_root() / f"etcd-{versions.ETCD}" / "bin"


def kwok_bin() -> Path:
    return cache_root() / f"kwok-{versions.KWOK}" / "bin"


def coredns_bin() -> Path:
    return cache_root() / f"coredns-{versions.COREDNS}" / "bin"


def kube_router_bin() -> Path:
    return cache_root() / f"kube-router-{versions.KUBE_ROUTER}" / "bin"


def binary(name: str) -> Path:
    """Path of a built binary by its name (kube-apiserver, etcd, kwok, ...)."""
    if name == "etcd":
        return etcd_bin() / name
    if name == "kwok":
        return kwok_bin() / name
    if name == "coredns":
        return coredns_bin() / name
    if name == "kube-router":
        return kube_router_bin() / name
    return k8s_bin() / name


def run_dir(mode: str) -> Path:
    """Runtime state of one cluster mode: PKI, kubeconfig, logs, PID files, data."""
    return cache_root() / "run" / mode


def images_dir() -> Path:
    return cache_root() / "images"
