"""The chart against the real API server (control-plane cluster): every rendered
object passes a server-side dry-run, `helm install`/`upgrade` keep the generated
Redis password (`lookup`), and the operator's RBAC is what it needs and no more
(`kubectl auth can-i` as its ServiceAccount) in both modes."""

from __future__ import annotations

import base64
import subprocess
import uuid
from pathlib import Path

import pytest
import yaml
from kubernetes import client

from tests.cluster.helm import helm_binary
from tests.cluster.pytest_plugin import Cluster
from tests.conftest import RedisServer
from tests.k8s.operator_fixture import (
    Kinds,
    OperatorProcess,
    install_crds,
    kubectl_binary,
    wait_for,
)

pytestmark = pytest.mark.k8s

CHART = Path(__file__).resolve().parents[2] / "helm" / "codemode"


def helm(cluster: Cluster, *args: str) -> str:
    proc = subprocess.run(
        [str(helm_binary()), f"--kubeconfig={cluster.kubeconfig}", *args],
        capture_output=True,
        text=True,
        timeout=300,
    )
    if proc.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)}:\n{proc.stdout}\n{proc.stderr}")
    return proc.stdout


@pytest.mark.parametrize("mode", ["cluster-wide", "namespaced"])
def test_server_side_dry_run(cluster: Cluster, namespace: str, mode: str) -> None:
    values = ["--set", f"watchNamespaces={{{namespace}}}"] if mode == "namespaced" else []
    rendered = helm(
        cluster,
        "template",
        "codemode",
        str(CHART),
        "--namespace",
        namespace,
        "--include-crds",
        *values,
    )
    out = cluster.kubectl("apply", "--dry-run=server", "-f", "-", stdin=rendered)
    for kind in (
        "customresourcedefinition.apiextensions.k8s.io/workspaces.codemode.dev",
        "deployment.apps/codemode-operator",
        "statefulset.apps/codemode-redis",
        "secret/codemode-redis",
        "serviceaccount/codemode",
        "service/codemode-metrics",
        "deployment.apps/codemode-gateway",
        "service/codemode-gateway",
        "serviceaccount/codemode-gateway",
    ):
        assert kind in out, out
    assert ("role.rbac.authorization.k8s.io/codemode-operator" in out) == (mode == "namespaced")


def _can_i(cluster: Cluster, sa: str, verb: str, resource: str, ns: str | None) -> bool:
    where = ["-n", ns] if ns else ["--all-namespaces"]
    if "/" in resource:  # a subresource, not TYPE/NAME
        resource, sub = resource.split("/", 1)
        where.append(f"--subresource={sub}")
    proc = subprocess.run(
        [
            kubectl_binary(),
            f"--kubeconfig={cluster.kubeconfig}",
            "auth",
            "can-i",
            verb,
            resource,
            f"--as={sa}",
            *where,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    return proc.stdout.strip() == "yes"


def test_install_upgrade_keeps_password_and_rbac_is_least_privilege(
    cluster: Cluster, namespace: str
) -> None:
    # The releases below skip the cluster-wide CRDs; RBAC checks on codemode kinds
    # need them served (a fresh cluster has none yet).
    install_crds(cluster.kubeconfig, cluster.api_client())
    core = client.CoreV1Api(cluster.api_client())
    watched = f"{namespace}-w"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=watched)))
    release = "cm"
    try:
        helm(
            cluster,
            "install",
            release,
            str(CHART),
            "--namespace",
            namespace,
            "--skip-crds",
            "--set",
            f"watchNamespaces={{{watched}}}",
        )

        def password() -> str:
            secret = core.read_namespaced_secret("cm-codemode-redis", namespace)
            return base64.b64decode(secret.data["password"]).decode()

        first = password()
        assert len(first) == 32
        helm(
            cluster,
            "upgrade",
            release,
            str(CHART),
            "--namespace",
            namespace,
            "--skip-crds",
            "--reuse-values",
            "--set",
            "operator.logLevel=debug",
        )
        assert password() == first, "helm upgrade must keep the generated Redis password"

        sa = f"system:serviceaccount:{namespace}:cm-codemode"
        for verb, resource in [
            ("create", "pods"),
            ("update", "secrets"),
            ("watch", "jobs.batch"),
            ("patch", "codesessions.codemode.dev/status"),
            ("create", "networkpolicies.networking.k8s.io"),
            ("create", "events"),
        ]:
            wait_for(
                lambda v=verb, r=resource: _can_i(cluster, sa, v, r, watched),
                20,  # type: ignore[misc]
                f"{sa} may {verb} {resource}",
            )
            assert not _can_i(cluster, sa, verb, resource, "default"), (verb, resource, "default")
        assert _can_i(cluster, sa, "list", "customresourcedefinitions.apiextensions.k8s.io", None)
        assert _can_i(cluster, sa, "watch", "namespaces", None)
        for verb, resource, ns in [
            ("create", "pods/exec", watched),
            ("delete", "customresourcedefinitions", None),
            ("list", "nodes", None),
            ("create", "roles", watched),
            ("get", "secrets", namespace),
            # least privilege: verbs the operator never calls
            ("delete", "secrets", watched),
            ("list", "secrets", watched),
            ("get", "services", watched),
            ("delete", "networkpolicies.networking.k8s.io", watched),
            ("update", "codesessions.codemode.dev", watched),
            ("create", "events.events.k8s.io", watched),
        ]:
            assert not _can_i(cluster, sa, verb, resource, ns), (verb, resource, ns)

        # The gateway's own ServiceAccount: reviews, and reads of sessions where they run.
        gw = f"system:serviceaccount:{namespace}:cm-codemode-gateway"
        for verb, resource, ns in [
            ("create", "tokenreviews.authentication.k8s.io", None),
            ("create", "subjectaccessreviews.authorization.k8s.io", None),
            ("get", "codesessions.codemode.dev", watched),
            ("create", "codesessions.codemode.dev", watched),
            ("patch", "codesessions.codemode.dev", watched),
            ("get", "secrets", watched),
            ("get", "pods", watched),
        ]:
            assert _can_i(cluster, gw, verb, resource, ns), (gw, verb, resource, ns)
        for verb, resource, ns in [
            ("get", "secrets", "default"),
            ("list", "secrets", watched),
            ("delete", "codesessions.codemode.dev", watched),
            ("create", "pods", watched),
            ("create", "pods/exec", watched),
        ]:
            assert not _can_i(cluster, gw, verb, resource, ns), (gw, verb, resource, ns)

        # Switching to cluster-wide mode replaces the Roles with a ClusterRole.
        helm(
            cluster,
            "upgrade",
            release,
            str(CHART),
            "--namespace",
            namespace,
            "--skip-crds",
            "--reuse-values",
            "--set-json",
            "watchNamespaces=[]",
        )
        wait_for(
            lambda: _can_i(cluster, sa, "create", "pods", "default"),
            20,
            "cluster-wide RBAC in effect",
        )
        assert password() == first
    finally:
        subprocess.run(
            [
                str(helm_binary()),
                f"--kubeconfig={cluster.kubeconfig}",
                "uninstall",
                release,
                "--namespace",
                namespace,
                "--wait=false",
            ],
            capture_output=True,
            timeout=120,
        )
        core.delete_namespace(watched)


def _service_account_kubeconfig(cluster: Cluster, namespace: str, sa: str, path: Path) -> Path:
    """A kubeconfig of the admin one's cluster that authenticates as `sa` (a bound token)."""
    token = cluster.kubectl("-n", namespace, "create", "token", sa, "--duration=1h").strip()
    config = yaml.safe_load(cluster.kubeconfig.read_text())
    context = next(c for c in config["contexts"] if c["name"] == config["current-context"])[
        "context"
    ]
    cluster_entry = next(c for c in config["clusters"] if c["name"] == context["cluster"])
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "sa",
                "clusters": [cluster_entry],
                "users": [{"name": "sa", "user": {"token": token}}],
                "contexts": [
                    {"name": "sa", "context": {"cluster": cluster_entry["name"], "user": "sa"}}
                ],
            }
        )
    )
    return path


def test_operator_runs_under_the_charts_rbac(
    cluster: Cluster, namespace: str, redis_server: RedisServer, tmp_path: Path
) -> None:
    """The real operator, authenticated as the chart's ServiceAccount, reconciles every
    kind through create and Cascade deletion without one Forbidden: the tightened
    rules (only the verbs it calls) are still all it needs."""
    api = cluster.api_client()
    install_crds(cluster.kubeconfig, api)
    core = client.CoreV1Api(api)
    watched = f"{namespace}-w"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=watched)))
    release = "rb"
    op: OperatorProcess | None = None
    kinds = Kinds(api, watched)
    try:
        helm(
            cluster,
            "install",
            release,
            str(CHART),
            "--namespace",
            namespace,
            "--skip-crds",
            "--set",
            f"watchNamespaces={{{watched}}}",
            "--set",
            "redis.enabled=false",
            "--set",
            "metrics.enabled=false",
        )
        kubeconfig = _service_account_kubeconfig(
            cluster, namespace, "rb-codemode", tmp_path / "sa.kubeconfig"
        )
        op = OperatorProcess(
            kubeconfig,
            [watched],
            {"SESSION_POLL_SECONDS": "1", "LIBRARY_POLL_SECONDS": "1"},
            log_dir=tmp_path,
        )
        op.start().wait_started()

        def ready(plural: str, name: str) -> bool:
            return kinds.condition(plural, name, "Ready").get("status") == "True"

        kinds.create(
            "workspaces",
            "ws",
            {
                "redis": {"url": redis_server.url},
                "prefix": f"t{uuid.uuid4().hex[:10]}",
                "deletionPolicy": "Cascade",
            },
        )
        wait_for(lambda: ready("workspaces", "ws"), 60, "Workspace Ready", op=op)
        kinds.create("codesessions", "s1", {"workspaceRef": "ws"})
        wait_for(
            lambda: kinds.status("codesessions", "s1").get("phase") == "Ready",
            60,
            "CodeSession Ready",
            op=op,
        )
        # An idle session ends: the operator deletes its pod and Service itself.
        kinds.create("codesessions", "idle", {"workspaceRef": "ws", "idleTimeout": "2s"})
        wait_for(
            lambda: kinds.status("codesessions", "idle").get("phase") == "Terminated",
            60,
            "idle CodeSession Terminated",
            op=op,
        )

        def service_gone() -> bool:
            try:
                core.read_namespaced_service("idle-session", watched)
            except client.ApiException as exc:
                return exc.status == 404
            return False

        wait_for(service_gone, 30, "idle session's Service deleted", op=op)
        kinds.create(
            "workflowlibraries",
            "lib",
            {"workspaceRef": "ws", "source": {"url": "https://git.example/flows.git"}},
        )
        wait_for(
            lambda: kinds.status("workflowlibraries", "lib").get("jobName"),
            60,
            "library sync Job",
            op=op,
        )
        kinds.delete("workspaces", "ws")  # Cascade: the operator deletes s1 and lib
        for plural, name in (
            ("workspaces", "ws"),
            ("codesessions", "s1"),
            ("codesessions", "idle"),
            ("workflowlibraries", "lib"),
        ):
            wait_for(
                lambda p=plural, n=name: kinds.get(p, n) is None,
                60,  # type: ignore[misc]
                f"{plural}/{name} deleted",
                op=op,
            )
        log = op.log()
        for word in ("Forbidden", "forbidden", "(403)", "Code: 403", "Not enough permissions"):
            assert word not in log, f"{word!r} in the operator log:\n{op.log_tail(60)}"
    finally:
        if op is not None:
            op.stop()
        for plural in ("codesessions", "workflowlibraries", "workspaces"):
            for obj in kinds.custom.list_namespaced_custom_object(
                "codemode.dev", "v1alpha1", watched, plural
            )["items"]:
                kinds.patch(plural, obj["metadata"]["name"], {"metadata": {"finalizers": None}})
        subprocess.run(
            [
                str(helm_binary()),
                f"--kubeconfig={cluster.kubeconfig}",
                "uninstall",
                release,
                "--namespace",
                namespace,
                "--wait=false",
            ],
            capture_output=True,
            timeout=120,
        )
        core.delete_namespace(watched)
