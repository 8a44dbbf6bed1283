"""The chart against the real API server (control-plane cluster): every rendered
object passes a server-side dry-run, `helm install`/`upgrade` keep the generated
Redis password (`lookup`), and the operator's RBAC is what it needs and no more
(`kubectl auth can-i` as its ServiceAccount) in both modes."""

from __future__ import annotations

import base64
import subprocess
from pathlib import Path

import pytest
from kubernetes import client

from tests.cluster.helm import helm_binary
from tests.cluster.pytest_plugin import Cluster
from tests.k8s.operator_fixture import install_crds, kubectl_binary, wait_for

pytestmark = pytest.mark.k8s

CHART = Path(__file__).resolve().parents[2] / "helm" / "codemode"


def helm(cluster: Cluster, *args: str) -> str:
    proc = subprocess.run([str(helm_binary()), f"--kubeconfig={cluster.kubeconfig}", *args],
                          capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)}:\n{proc.stdout}\n{proc.stderr}")
    return proc.stdout


@pytest.mark.parametrize("mode", ["cluster-wide", "namespaced"])
def test_server_side_dry_run(cluster: Cluster, namespace: str, mode: str) -> None:
    values = ["--set", f"watchNamespaces={{{namespace}}}"] if mode == "namespaced" else []
    rendered = helm(cluster, "template", "codemode", str(CHART), "--namespace", namespace,
                    "--include-crds", *values)
    out = cluster.kubectl("apply", "--dry-run=server", "-f", "-", stdin=rendered)
    for kind in ("customresourcedefinition.apiextensions.k8s.io/workspaces.codemode.dev",
                 "deployment.apps/codemode-operator", "statefulset.apps/codemode-redis",
                 "secret/codemode-redis", "serviceaccount/codemode", "service/codemode-metrics"):
        assert kind in out, out
    assert ("role.rbac.authorization.k8s.io/codemode-operator" in out) == (mode == "namespaced")


def _can_i(cluster: Cluster, sa: str, verb: str, resource: str, ns: str | None) -> bool:
    where = ["-n", ns] if ns else ["--all-namespaces"]
    if "/" in resource:  # a subresource, not TYPE/NAME
        resource, sub = resource.split("/", 1)
        where.append(f"--subresource={sub}")
    proc = subprocess.run([kubectl_binary(), f"--kubeconfig={cluster.kubeconfig}", "auth", "can-i",
                           verb, resource, f"--as={sa}", *where],
                          capture_output=True, text=True, timeout=60)
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
        helm(cluster, "install", release, str(CHART), "--namespace", namespace,
             "--skip-crds", "--set", f"watchNamespaces={{{watched}}}")

        def password() -> str:
            secret = core.read_namespaced_secret("cm-codemode-redis", namespace)
            return base64.b64decode(secret.data["password"]).decode()

        first = password()
        assert len(first) == 32
        helm(cluster, "upgrade", release, str(CHART), "--namespace", namespace, "--skip-crds",
             "--reuse-values", "--set", "operator.logLevel=debug")
        assert password() == first, "helm upgrade must keep the generated Redis password"

        sa = f"system:serviceaccount:{namespace}:cm-codemode"
        for verb, resource in [("create", "pods"), ("delete", "secrets"), ("watch", "jobs.batch"),
                               ("patch", "codesessions.codemode.dev/status"),
                               ("create", "networkpolicies.networking.k8s.io"),
                               ("create", "events")]:
            wait_for(lambda v=verb, r=resource: _can_i(cluster, sa, v, r, watched), 20,  # type: ignore[misc]
                     f"{sa} may {verb} {resource}")
            assert not _can_i(cluster, sa, verb, resource, "default"), (verb, resource, "default")
        assert _can_i(cluster, sa, "list", "customresourcedefinitions.apiextensions.k8s.io", None)
        assert _can_i(cluster, sa, "watch", "namespaces", None)
        for verb, resource, ns in [("create", "pods/exec", watched),
                                   ("delete", "customresourcedefinitions", None),
                                   ("list", "nodes", None), ("create", "roles", watched),
                                   ("get", "secrets", namespace)]:
            assert not _can_i(cluster, sa, verb, resource, ns), (verb, resource, ns)

        # Switching to cluster-wide mode replaces the Roles with a ClusterRole.
        helm(cluster, "upgrade", release, str(CHART), "--namespace", namespace, "--skip-crds",
             "--reuse-values", "--set-json", "watchNamespaces=[]")
        wait_for(lambda: _can_i(cluster, sa, "create", "pods", "default"), 20,
                 "cluster-wide RBAC in effect")
        assert password() == first
    finally:
        subprocess.run([str(helm_binary()), f"--kubeconfig={cluster.kubeconfig}", "uninstall",
                        release, "--namespace", namespace, "--wait=false"],
                       capture_output=True, timeout=120)
        core.delete_namespace(watched)
