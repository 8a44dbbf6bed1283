"""The chart's gateway as a pod in a test namespace (tests/e2e/test_gateway.py and
bench/gateway.py): its manifests rendered by `helm template`, applied, and awaited."""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from tests.cluster.helm import helm_binary
from tests.k8s.operator_fixture import Kinds, wait_for

CHART = Path(__file__).resolve().parents[2] / "helm" / "codemode"
RELEASE = "gwtest"
SERVICE = f"{RELEASE}-codemode-gateway"


def gateway_manifests(namespace: str, operator_image: str) -> list[dict[str, Any]]:
    """The chart's gateway objects, one replica, its RBAC scoped to `namespace`."""
    repository, tag = operator_image.rsplit(":", 1)
    out = subprocess.run(
        [
            str(helm_binary()),
            "template",
            RELEASE,
            str(CHART),
            "--namespace",
            namespace,
            "--set",
            f"watchNamespaces={{{namespace}}}",
            "--set",
            "gateway.replicas=1",
            "--set",
            f"operator.image.repository={repository}",
            "--set",
            f"operator.image.tag={tag}",
            "--set",
            "operator.image.pullPolicy=Never",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout
    docs = [d for d in yaml.safe_load_all(out) if d]
    return [d for d in docs if "-gateway" in d["metadata"]["name"]]


def _kubectl(kubeconfig: Path, *args: str, stdin: str | None = None) -> str:
    from tests.k8s.operator_fixture import kubectl_binary

    return subprocess.run(
        [kubectl_binary(), f"--kubeconfig={kubeconfig}", *args],
        input=stdin,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout


@contextlib.contextmanager
def gateway_pod(kubeconfig: Path, kinds: Kinds, operator_image: str) -> Iterator[dict[str, str]]:
    """The gateway running in `kinds.namespace`: its Service's addresses (callers' and
    metrics') and its pod's. Its
    cluster-scoped RBAC is deleted afterwards (the namespace takes the rest)."""
    manifests = gateway_manifests(kinds.namespace, operator_image)
    try:
        _kubectl(kubeconfig, "apply", "-f", "-", stdin=yaml.safe_dump_all(manifests))
        selector = "app.kubernetes.io/component=gateway"

        def ready_pod() -> Any:
            pods = kinds.core.list_namespaced_pod(kinds.namespace, label_selector=selector).items
            for pod in pods:
                if any(
                    c.type == "Ready" and c.status == "True" for c in pod.status.conditions or []
                ):
                    return pod
            return None

        try:
            pod = wait_for(ready_pod, 120, "a gateway pod Ready")
        except AssertionError as exc:
            logs = _kubectl(kubeconfig, "-n", kinds.namespace, "describe", "pods", "-l", selector)
            raise AssertionError(f"{exc}\n{logs}") from None
        svc = kinds.core.read_namespaced_service(SERVICE, kinds.namespace)
        ports = {p.name: p.port for p in svc.spec.ports}
        yield {
            "service": f"http://{svc.spec.cluster_ip}:{ports['http']}",
            "pod": f"http://{pod.status.pod_ip}:8080",
            "metrics": f"http://{svc.spec.cluster_ip}:{ports['metrics']}",
        }
    finally:
        for m in manifests:
            if m["kind"].startswith("Cluster"):
                with contextlib.suppress(subprocess.CalledProcessError):
                    _kubectl(kubeconfig, "delete", m["kind"].lower(), m["metadata"]["name"])


def gateway_logs(kubeconfig: Path, namespace: str) -> str:
    """What the gateway pods of `namespace` logged."""
    selector = "app.kubernetes.io/component=gateway"
    return _kubectl(kubeconfig, "-n", namespace, "logs", "-l", selector, "--tail=-1")


def scale_gateway(kubeconfig: Path, kinds: Kinds, replicas: int) -> list[str]:
    """The gateway scaled to `replicas` pods, all Ready: their addresses."""
    selector = "app.kubernetes.io/component=gateway"
    _kubectl(
        kubeconfig, "-n", kinds.namespace, "scale", "deployment", SERVICE, f"--replicas={replicas}"
    )

    def ready() -> list[str] | None:
        pods = kinds.core.list_namespaced_pod(kinds.namespace, label_selector=selector).items
        ips = [
            f"http://{p.status.pod_ip}:8080"
            for p in pods
            if not p.metadata.deletion_timestamp
            and any(c.type == "Ready" and c.status == "True" for c in p.status.conditions or [])
        ]
        return ips if len(ips) == replicas and len(pods) == replicas else None

    found: list[str] = wait_for(ready, 180, f"{replicas} gateway pods Ready")
    return found


def agent_rbac(namespace: str, session: str) -> list[dict[str, Any]]:
    """A ServiceAccount `agent` that RBAC allows on `session` only."""
    meta = {"name": "agent", "namespace": namespace}
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta},
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": meta,
            "rules": [
                {
                    "apiGroups": ["codemode.dev"],
                    "resources": ["codesessions/exec"],
                    "resourceNames": [session],
                    "verbs": ["create"],
                }
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": meta,
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "agent"},
            "subjects": [{"kind": "ServiceAccount", "name": "agent", "namespace": namespace}],
        },
    ]


def agent_token(kubeconfig: Path, kinds: Kinds, session: str) -> str:
    _kubectl(
        kubeconfig,
        "-n",
        kinds.namespace,
        "apply",
        "-f",
        "-",
        stdin=yaml.safe_dump_all(agent_rbac(kinds.namespace, session)),
    )
    request = {"spec": {"expirationSeconds": 3600}}
    token: str = kinds.core.create_namespaced_service_account_token(
        "agent", kinds.namespace, request
    ).status.token
    return token


def service_account_key() -> Path | None:
    """The key our local node cluster's API server signs ServiceAccount tokens with
    (tests/cluster/pki.py), None for a cluster someone else runs (CODEMODE_KUBECONFIG)."""
    import os

    from tests.cluster.layout import layout

    key = layout("node").pki / "sa.key"
    return None if os.environ.get("CODEMODE_KUBECONFIG") or not key.exists() else key


def reminted(token: str, key: Path, **times: int) -> str:
    """`token` (one the API server issued) with its times replaced (exp, iat, nbf:
    seconds since the epoch) and a new jti, signed again with the cluster's own key: a
    token the API server takes exactly as far as those times let it, nothing else
    changed (iss, aud, sub, the kubernetes.io claim, the header and its kid)."""
    import base64
    import json
    import uuid

    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).decode().rstrip("=")

    def unb64(part: str) -> Any:
        return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))

    head, payload, _ = token.split(".")
    header = unb64(head)
    assert header.get("alg") == "ES256", header  # the cluster's key is EC P-256
    claims = {**unb64(payload), **times}
    if "jti" in claims:
        claims["jti"] = str(uuid.uuid4())
    signing_input = f"{head}.{b64(json.dumps(claims, separators=(',', ':')).encode())}"
    private = serialization.load_pem_private_key(key.read_bytes(), password=None)
    assert isinstance(private, ec.EllipticCurvePrivateKey)
    r, s = decode_dss_signature(private.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256())))
    return f"{signing_input}.{b64(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"
