"""pytest fixtures for tests that need a real cluster.

Load from the root conftest with ``pytest_plugins = ["tests.cluster.pytest_plugin"]``.
Tests marked ``k8s`` get the control-plane cluster, tests marked ``e2e`` the
node cluster. A cluster already up is reused and left running; one started
here is stopped at session end unless ``CODEMODE_KEEP_CLUSTER=1``.
With ``CODEMODE_KUBECONFIG`` set (e.g. a kind cluster), that cluster serves
both markers and nothing is started or stopped.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from . import lifecycle, paths
from .kubectl import isolate_discovery_cache
from .layout import Mode, layout


def pytest_configure(config: pytest.Config) -> None:
    isolate_discovery_cache()
    config.addinivalue_line(
        "markers", "k8s: needs the control-plane cluster (real etcd + API server, kwok node)"
    )
    config.addinivalue_line(
        "markers", "e2e: needs the node cluster (real kubelet, containerd, kube-proxy, DNS)"
    )


@dataclass(frozen=True)
class Cluster:
    """A running local cluster as tests see it."""

    mode: Mode
    kubeconfig: Path
    node_name: str

    def api_client(self) -> Any:
        """A ``kubernetes.client.ApiClient`` for the admin user."""
        from kubernetes import config

        return config.new_client_from_config(  # type: ignore[no-untyped-call]
            config_file=str(self.kubeconfig)
        )

    def kubectl(self, *args: str, stdin: str | None = None) -> str:
        """The pinned kubectl if built, else the one on PATH (kind users)."""
        built = paths.binary("kubectl")
        binary = str(built) if built.exists() else "kubectl"
        proc = subprocess.run(
            [binary, f"--kubeconfig={self.kubeconfig}", *args],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if proc.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)}: {proc.stderr.strip()}")
        return proc.stdout


def _external_cluster(mode: Mode, kubeconfig: Path) -> Cluster:
    """A cluster someone else runs (kind); its first node stands in for ours."""
    probe = Cluster(mode, kubeconfig, "")
    node = probe.kubectl("get", "nodes", "-o", "jsonpath={.items[0].metadata.name}").strip()
    return Cluster(mode, kubeconfig, node)


def _session_cluster(mode: Mode) -> Iterator[Cluster]:
    external = os.environ.get("CODEMODE_KUBECONFIG")
    if external:
        yield _external_cluster(mode, Path(external))
        return
    lay = layout(mode)
    # Decided under up()'s lock (0.0 means it was already up): a cluster another
    # pytest run or a user started meanwhile is never stopped by this one.
    started = lifecycle.up(mode) > 0.0
    try:
        yield Cluster(mode, lay.kubeconfig, lay.node_name)
    finally:
        if started and os.environ.get("CODEMODE_KEEP_CLUSTER") != "1":
            lifecycle.down(mode)


@pytest.fixture(scope="session")
def k8s_cluster() -> Iterator[Cluster]:
    """The control-plane cluster (etcd, API server, controllers, kwok node)."""
    yield from _session_cluster("control-plane")


@pytest.fixture(scope="session")
def e2e_cluster() -> Iterator[Cluster]:
    """The node cluster, with the base and pause images imported."""
    yield from _session_cluster("node")


@pytest.fixture(scope="session")
def project_images(e2e_cluster: Cluster) -> dict[str, str]:
    """Our session and operator images, rebuilt if a source file changed since
    the last build, and imported into the node cluster. Maps name to image."""
    from . import images, lifecycle

    if not os.environ.get("CODEMODE_KUBECONFIG"):
        images.build_project_images()
        lifecycle.import_images_if_up()
    return {"session": images.SESSION, "operator": images.OPERATOR}


@pytest.fixture
def cluster(request: pytest.FixtureRequest) -> Cluster:
    """The cluster the test's marker asks for (``e2e`` wins over ``k8s``)."""
    if request.node.get_closest_marker("e2e") is not None:
        return request.getfixturevalue("e2e_cluster")  # type: ignore[no-any-return]
    if request.node.get_closest_marker("k8s") is not None:
        return request.getfixturevalue("k8s_cluster")  # type: ignore[no-any-return]
    raise pytest.UsageError(f"{request.node.nodeid} uses a cluster but is not marked k8s or e2e")


@pytest.fixture
def kubeconfig(cluster: Cluster) -> Path:
    return cluster.kubeconfig


@pytest.fixture
def namespace(cluster: Cluster, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace per test, ready for pods (its default service account
    exists), deleted afterwards without waiting."""
    from kubernetes import client

    slug = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")[:40].strip("-")
    name = f"t-{slug}-{uuid.uuid4().hex[:6]}"
    api = client.CoreV1Api(cluster.api_client())
    api.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    deadline = time.monotonic() + 30
    while True:
        try:
            api.read_namespaced_service_account("default", name)
            break
        except client.ApiException as e:
            if e.status != 404 or time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    try:
        yield name
    finally:
        api.delete_namespace(name)
