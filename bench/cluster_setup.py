"""What the cluster benchmarks share: the node cluster (started if needed) with our
images, a redis-server on the node's host address, the operator on this host, and one
Workspace in a temporary namespace."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from codemode_operator.sessions import Sessions  # noqa: E402

from tests.cluster import images, lifecycle  # noqa: E402
from tests.cluster.layout import NODE_HOST_IP, layout  # noqa: E402
from tests.conftest import free_port, wait_for_port  # noqa: E402
from tests.k8s.operator_fixture import (  # noqa: E402
    Kinds,
    OperatorProcess,
    install_crds,
    temp_namespace,
    wait_for,
)


@dataclass
class Bench:
    kinds: Kinds
    sessions: Sessions
    operator: OperatorProcess
    namespace: str
    kubeconfig: Path


@contextlib.contextmanager
def cluster_workspace(
    workspace: str,
    max_sessions: int,
    operator_env: dict[str, str] | None = None,
    workspace_spec: dict[str, Any] | None = None,
) -> Iterator[Bench]:
    lay = layout("node")
    if not lifecycle.is_up(lay):
        lifecycle.up("node")
    images.build_project_images()
    lifecycle.import_images_if_up()

    from kubernetes import config

    api: Any = config.new_client_from_config(config_file=str(lay.kubeconfig))  # type: ignore[no-untyped-call]
    install_crds(lay.kubeconfig, api)
    port = free_port()
    workdir = tempfile.mkdtemp(prefix="codemode-bench-redis-")
    redis_proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", f"127.0.0.1 {NODE_HOST_IP}",
         "--requirepass", "bench-admin", "--save", "", "--appendonly", "no", "--dir", workdir],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        wait_for_port(port)
        with temp_namespace(api, f"bench-{workspace}") as namespace:
            kinds = Kinds(api, namespace)
            env = {"CODEMODE_SESSION_IMAGE": images.SESSION, **(operator_env or {})}
            with OperatorProcess(lay.kubeconfig, [namespace], env=env) as op:
                kinds.create(
                    "workspaces",
                    workspace,
                    {
                        "redis": {"url": f"redis://:bench-admin@{NODE_HOST_IP}:{port}/0"},
                        "limits": {"maxSessions": max_sessions},
                        **(workspace_spec or {}),
                    },
                )
                wait_for(
                    lambda: (kinds.status("workspaces", workspace) or {}).get("credentialsSecret"),
                    60,
                    "workspace ready",
                    op=op,
                )
                sessions = Sessions(namespace=namespace, api=api)
                try:
                    yield Bench(kinds, sessions, op, namespace, lay.kubeconfig)
                finally:
                    sessions.close()
    finally:
        redis_proc.terminate()
        redis_proc.wait(10)
        shutil.rmtree(workdir, ignore_errors=True)
