"""``up``, ``down`` and ``status`` of a cluster mode."""

from __future__ import annotations

import time

from . import build, controlplane, kwok, node, procs, wait
from .layout import Layout, Mode, layout

# Stop order: consumers before what they depend on.
STOP_ORDER = (
    "kwok",
    "coredns",
    "kube-proxy",
    "kubelet",
    "containerd",
    "kube-scheduler",
    "kube-controller-manager",
    "kube-apiserver",
    "etcd",
)


def required_binaries(mode: Mode) -> list[str]:
    base = ["etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl"]
    if mode == "control-plane":
        return [*base, "kwok"]
    return [*base, "kubelet", "kube-proxy", "coredns"]


def is_up(lay: Layout) -> bool:
    """All started processes alive and the API server ready."""
    names = procs.names(lay.run)
    if "kube-apiserver" not in names or any(procs.running_pid(lay.run, n) is None for n in names):
        return False
    try:
        code, _ = wait.https_get(
            f"{lay.server}/readyz",
            ca=lay.pki / "ca.crt",
            cert=(lay.pki / "admin.crt", lay.pki / "admin.key"),
        )
    except OSError:
        return False
    return code == 200


def up(mode: Mode) -> float:
    """Start ``mode`` (or reuse it if already healthy); return seconds taken."""
    lay = layout(mode)
    if is_up(lay):
        print(f"{mode}: already up; kubeconfig {lay.kubeconfig}")
        return 0.0
    missing = [b for b in required_binaries(mode) if not build.is_built(b)]
    if missing:
        raise SystemExit(f"missing binaries {missing}; run: python -m tests.cluster build")
    down(mode, quiet=True)
    start = time.monotonic()
    try:
        if mode == "node":
            node.prepare_host(lay)
        controlplane.start(lay)
        if mode == "control-plane":
            kwok.start(lay)
        else:
            node.start(lay)
    except BaseException:
        down(mode, quiet=True)
        raise
    seconds = time.monotonic() - start
    (lay.run / "up-seconds").write_text(f"{seconds:.1f}\n")
    print(f"{mode}: up in {seconds:.1f}s; kubeconfig {lay.kubeconfig}")
    return seconds


def down(mode: Mode, quiet: bool = False) -> None:
    """Stop every process this mode started and undo its host changes."""
    lay = layout(mode)
    if mode == "node":
        node.teardown_workloads(lay)
    for name in STOP_ORDER:
        procs.stop(lay.run, name)
    for name in procs.names(lay.run):
        procs.stop(lay.run, name)
    if mode == "node":
        node.teardown_host(lay)
    if not quiet:
        print(f"{mode}: down")


def status(mode: Mode) -> bool:
    lay = layout(mode)
    names = procs.names(lay.run)
    healthy = is_up(lay)
    state = "up" if healthy else ("degraded" if names else "down")
    print(f"{mode}: {state}")
    if names:
        print(f"  kubeconfig: {lay.kubeconfig}")
        print(f"  server:     {lay.server}")
    for name in names:
        pid = procs.running_pid(lay.run, name)
        alive = f"pid {pid}" if pid else "DEAD"
        print(f"  {name:<24} {alive:<10} log {procs.log_file(lay.run, name)}")
    return healthy
