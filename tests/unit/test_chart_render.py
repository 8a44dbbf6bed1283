"""The Helm chart without a cluster: `helm lint --strict`, the rendered manifests
valid for Kubernetes 1.34 (kubernetes-validate, strict), the values schema
rejecting typos, and the properties the chart promises (restricted pods,
Recreate, least-privilege RBAC in both modes, bundled Redis)."""

from __future__ import annotations

import base64
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.cluster.helm import helm_binary

CHART = Path(__file__).resolve().parents[2] / "helm" / "codemode"
K8S_VERSION = "1.34"

VALUE_SETS: dict[str, list[str]] = {
    "defaults": [],
    "namespaced": ["--set", "watchNamespaces={team-a,team-b}"],
    "gateway-ingress": [
        "--set",
        "gateway.ingress.enabled=true",
        "--set",
        "gateway.ingress.host=gw.example.com",
        "--set-json",
        'gateway.ingress.tls=[{"hosts":["gw.example.com"],"secretName":"gw-tls"}]',
    ],
    "no-redis-no-metrics": ["--set", "redis.enabled=false", "--set", "metrics.enabled=false"],
    "ephemeral-redis": [
        "--set",
        "redis.persistence.enabled=false",
        "--set",
        "operator.logLevel=debug",
    ],
    "storage-class": [
        "--set",
        "redis.persistence.storageClass=-",
        "--set",
        "redis.persistence.whenDeleted=Delete",
    ],
    "one-namespace-existing-sa-no-rbac": [
        "--set",
        "watchNamespaces={team-a}",
        "--set",
        "serviceAccount.create=false",
        "--set",
        "serviceAccount.name=ops",
        "--set",
        "rbac.create=false",
        "--set",
        "redis.auth.existingSecret=mine",
    ],
    "pod-settings": [
        "--set",
        "imagePullSecrets[0].name=regcred",
        "--set",
        "operator.extraEnv[0].name=FOO",
        "--set",
        "operator.extraEnv[0].value=bar",
        "--set",
        "operator.extraEnv[1].name=POD",
        "--set",
        "operator.extraEnv[1].valueFrom.fieldRef.fieldPath=metadata.name",
        "--set",
        "operator.podAnnotations.a=b",
        "--set",
        "operator.podLabels.team=x",
        "--set",
        "operator.nodeSelector.disk=ssd",
        "--set",
        "operator.tolerations[0].key=k",
        "--set",
        "operator.tolerations[0].operator=Exists",
        "--set",
        "redis.tolerations[0].effect=NoSchedule",
        "--set",
        "redis.tolerations[0].operator=Exists",
        "--set-json",
        'operator.affinity={"nodeAffinity":{"requiredDuringSchedulingIgnoredDuring'
        'Execution":{"nodeSelectorTerms":[{"matchExpressions":[{"key":"a","operator":"Exists"}]}]}}}',
        "--set",
        "operator.resources.limits.cpu=1",
        "--set",
        "operator.priorityClassName=high",
        "--set",
        "nameOverride=cm",
    ],
}


@pytest.fixture(scope="module")
def helm() -> str:
    return str(helm_binary())


def run_helm(helm: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([helm, *args], capture_output=True, text=True, timeout=120)
    if check and proc.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc


def render(
    helm: str, *values: str, crds: bool = False, release: str = "codemode"
) -> list[dict[str, Any]]:
    args = ["template", release, str(CHART), "--namespace", "codemode-system"]
    if crds:
        args.append("--include-crds")
    out = run_helm(helm, *args, *values).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    """The objects of `kind` but the gateway's (gateway_docs; tested on their own)."""
    return [d for d in docs if d["kind"] == kind and not _gateway(d)]


def _gateway(doc: dict[str, Any]) -> bool:
    return "-gateway" in doc["metadata"]["name"]


def gateway_docs(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind and _gateway(d)]


@pytest.mark.parametrize("values", VALUE_SETS.values(), ids=list(VALUE_SETS))
def test_lint_strict(helm: str, values: list[str]) -> None:
    proc = run_helm(helm, "lint", "--strict", str(CHART), *values)
    assert "0 chart(s) failed" in proc.stdout


@pytest.mark.parametrize("values", VALUE_SETS.values(), ids=list(VALUE_SETS))
def test_rendered_manifests_are_valid_kubernetes(helm: str, values: list[str]) -> None:
    kv = pytest.importorskip("kubernetes_validate")
    docs = render(helm, *values, crds=True)
    assert docs
    for doc in docs:
        try:
            kv.validate(doc, K8S_VERSION, strict=True)
        except kv.ValidationError as exc:
            raise AssertionError(
                f"{doc['kind']}/{doc['metadata']['name']}: {exc.message} at {list(exc.path)}"
            ) from exc


@pytest.mark.parametrize(
    "bad,named",
    [
        (["--set", "operater.image.tag=x"], "operater"),
        (["--set", "operator.image.tga=x"], "tga"),
        (["--set", "redis.persistance.enabled=false"], "persistance"),
        (["--set", "operator.logLevel=verbose"], "logLevel"),
        (["--set", "metrics.port=70000"], "port"),
        (["--set", "redis.persistence.whenDeleted=Keep"], "whenDeleted"),
        (["--set", "redis.persistance.size=2Gi"], "persistance"),
        (["--set", "metrics.port=abc"], "port"),
        (["--set", "watchNamespaces=a"], "watchNamespaces"),
        (["--set", "replicaCount=2"], "replicaCount"),
        # pass-through Kubernetes structures are strict too (a typo there used to be
        # dropped silently by the API server)
        (["--set", "operator.tolerations[0].kye=x"], "kye"),
        (["--set", "redis.tolerations[0].effect=NoSchedul"], "effect"),
        (["--set-json", 'operator.affinity={"nodeAfinity":{}}'], "nodeAfinity"),
        (
            ["--set", "operator.extraEnv[0].name=A", "--set", "operator.extraEnv[0].vaule=b"],
            "vaule",
        ),
        (
            [
                "--set",
                "operator.extraEnv[0].name=A",
                "--set",
                "operator.extraEnv[0].valueFrom.secretKeyRef.nme=s",
            ],
            "nme",
        ),
        (["--set", "session.dns.namespce=x"], "namespce"),
        (["--set", "session.dns.cidrs={dns.example}"], "cidrs"),
        (["--set", "session.ingressCIDRs={host.example}"], "ingressCIDRs"),
        (["--set", "session.dns.namespace=Kube_System"], "namespace"),
        (["--set", "session.dns.podLabels.k8s-app=kube dns"], "k8s-app"),
        (["--set", "operator.workspacePollSeconds=0"], "workspacePollSeconds"),
        # no ServiceAccount of ours and no name: the `default` one must not get the rules
        (["--set", "serviceAccount.create=false"], "serviceAccount.name"),
        (["--set", "gateway.replica=3"], "replica"),
        (["--set", "gateway.ingress.hots=x"], "hots"),
        (["--set", "gateway.service.type=Ingress"], "type"),
    ],
)
def test_values_schema_rejects_typos_and_bad_values(helm: str, bad: list[str], named: str) -> None:
    proc = run_helm(helm, "template", "codemode", str(CHART), *bad, check=False)
    assert proc.returncode != 0, proc.stdout[:500]
    assert named in proc.stderr, proc.stderr


def _restricted(container: dict[str, Any]) -> None:
    sc = container["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["runAsNonRoot"] is True
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}


def test_operator_deployment(helm: str) -> None:
    docs = render(
        helm,
        "--set",
        "session.image.repository=reg.example/session",
        "--set",
        "session.image.tag=1.2.3",
        "--set",
        "operator.sessionPollSeconds=2",
    )
    (dep,) = by_kind(docs, "Deployment")
    spec = dep["spec"]
    assert spec["replicas"] == 1 and spec["strategy"] == {"type": "Recreate"}
    pod = spec["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    (container,) = pod["containers"]
    _restricted(container)
    assert container["image"] == "localhost/codemode/operator:dev"
    env = {e["name"]: e for e in container["env"]}
    assert env["OPERATOR_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
    assert env["WATCH_NAMESPACES"]["value"] == ""
    assert env["CODEMODE_SESSION_IMAGE"]["value"] == "reg.example/session:1.2.3"
    assert env["SESSION_POLL_SECONDS"]["value"] == "2"
    assert env["METRICS_PORT"]["value"] == "8080"
    assert "args" not in container
    (svc,) = [s for s in by_kind(docs, "Service") if s["metadata"]["name"].endswith("-metrics")]
    assert svc["spec"]["ports"][0]["port"] == 8080


def test_debug_log_level_and_metrics_off(helm: str) -> None:
    docs = render(helm, "--set", "operator.logLevel=debug", "--set", "metrics.enabled=false")
    (container,) = by_kind(docs, "Deployment")[0]["spec"]["template"]["spec"]["containers"]
    assert container["args"] == ["--verbose"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["METRICS_PORT"] == "0"
    assert not [s for s in by_kind(docs, "Service") if s["metadata"]["name"].endswith("-metrics")]


def _rules(role: dict[str, Any]) -> set[tuple[str, str, str]]:
    return {
        (group, res, verb)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for res in rule["resources"]
        for verb in rule["verbs"]
    }


# What the operator calls (kopf: list/watch of handled kinds, patches of objects and
# status, core Events; operator/codemode_operator/kube.py: the rest). Anything more
# breaks least privilege, anything less fails with Forbidden.
KINDS = ("workspaces", "codesessions", "workflowlibraries")
NAMESPACED_RULES = (
    {("codemode.dev", k, v) for k in KINDS for v in ("get", "list", "watch", "patch")}
    | {("codemode.dev", k, "delete") for k in ("codesessions", "workflowlibraries")}
    | {("codemode.dev", f"{k}/status", "patch") for k in KINDS}
    | {("codemode.dev", f"{k}/finalizers", "update") for k in KINDS}
    | {("", "pods", v) for v in ("create", "get", "list", "watch", "patch", "delete")}
    | {("", "services", v) for v in ("create", "delete")}
    | {("discovery.k8s.io", "endpointslices", v) for v in ("create", "patch", "delete")}
    | {("", "secrets", v) for v in ("create", "get", "update", "patch")}
    | {("batch", "jobs", v) for v in ("create", "get", "list", "watch", "delete")}
    | {("networking.k8s.io", "networkpolicies", v) for v in ("create", "update")}
    | {("", "events", "create")}
)
CRD_READS = {("apiextensions.k8s.io", "customresourcedefinitions", v) for v in ("list", "watch")}
NAMESPACE_READS = {("", "namespaces", v) for v in ("list", "watch")}


def test_rbac_cluster_wide(helm: str) -> None:
    docs = render(helm)
    assert not by_kind(docs, "Role") and not by_kind(docs, "RoleBinding")
    roles = {r["metadata"]["name"]: _rules(r) for r in by_kind(docs, "ClusterRole")}
    assert roles == {
        "codemode-codemode-system-discovery": CRD_READS,
        "codemode-codemode-system-operator": NAMESPACED_RULES,
    }
    rules = set().union(*roles.values())
    assert not any(verb == "*" or res == "*" for _, res, verb in rules)
    assert ("", "pods/exec", "create") not in rules
    bindings = by_kind(docs, "ClusterRoleBinding")
    assert {b["roleRef"]["name"] for b in bindings} == set(roles)
    for b in bindings:
        assert b["subjects"] == [
            {"kind": "ServiceAccount", "name": "codemode", "namespace": "codemode-system"}
        ]


def test_rbac_namespaced(helm: str) -> None:
    docs = render(helm, "--set", "watchNamespaces={team-a,team-b}")
    roles = by_kind(docs, "Role")
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["team-a", "team-b"]
    assert sorted(b["metadata"]["namespace"] for b in by_kind(docs, "RoleBinding")) == [
        "team-a",
        "team-b",
    ]
    for role in roles:
        assert _rules(role) == NAMESPACED_RULES
    (cluster_role,) = by_kind(docs, "ClusterRole")
    # Only the cluster-scoped reads kopf needs: CRD discovery and namespaces.
    assert _rules(cluster_role) == CRD_READS | NAMESPACE_READS
    (container,) = by_kind(docs, "Deployment")[0]["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["WATCH_NAMESPACES"] == "team-a,team-b"


def test_bundled_redis(helm: str) -> None:
    docs = render(helm)
    (sts,) = by_kind(docs, "StatefulSet")
    pod = sts["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    _restricted(container)
    assert pod["automountServiceAccountToken"] is False
    assert container["image"] == "localhost/codemode/redis:7"
    (claim,) = sts["spec"]["volumeClaimTemplates"]
    assert claim["spec"]["resources"]["requests"]["storage"] == "1Gi"
    assert "storageClassName" not in claim["spec"]
    env = {e["name"]: e for e in container["env"]}
    assert env["REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"] == {
        "name": "codemode-redis",
        "key": "password",
    }
    script = container["args"][0]
    assert "$REDIS_PASSWORD" in script and "--aclfile" in script
    assert "--appendfsync everysec" in script
    (secret,) = by_kind(docs, "Secret")
    assert set(secret["data"]) == {"password", "url"}
    password = base64.b64decode(secret["data"]["password"]).decode()
    assert len(password) == 32
    assert base64.b64decode(secret["data"]["url"]).decode() == (
        f"redis://:{password}@codemode-redis.codemode-system.svc:6379/0"
    )

    ephemeral = render(helm, "--set", "redis.persistence.enabled=false")
    (sts,) = by_kind(ephemeral, "StatefulSet")
    assert "volumeClaimTemplates" not in sts["spec"]
    assert {"name": "data", "emptyDir": {}} in sts["spec"]["template"]["spec"]["volumes"]
    # The aclfile is on the data volume either way (an emptyDir outlives a container
    # restart, not the pod).
    (container,) = sts["spec"]["template"]["spec"]["containers"]
    assert "acl=/data/users.acl" in container["args"][0]
    assert {"name": "data", "mountPath": "/data"} in container["volumeMounts"]

    no_class = render(helm, "--set", "redis.persistence.storageClass=-")
    (claim,) = by_kind(no_class, "StatefulSet")[0]["spec"]["volumeClaimTemplates"]
    assert claim["spec"]["storageClassName"] == ""

    existing = render(helm, "--set", "redis.auth.existingSecret=mine")
    assert not by_kind(existing, "Secret")
    (container,) = by_kind(existing, "StatefulSet")[0]["spec"]["template"]["spec"]["containers"]
    assert container["env"][0]["valueFrom"]["secretKeyRef"]["name"] == "mine"

    off = render(helm, "--set", "redis.enabled=false")
    assert not by_kind(off, "StatefulSet") and not by_kind(off, "Secret")


def test_crds_are_the_generated_ones(helm: str) -> None:
    docs = render(helm, crds=True)
    names = sorted(d["metadata"]["name"] for d in by_kind(docs, "CustomResourceDefinition"))
    assert names == [
        "codesessions.codemode.dev",
        "workflowlibraries.codemode.dev",
        "workspaces.codemode.dev",
    ]


def test_notes_tell_the_next_commands(helm: str) -> None:
    proc = run_helm(
        helm,
        "install",
        "codemode",
        str(CHART),
        "--dry-run=client",
        "--namespace",
        "codemode-system",
    )
    notes = proc.stdout.split("NOTES:", 1)[1]
    for expected in (
        "kubectl -n NS apply -f examples/workspace.yaml",
        "get codemode",
        "codemode exec agent-1",
        "secret generic codemode-redis",
    ):
        assert expected in notes, notes


@pytest.mark.parametrize(
    "release",
    [
        "abcdefghij-abcdefghij-abcdefghij-abcdefghij-abcdefgh",  # 53, helm's longest
        "my.release.v1",  # dots are allowed in release names, not in Service names
    ],
)
def test_long_and_dotted_release_names_give_valid_names(helm: str, release: str) -> None:
    kv = pytest.importorskip("kubernetes_validate")
    docs = render(helm, release=release)
    label = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")  # DNS-1035 label
    names = {(d["kind"], d["metadata"]["name"]) for d in docs}
    for kind, name in names:
        if kind in ("Service", "StatefulSet", "Deployment", "ServiceAccount", "Secret"):
            assert label.match(name) and len(name) <= 63, (kind, name)
    (sts,) = by_kind(docs, "StatefulSet")
    # controller-revision-hash label: name + "-" + 10 characters must stay a label value
    assert len(sts["metadata"]["name"]) <= 52, sts["metadata"]["name"]
    assert sts["spec"]["serviceName"] in {n for k, n in names if k == "Service"}
    services = [n for k, n in names if k == "Service"]
    assert len(services) == len(set(services)) == 3  # metrics, redis, gateway stay distinct
    (secret,) = by_kind(docs, "Secret")
    url = base64.b64decode(secret["data"]["url"]).decode()
    assert f"@{sts['metadata']['name']}.codemode-system.svc:6379/" in url
    for doc in docs:
        kv.validate(doc, K8S_VERSION, strict=True)


def test_pod_labels_cannot_break_the_selector(helm: str) -> None:
    docs = render(
        helm,
        "--set",
        "operator.podLabels.app\\.kubernetes\\.io/component=x",
        "--set",
        "operator.podLabels.team=a",
    )
    (dep,) = by_kind(docs, "Deployment")
    labels = dep["spec"]["template"]["metadata"]["labels"]
    assert dep["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert labels["team"] == "a"


def test_existing_service_account_is_bound(helm: str) -> None:
    docs = render(helm, "--set", "serviceAccount.create=false", "--set", "serviceAccount.name=ops")
    assert not by_kind(docs, "ServiceAccount")
    assert by_kind(docs, "Deployment")[0]["spec"]["template"]["spec"]["serviceAccountName"] == "ops"
    for binding in by_kind(docs, "ClusterRoleBinding"):
        assert binding["subjects"][0]["name"] == "ops"


def test_notes_with_an_existing_redis_secret(helm: str) -> None:
    # Such a Secret only has to hold `password`: the NOTES build the URL from it.
    proc = run_helm(
        helm,
        "install",
        "codemode",
        str(CHART),
        "--dry-run=client",
        "--namespace",
        "codemode-system",
        "--set",
        "redis.auth.existingSecret=mine",
    )
    notes = proc.stdout.split("NOTES:", 1)[1]
    assert "get secret mine -o jsonpath='{.data.password}'" in notes, notes
    assert "@codemode-redis.codemode-system.svc:6379/0" in notes, notes
    assert "{.data.url}" not in notes, notes


@pytest.mark.redis
def test_redis_startup_script_accepts_any_password(helm: str, tmp_path: Path) -> None:
    """The rendered script, run by /bin/sh with a real redis-server: a password with
    quotes, backslashes, spaces and `$` (from redis.auth.existingSecret) still works."""
    import shutil

    import redis

    from tests.conftest import free_port, wait_for_port

    (sts,) = by_kind(render(helm), "StatefulSet")
    (container,) = sts["spec"]["template"]["spec"]["containers"]
    port = free_port()
    script = (
        container["args"][0]
        .replace("--port 6379 --bind 0.0.0.0", f"--port {port} --bind 127.0.0.1")
        .replace("/data", str(tmp_path))
    )
    password = "p\"a\\ss w$rd'x"
    server = subprocess.Popen(
        ["/bin/sh", "-c", script],
        env={"REDIS_PASSWORD": password, "PATH": "/usr/bin:/bin"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    try:
        assert shutil.which("redis-server")
        wait_for_port(port)
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(port=port, password="wrong").ping()
        assert redis.Redis(port=port, password=password).ping()
    finally:
        server.kill()
        server.wait()


def _start_chart_redis(
    helm: str, data: Path, password: str, *values: str
) -> tuple[subprocess.Popen[bytes], int]:
    """The chart's Redis start script as the container runs it, on `data` as /data."""
    from tests.conftest import free_port, wait_for_port

    (sts,) = by_kind(render(helm, *values), "StatefulSet")
    (container,) = sts["spec"]["template"]["spec"]["containers"]
    port = free_port()
    script = (
        container["args"][0]
        .replace("--port 6379 --bind 0.0.0.0", f"--port {port} --bind 127.0.0.1")
        .replace("/data", str(data))
    )
    server = subprocess.Popen(
        ["/bin/sh", "-c", script],
        env={"REDIS_PASSWORD": password, "PATH": "/usr/bin:/bin"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    wait_for_port(port)
    return server, port


@pytest.mark.redis
@pytest.mark.parametrize("persistence", ["true", "false"])
def test_redis_keeps_workspace_users_across_a_restart(
    helm: str, tmp_path: Path, persistence: str
) -> None:
    """The operator's ACL SAVE writes the workspace user to the chart Redis's aclfile, so
    a SIGKILLed and restarted Redis (same data volume: a PVC, or an emptyDir within its
    pod) lets the user in at once, without the operator. The default user's password is
    the Secret's at every start, never the one saved in the file: a rotated Secret wins,
    and no start ever leaves the default user without a password."""
    import redis
    from codemode_operator import redis_acl

    values = ("--set", f"redis.persistence.enabled={persistence}")
    server, port = _start_chart_redis(helm, tmp_path, "first-pw", *values)
    try:
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(port=port).ping()
        admin = f"redis://:first-pw@127.0.0.1:{port}/0"
        user = redis_acl.acl_username("team", "ws")
        redis_acl.provision(admin, user, "ws-pw", "cm", "ws")
        saved = (tmp_path / "users.acl").read_text()
        assert f"user {user} on" in saved and "first-pw" not in saved
    finally:
        server.kill()
        server.wait()

    server, port = _start_chart_redis(helm, tmp_path, "rotated-pw", *values)
    try:
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(port=port, password="first-pw").ping()
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(port=port).ping()  # NOAUTH: the default user still needs one
        scoped = redis.Redis(port=port, username=user, password="ws-pw")
        scoped.set("cm:ws:ws:k", "v")
        assert scoped.get("cm:ws:ws:k") == b"v"
        with pytest.raises(redis.exceptions.NoPermissionError):
            scoped.get("cm:ws:other:k")
        admin = f"redis://:rotated-pw@127.0.0.1:{port}/0"
        redis_acl.deprovision(admin, user)
        assert f"user {user} " not in (tmp_path / "users.acl").read_text()
    finally:
        server.kill()
        server.wait()


def test_session_dns_values_reach_the_operator(helm: str) -> None:
    """The defaults need nothing on a kubeadm, kind, EKS, GKE or AKS cluster (kube-dns pods
    in kube-system); node-local resolvers are added as CIDRs."""
    (dep,) = by_kind(render(helm), "Deployment")
    env = {
        e["name"]: e.get("value") for e in dep["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert env["SESSION_DNS_NAMESPACE"] == "kube-system"
    assert env["SESSION_DNS_POD_LABELS"] == "k8s-app=kube-dns"
    assert env["SESSION_DNS_CIDRS"] == ""
    assert env["SESSION_INGRESS_CIDRS"] == ""
    assert env["WORKSPACE_POLL_SECONDS"] == "30"
    (dep,) = by_kind(
        render(
            helm,
            "--set",
            "session.dns.namespace=dns",
            "--set",
            "session.dns.podLabels.k8s-app=null",  # maps merge: null drops a default key
            "--set",
            "session.dns.podLabels.tier=dns",
            "--set",
            "session.dns.podLabels.app=coredns",
            "--set",
            "session.dns.cidrs={169.254.20.10/32,10.250.250.1/32}",
            "--set",
            "session.ingressCIDRs={172.18.0.1/32}",
            "--set",
            "operator.workspacePollSeconds=600",
        ),
        "Deployment",
    )
    env = {
        e["name"]: e.get("value") for e in dep["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert env["SESSION_DNS_NAMESPACE"] == "dns"
    assert env["SESSION_DNS_POD_LABELS"] == "app=coredns,tier=dns"
    assert env["SESSION_DNS_CIDRS"] == "169.254.20.10/32,10.250.250.1/32"
    assert env["SESSION_INGRESS_CIDRS"] == "172.18.0.1/32"
    assert env["WORKSPACE_POLL_SECONDS"] == "600"
    from codemode_operator.settings import DnsEgress, OperatorConfig

    assert OperatorConfig.from_env({k: v for k, v in env.items() if v is not None}).dns == (
        DnsEgress(
            "dns", (("app", "coredns"), ("tier", "dns")), ("169.254.20.10/32", "10.250.250.1/32")
        )
    )


GATEWAY_REVIEWS = {
    ("authentication.k8s.io", "tokenreviews", "create"),
    ("authorization.k8s.io", "subjectaccessreviews", "create"),
}
GATEWAY_RULES = {
    ("codemode.dev", "codesessions", v) for v in ("get", "list", "watch", "create", "patch")
} | {("", r, "get") for r in ("secrets", "pods")}


def test_gateway_is_on_by_default_with_two_replicas_and_least_privilege(helm: str) -> None:
    docs = render(helm)
    (dep,) = gateway_docs(docs, "Deployment")
    assert dep["spec"]["replicas"] == 2
    pod = dep["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["command"] == ["python3", "-m", "codemode_operator.gateway"]
    assert container["image"] == "localhost/codemode/operator:dev"
    _restricted(container)
    assert pod["serviceAccountName"] == "codemode-gateway"
    (svc,) = gateway_docs(docs, "Service")
    assert svc["spec"]["selector"] == dep["spec"]["selector"]["matchLabels"]
    assert svc["spec"]["ports"][0]["port"] == 80
    assert not by_kind(docs, "Ingress") and not gateway_docs(docs, "Ingress")
    (role,) = gateway_docs(docs, "ClusterRole")
    assert _rules(role) == GATEWAY_REVIEWS | GATEWAY_RULES
    (binding,) = gateway_docs(docs, "ClusterRoleBinding")
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "codemode-gateway", "namespace": "codemode-system"}
    ]


def test_gateway_namespaced_rbac_ingress_and_off(helm: str) -> None:
    docs = render(
        helm,
        "--set",
        "watchNamespaces={team-a,team-b}",
        "--set",
        "gateway.replicas=3",
        "--set",
        "gateway.ingress.enabled=true",
        "--set",
        "gateway.ingress.host=gw.example.com",
        "--set",
        "gateway.ingress.className=nginx",
    )
    (role,) = gateway_docs(docs, "ClusterRole")
    assert _rules(role) == GATEWAY_REVIEWS
    roles = gateway_docs(docs, "Role")
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["team-a", "team-b"]
    assert all(_rules(r) == GATEWAY_RULES for r in roles)
    assert gateway_docs(docs, "Deployment")[0]["spec"]["replicas"] == 3
    (ingress,) = gateway_docs(docs, "Ingress")
    assert ingress["spec"]["ingressClassName"] == "nginx"
    (rule,) = ingress["spec"]["rules"]
    assert rule["host"] == "gw.example.com"
    assert rule["http"]["paths"][0]["backend"]["service"]["name"] == "codemode-gateway"
    off = render(helm, "--set", "gateway.enabled=false")
    assert not [d for d in off if _gateway(d)]
