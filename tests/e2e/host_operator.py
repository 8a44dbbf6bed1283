"""What most node-cluster tests set up first: the operator running on the host, watching a
test namespace, with the Redis admin URL in a Secret and one Workspace that uses it.

One place for it, so a change to how tests start the operator or describe a Workspace
is made once."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from codemode_operator.sessions import Sessions

from tests.cluster.pytest_plugin import Cluster
from tests.k8s.operator_fixture import Kinds, OperatorProcess, install_crds, wait_for

ADMIN_SECRET = "redis-admin"


def admin_secret(kinds: Kinds, redis_url: str) -> dict[str, Any]:
    """The Redis admin URL in a Secret; the Workspace's `redis` field that points at it."""
    kinds.core.create_namespaced_secret(
        kinds.namespace, {"metadata": {"name": ADMIN_SECRET}, "stringData": {"url": redis_url}}
    )
    return {"urlSecretRef": {"name": ADMIN_SECRET, "key": "url"}}


def workspace_spec(redis: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """A Workspace whose sessions, pods and Redis data go with it when the test ends."""
    return {"redis": redis, "deletionPolicy": "Cascade", "dataPolicy": "Delete", **extra}


def host_operator(
    cluster: Cluster, namespace: str, session_image: str, log_dir: Path, **env: str
) -> OperatorProcess:
    """The operator on the host for `namespace`, checking sessions every second."""
    return OperatorProcess(
        cluster.kubeconfig,
        [namespace],
        log_dir=log_dir,
        env={"CODEMODE_SESSION_IMAGE": session_image, "SESSION_POLL_SECONDS": "1", **env},
    )


@contextlib.contextmanager
def operator_workspace(
    cluster: Cluster,
    namespace: str,
    session_image: str,
    redis_url: str,
    log_dir: Path,
    workspace: str,
    **spec: Any,
) -> Iterator[tuple[Kinds, Sessions, OperatorProcess]]:
    """CRDs installed, the operator running, the Workspace `workspace` (with `spec`'s
    extra fields) created; yields the test's handles and closes the Sessions client."""
    api = cluster.api_client()
    install_crds(cluster.kubeconfig, api)
    kinds = Kinds(api, namespace)
    redis = admin_secret(kinds, redis_url)
    with host_operator(cluster, namespace, session_image, log_dir) as operator:
        kinds.create("workspaces", workspace, workspace_spec(redis, **spec))
        sessions = Sessions(namespace=namespace, api=api)
        try:
            yield kinds, sessions, operator
        finally:
            sessions.close()


def run(sessions: Sessions, name: str, code: str) -> Any:
    """`code`'s value in the CodeSession `name` (a server session opened and ended)."""
    with sessions.connect(name) as client:
        result = client.execute(code)
    assert result.error is None, result.error
    return result.value


def wait(op: OperatorProcess, what: str, predicate: Callable[[], Any], timeout: float = 180) -> Any:
    return wait_for(predicate, timeout, what, op=op)
