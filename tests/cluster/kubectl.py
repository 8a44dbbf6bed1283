"""Run the pinned kubectl against a cluster (no system kubectl is trusted)."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile

from . import paths
from .layout import Layout


def isolate_discovery_cache() -> None:
    """Give kubectl and helm (children of this process) a discovery cache of their own.

    Both cache API discovery under ~/.kube/cache for hours, and a cache written before our
    CRDs were installed hides them: `kubectl get codemode` or `auth can-i` on a codemode
    kind then fail. Pair with forget_discovery() after installing CRDs.
    """
    os.environ["KUBECACHEDIR"] = tempfile.mkdtemp(prefix="codemode-kubecache-")


def forget_discovery() -> None:
    """Drop what kubectl and helm learnt of the API (call after changing CRDs)."""
    cache = os.environ.get("KUBECACHEDIR")
    if cache and "codemode-kubecache-" in cache:
        shutil.rmtree(cache, ignore_errors=True)


def kubectl(lay: Layout, *args: str, stdin: str | None = None, check: bool = True) -> str:
    """Run kubectl with the admin kubeconfig and return its stdout."""
    proc = subprocess.run(
        [str(paths.binary("kubectl")), f"--kubeconfig={lay.kubeconfig}", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if check and proc.returncode != 0:
        raise RuntimeError(f"kubectl {' '.join(args)} failed: {proc.stderr.strip()}")
    return proc.stdout


def apply(lay: Layout, manifest: str) -> None:
    kubectl(lay, "apply", "-f", "-", stdin=manifest)


def node_ready(lay: Layout) -> bool:
    """Whether the layout's node reports Ready (kwok's fake node or the real kubelet)."""
    out = kubectl(
        lay,
        "get",
        "node",
        lay.node_name,
        "-o",
        "jsonpath={.status.conditions[?(@.type=='Ready')].status}",
        check=False,
    )
    return out.strip() == "True"
