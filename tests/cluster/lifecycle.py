"""``up``, ``down`` and ``status`` of a cluster mode."""

from __future__ import annotations

import time
from collections.abc import Callable

from . import build, controlplane, hostdeps, images, kwok, locks, node, ports, procs, wait
from .layout import Layout, Mode, layout

# Stop order: consumers before what they depend on.
STOP_ORDER = (
    "kwok",
    "local-path-provisioner",
    "coredns",
    "kube-router",
    "kube-proxy",
    "kubelet",
    "containerd",
    "kube-scheduler",
    "kube-controller-manager",
    "kube-apiserver",
    "etcd",
)


# What a healthy cluster of each mode runs (the names of their PID files).
CONTROL_PLANE = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler")
COMPONENTS: dict[Mode, tuple[str, ...]] = {
    "control-plane": (*CONTROL_PLANE, "kwok"),
    "node": (
        "containerd",
        *CONTROL_PLANE,
        "kubelet",
        "kube-proxy",
        "kube-router",
        "coredns",
        "local-path-provisioner",
    ),
}
# A running process is not enough for these: each must also pass its check.
HEALTH: dict[Mode, dict[str, Callable[[], bool]]] = {
    "control-plane": {},
    "node": {"kube-router": node.kube_router_enforcing},
}


def required_binaries(mode: Mode) -> list[str]:
    base = ["etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl"]
    if mode == "control-plane":
        return [*base, "kwok"]
    return [*base, "kubelet", "kube-proxy", "kube-router", "coredns"]


def ensure_prerequisites(mode: Mode) -> None:
    """What a fresh machine lacks: Debian packages, binaries, base images.
    Slow the first time (see README), cached afterwards."""
    hostdeps.install(mode)
    missing = [b for b in required_binaries(mode) if not build.is_built(b)]
    if missing:
        print(f"building missing binaries {missing} (cold build takes minutes)", flush=True)
        build.build(missing)
    if mode == "control-plane" and not build.kwok_stages_path().exists():
        build.build(["kwok"])
    if mode == "node":
        images.build_defaults()
        if not all(images.archive_path(tag).exists() for _, tag in images.PROJECT_IMAGES):
            images.build_project_images()
        elif images.project_images_stale():
            print("note: sources changed since the last image build; run: images --project")


def missing(lay: Layout) -> list[str]:
    """Components of the mode that were never started (an ``up`` that was
    interrupted) or are no longer running."""
    started = procs.names(lay.run)
    return [
        n
        for n in dict.fromkeys([*COMPONENTS[lay.mode], *started])
        if procs.running_pid(lay.run, n) is None
    ]


def unhealthy(lay: Layout) -> list[str]:
    """Running components that fail their own check (kube-router not enforcing)."""
    return [
        n
        for n, check in HEALTH[lay.mode].items()
        if procs.running_pid(lay.run, n) is not None and not check()
    ]


def is_up(lay: Layout) -> bool:
    """Every component of the mode running and healthy, and the API server ready."""
    if missing(lay) or unhealthy(lay):
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
    with locks.locked(f"cluster-{mode}"):
        return _up(mode)


def _up(mode: Mode) -> float:
    lay = layout(mode)
    if is_up(lay):
        print(f"{mode}: already up; kubeconfig {lay.kubeconfig}")
        return 0.0
    ensure_prerequisites(mode)
    _down(mode, quiet=True)
    ports.ensure_free(lay)
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
        _down(mode, quiet=True)
        raise
    seconds = time.monotonic() - start
    (lay.run / "up-seconds").write_text(f"{seconds:.1f}\n")
    print(f"{mode}: up in {seconds:.1f}s; kubeconfig {lay.kubeconfig}")
    return seconds


def down(mode: Mode, quiet: bool = False) -> None:
    """Stop every process this mode started and undo its host changes."""
    with locks.locked(f"cluster-{mode}"):
        _down(mode, quiet)


def _down(mode: Mode, quiet: bool) -> None:
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
    if not names:
        return healthy
    sick = unhealthy(lay)
    for name in dict.fromkeys([*COMPONENTS[mode], *names]):
        pid = procs.running_pid(lay.run, name)
        alive = f"pid {pid}" if pid else ("DEAD" if name in names else "NOT STARTED")
        if name in sick:
            alive = f"UNHEALTHY (pid {pid})"
        print(f"  {name:<24} {alive:<11} log {procs.log_file(lay.run, name)}")
    if not healthy:
        print(f"  run `python -m tests.cluster up --mode {mode}` to restart it")
    return healthy


def import_images_if_up() -> None:
    """Make freshly built images visible to a running node cluster at once."""
    if procs.running_pid(layout("node").run, "containerd") is not None:
        images.import_all(node.ctr)
