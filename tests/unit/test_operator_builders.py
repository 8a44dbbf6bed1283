"""Pure manifest builders: hardened pods, secrets only by reference, owner references."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any
from urllib.parse import unquote, urlsplit

from codemode_operator import API_VERSION, PREFIX, redis_acl
from codemode_operator.api.workflowlibrary import WorkflowLibrarySpec
from codemode_operator.api.workspace import WorkspaceSpec
from codemode_operator.builders.library import (
    LibraryParams,
    bootstrap_args,
    failure_reason,
    job_name,
    parse_result,
    sync_job,
)
from codemode_operator.builders.session import (
    PORT,
    SessionParams,
    endpoint_slice,
    session_pod,
    session_service,
    token_secret,
)
from codemode_operator.builders.workspace import (
    WorkspaceParams,
    credentials_secret,
    network_policy,
)
from codemode_operator.settings import DnsEgress

SECRET_WORDS = ("s3cret-token", "hunter2", "adminpw")


def _session(**over: Any) -> SessionParams:
    base: dict[str, Any] = dict(
        name="s1",
        namespace="team",
        uid="uid-s1",
        workspace="ws",
        workspace_id="wsid",
        prefix="cm",
        credentials_secret="ws-redis",
        image="img:1",
    )
    base.update(over)
    return SessionParams(**base)


def _container(pod: dict[str, Any]) -> dict[str, Any]:
    containers = pod["spec"]["containers"]
    assert len(containers) == 1
    c: dict[str, Any] = containers[0]
    return c


def _owner_ok(manifest: dict[str, Any], kind: str, name: str, uid: str) -> None:
    owners = manifest["metadata"]["ownerReferences"]
    assert owners == [
        {
            "apiVersion": API_VERSION,
            "kind": kind,
            "name": name,
            "uid": uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]


# ---- session -----------------------------------------------------------------------------


def test_session_pod_is_hardened() -> None:
    pod = session_pod(_session())
    spec = pod["spec"]
    assert spec["automountServiceAccountToken"] is False
    psc = spec["securityContext"]
    assert psc["runAsNonRoot"] is True
    assert psc["runAsUser"] >= 100000 and psc["runAsGroup"] == psc["runAsUser"]
    assert psc["seccompProfile"] == {"type": "RuntimeDefault"}
    c = _container(pod)
    csc = c["securityContext"]
    assert csc["allowPrivilegeEscalation"] is False
    assert csc["readOnlyRootFilesystem"] is True
    assert csc["capabilities"] == {"drop": ["ALL"]}
    assert csc["privileged"] is False
    assert csc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert c["resources"]["requests"] and c["resources"]["limits"]
    assert {"cpu", "memory"} <= set(c["resources"]["limits"])
    tmp = next(m for m in c["volumeMounts"] if m["mountPath"] == "/tmp")
    volume = next(v for v in spec["volumes"] if v["name"] == tmp["name"])
    assert "emptyDir" in volume
    assert not tmp.get("readOnly")
    assert "runtimeClassName" not in spec
    assert c["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert c["ports"] == [{"name": "http", "containerPort": PORT, "protocol": "TCP"}]


def test_session_pod_resources_and_runtime_class_passthrough() -> None:
    res = {"requests": {"cpu": "1"}, "limits": {"cpu": "2", "memory": "2Gi"}}
    pod = session_pod(_session(runtime_class_name="gvisor", resources=res))
    assert pod["spec"]["runtimeClassName"] == "gvisor"
    assert _container(pod)["resources"] == res


def test_session_env_secrets_only_by_reference() -> None:
    pod = session_pod(_session())
    env = {e["name"]: e for e in _container(pod)["env"]}
    assert env["REDIS_URL"] == {
        "name": "REDIS_URL",
        "valueFrom": {"secretKeyRef": {"name": "ws-redis", "key": "url"}},
    }
    assert env["CONTAINER_AUTH_TOKEN"] == {
        "name": "CONTAINER_AUTH_TOKEN",
        "valueFrom": {"secretKeyRef": {"name": "s1-token", "key": "token"}},
    }
    assert env["STORAGE_PREFIX"]["value"] == "cm"
    assert env["WORKSPACE_ID"]["value"] == "wsid"
    for e in env.values():
        if "value" in e:
            assert "redis://" not in e["value"]
    assert "redis://" not in json.dumps(pod)


def test_session_tools_config_map_mounted_read_only() -> None:
    pod = session_pod(_session(tools_config_map="tools"))
    c = _container(pod)
    env = {e["name"]: e.get("value") for e in c["env"]}
    mount = next(m for m in c["volumeMounts"] if m["name"] == "tools")
    assert mount["readOnly"] is True and env["TOOLS_PATH"] == mount["mountPath"]
    assert {"name": "tools", "configMap": {"name": "tools"}} in pod["spec"]["volumes"]


def test_session_children_owned_and_labelled() -> None:
    p = _session()
    token = token_secret(p, "s3cret-token")
    pod, svc = session_pod(p), session_service(p)
    for manifest in (token, pod, svc):
        _owner_ok(manifest, "CodeSession", "s1", "uid-s1")
        assert manifest["metadata"]["namespace"] == "team"
        assert manifest["metadata"]["labels"][f"{PREFIX}/session"] == "s1"
        assert manifest["metadata"]["labels"][f"{PREFIX}/workspace"] == "ws"
    assert token["stringData"]["token"] == "s3cret-token"
    assert "s3cret-token" not in json.dumps(pod)
    assert "selector" not in svc["spec"]  # its endpoint is the operator's to write
    assert pod["metadata"]["labels"][f"{PREFIX}/session"] == "s1"
    assert p.endpoint == f"http://s1-session.team.svc:{PORT}"


def test_a_session_services_endpoint_is_its_pod() -> None:
    session = {
        "metadata": {"name": "s1", "namespace": "team", "uid": "uid-s1"},
        "spec": {"workspaceRef": "ws"},
    }
    pod = {
        "metadata": {"name": "ws-pool-abc-session", "uid": "uid-pod"},
        "status": {"podIP": "10.244.0.7"},
    }
    eps = endpoint_slice(session, pod, ready=True)
    _owner_ok(eps, "CodeSession", "s1", "uid-s1")
    labels = eps["metadata"]["labels"]
    assert eps["metadata"]["name"] == "s1-session" == labels["kubernetes.io/service-name"]
    assert labels["endpointslice.kubernetes.io/managed-by"] == f"{PREFIX}-operator"
    assert eps["addressType"] == "IPv4"
    assert eps["endpoints"] == [
        {
            "addresses": ["10.244.0.7"],
            "conditions": {"ready": True},
            "targetRef": {
                "kind": "Pod",
                "namespace": "team",
                "name": "ws-pool-abc-session",
                "uid": "uid-pod",
            },
        }
    ]
    # the Service's port by name: kube-proxy matches them
    svc = session_service(_session())
    assert eps["ports"][0]["name"] == svc["spec"]["ports"][0]["name"] == "http"
    assert eps["ports"][0]["port"] == PORT
    assert endpoint_slice(session, {"metadata": {}, "status": {}}, ready=False)["endpoints"] == []


# ---- workspace ---------------------------------------------------------------------------


def _workspace(dns: DnsEgress | None = None, **spec: Any) -> WorkspaceParams:
    body = {"redis": {"url": "redis://10.1.2.3:6380/0"}, **spec}
    return WorkspaceParams(
        name="ws",
        namespace="team",
        uid="uid-ws",
        spec=WorkspaceSpec.model_validate(body),
        operator_namespace="codemode-system",
        dns=dns or DnsEgress(),
    )


def test_credentials_secret() -> None:
    p = _workspace()
    secret = credentials_secret(p, "redis://u:p@h:1/0")
    _owner_ok(secret, "Workspace", "ws", "uid-ws")
    assert secret["metadata"]["name"] == p.credentials_secret == "ws-redis"
    assert secret["stringData"] == {"url": "redis://u:p@h:1/0"}


def test_network_policy_shape() -> None:
    p = _workspace(
        network={
            "egress": [{"cidr": "203.0.113.7/32", "ports": [443]}, {"cidr": "10.0.0.0/8"}],
            "ingressFromNamespaces": ["gateway"],
        }
    )
    np = network_policy(p, "redis://10.1.2.3:6380/0")
    _owner_ok(np, "Workspace", "ws", "uid-ws")
    spec = np["spec"]
    assert spec["podSelector"] == {
        "matchLabels": {f"{PREFIX}/workspace": "ws", "app.kubernetes.io/component": "session"}
    }
    assert spec["policyTypes"] == ["Ingress", "Egress"]
    [ingress] = spec["ingress"]
    assert ingress["ports"] == [{"protocol": "TCP", "port": PORT}]
    values = ingress["from"][0]["namespaceSelector"]["matchExpressions"][0]["values"]
    assert values == ["codemode-system", "gateway", "team"]
    egress = spec["egress"]
    dns, redis_rule, *extra = egress
    assert dns["ports"] == [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]
    assert redis_rule == {
        "ports": [{"protocol": "TCP", "port": 6380}],
        "to": [{"ipBlock": {"cidr": "10.1.2.3/32"}}],
    }
    assert extra == [
        {
            "to": [{"ipBlock": {"cidr": "203.0.113.7/32"}}],
            "ports": [{"protocol": "TCP", "port": 443}],
        },
        {"to": [{"ipBlock": {"cidr": "10.0.0.0/8"}}]},
    ]


def test_network_policy_admits_the_operators_ingress_cidrs_beside_the_namespaces() -> None:
    """SESSION_INGRESS_CIDRS (an operator or gateway outside the cluster) are added as
    peers of the one ingress rule: the same server port, nothing else."""
    p = replace(_workspace(), ingress_cidrs=("172.18.0.1/32", "fd00::1/128"))
    [ingress] = network_policy(p, "redis://10.1.2.3:6380/0")["spec"]["ingress"]
    assert ingress["ports"] == [{"protocol": "TCP", "port": PORT}]
    assert ingress["from"][1:] == [
        {"ipBlock": {"cidr": "172.18.0.1/32"}},
        {"ipBlock": {"cidr": "fd00::1/128"}},
    ]
    [plain] = network_policy(_workspace(), "redis://10.1.2.3:6380/0")["spec"]["ingress"]
    assert len(plain["from"]) == 1  # none by default


def _selects(selector: dict[str, Any], pod_labels: dict[str, str]) -> bool:
    return all(pod_labels.get(k) == v for k, v in selector["matchLabels"].items())


def test_network_policy_selects_session_pods_but_not_sync_jobs() -> None:
    """A sync Job needs its git server, which the sessions' egress does not allow."""
    selector = network_policy(_workspace(), "redis://10.1.2.3:6380/0")["spec"]["podSelector"]
    pod = session_pod(_session(workspace="ws"))
    job = sync_job(_library(), "lib-sync-1")
    assert _selects(selector, pod["metadata"]["labels"])
    assert job["spec"]["template"]["metadata"]["labels"][f"{PREFIX}/workspace"] == "ws"
    assert not _selects(selector, job["spec"]["template"]["metadata"]["labels"])
    other = session_pod(_session(workspace="other"))
    assert not _selects(selector, other["metadata"]["labels"])


def test_network_policy_dns_reaches_only_the_cluster_dns_by_default() -> None:
    """Port 53 of the kube-dns pods in kube-system (kubeadm, kind, EKS, GKE, AKS) and of
    nothing else: not of any other pod (any pod can listen on 53), not of any address."""
    dns = network_policy(_workspace(), "redis://10.1.2.3:6380/0")["spec"]["egress"][0]
    assert dns == {
        "to": [
            {
                "namespaceSelector": {
                    "matchLabels": {"kubernetes.io/metadata.name": "kube-system"}
                },
                "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
            }
        ],
        "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}],
    }


def test_network_policy_dns_from_the_operator_settings() -> None:
    """SESSION_DNS_*: another DNS namespace and labels, node-local resolvers by CIDR; a
    namespace of "" leaves only the CIDRs, and nothing at all leaves no DNS rule (a rule
    without `to` would allow port 53 everywhere)."""
    dns = DnsEgress.from_env(
        {
            "SESSION_DNS_NAMESPACE": "dns-system",
            "SESSION_DNS_POD_LABELS": "app=coredns, tier=dns",
            "SESSION_DNS_CIDRS": "169.254.20.10/32,10.250.250.1/32, fd00::a/128",
        }
    )
    p = _workspace(dns=dns)
    [rule] = [
        r
        for r in network_policy(p, "redis://10.1.2.3:6380/0")["spec"]["egress"]
        if {"protocol": "UDP", "port": 53} in r.get("ports", [])
    ]
    assert rule["to"] == [
        {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "dns-system"}},
            "podSelector": {"matchLabels": {"app": "coredns", "tier": "dns"}},
        },
        {"ipBlock": {"cidr": "169.254.20.10/32"}},
        {"ipBlock": {"cidr": "10.250.250.1/32"}},
        {"ipBlock": {"cidr": "fd00::a/128"}},
    ]
    any_pod = DnsEgress.from_env({"SESSION_DNS_POD_LABELS": ""})
    egress = network_policy(_workspace(dns=any_pod), "redis://10.1.2.3:6380/0")["spec"]["egress"]
    assert egress[0]["to"] == [
        {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
            "podSelector": {},
        }
    ]
    cidrs_only = DnsEgress.from_env(
        {"SESSION_DNS_NAMESPACE": "", "SESSION_DNS_CIDRS": "169.254.20.10/32"}
    )
    egress = network_policy(_workspace(dns=cidrs_only), "redis://10.1.2.3:6380/0")["spec"]["egress"]
    assert egress[0]["to"] == [{"ipBlock": {"cidr": "169.254.20.10/32"}}]
    none = DnsEgress(namespace="", cidrs=())
    egress = network_policy(_workspace(dns=none), "redis://10.1.2.3:6380/0")["spec"]["egress"]
    assert egress == [
        {"ports": [{"protocol": "TCP", "port": 6380}], "to": [{"ipBlock": {"cidr": "10.1.2.3/32"}}]}
    ]


def test_network_policy_redis_service_peer() -> None:
    np = network_policy(_workspace(), "redis://redis.data.svc.cluster.local/0")
    redis_rule = np["spec"]["egress"][1]
    assert redis_rule["ports"] == [{"protocol": "TCP", "port": 6379}]
    assert redis_rule["to"] == [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "data"}}}
    ]


# ---- library -----------------------------------------------------------------------------


def _library(secret: bool = False, **source: Any) -> LibraryParams:
    src: dict[str, Any] = {"url": "https://git.example/repo.git", "path": "flows", **source}
    if secret:
        src["secretRef"] = {"name": "git-creds"}
    spec = WorkflowLibrarySpec.model_validate({"workspaceRef": "ws", "source": src})
    return LibraryParams(
        name="lib",
        namespace="team",
        uid="uid-lib",
        spec=spec,
        workspace="ws",
        workspace_id="wsid",
        prefix="cm",
        credentials_secret="ws-redis",
        image="img:1",
    )


def test_job_runs_store_bootstrap_without_credentials_in_args() -> None:
    p = _library(secret=True, ref={"tag": "v1.0"})
    job = sync_job(p, "lib-sync-1", secret_keys=frozenset({"username", "password"}))
    _owner_ok(job, "WorkflowLibrary", "lib", "uid-lib")
    pod = job["spec"]["template"]["spec"]
    c = _container(job["spec"]["template"])
    args = c["args"]
    assert args[:2] == ["store", "bootstrap"]
    assert args[args.index("--git") + 1] == "https://git.example/repo.git"
    assert args[args.index("--ref") + 1] == "v1.0"
    assert args[args.index("--path") + 1] == "flows"
    assert args[args.index("--library") + 1] == "lib"
    assert "--prune" in args
    assert "--username-file" in args and "--password-file" in args
    text = json.dumps(args)
    assert "redis://" not in text
    for word in SECRET_WORDS:
        assert word not in text
    env = {e["name"]: e for e in c["env"]}
    assert env["REDIS_URL"]["valueFrom"] == {"secretKeyRef": {"name": "ws-redis", "key": "url"}}
    assert env["STORAGE_PREFIX"]["value"] == "cm" and env["WORKSPACE_ID"]["value"] == "wsid"
    assert pod["automountServiceAccountToken"] is False
    assert pod["restartPolicy"] == "Never"
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    git = next(v for v in pod["volumes"] if v["name"] == "git")
    assert git["secret"]["secretName"] == "git-creds"
    assert job["spec"]["backoffLimit"] == 0 and job["spec"]["activeDeadlineSeconds"] == 300


def test_job_token_file_and_delete_mode() -> None:
    p = _library(secret=True, ref={"commit": "abcdef1"})
    args = bootstrap_args(p, secret_keys=frozenset({"token"}))
    assert args[args.index("--token-file") + 1].endswith("/token")
    assert args[args.index("--ref") + 1] == "abcdef1"
    delete = bootstrap_args(p, delete=True)
    assert delete[-1] == "--delete" and "--git" not in delete
    job = sync_job(p, "x", delete=True)
    assert all(v["name"] != "git" for v in job["spec"]["template"]["spec"]["volumes"])


def test_job_name_changes_with_spec_and_attempt() -> None:
    a, b = _library(), _library(ref={"tag": "v2"})
    assert job_name("lib", 1, a.spec) != job_name("lib", 1, b.spec)
    assert job_name("lib", 1, a.spec) != job_name("lib", 2, a.spec)
    assert len(job_name("x" * 63, 99999, a.spec)) <= 63


def test_parse_result_and_failure_reason() -> None:
    msg = 'cloning...\n{"revision": "abc", "count": 2, "added": 2}\n'
    assert parse_result(msg) == {"revision": "abc", "count": 2, "added": 2}
    assert parse_result("no json here") is None
    assert parse_result(None) is None
    assert failure_reason("line\nerror: repository not found\n") == "error: repository not found"
    assert failure_reason(None) == "the sync Job ended without a result"


# ---- redis ACL ---------------------------------------------------------------------------


def test_scoped_url_replaces_credentials() -> None:
    url = redis_acl.scoped_url(
        "redis://:adminpw@redis.example:6380/2", "codemode:ns:ws", "p@ss/word"
    )
    parts = urlsplit(url)
    assert parts.scheme == "redis" and parts.hostname == "redis.example"
    assert parts.port == 6380 and parts.path == "/2"
    assert unquote(parts.username or "") == "codemode:ns:ws"
    assert unquote(parts.password or "") == "p@ss/word"
    assert "adminpw" not in url
    tls = redis_acl.scoped_url("rediss://admin:x@[::1]/0", "u", "p")
    assert tls == "rediss://u:p@[::1]/0"


def test_acl_rules() -> None:
    rules = redis_acl.acl_rules("cm", "wsid", "pw")
    assert rules[:4] == ["reset", "on", ">pw", "resetchannels"]
    keys = [r for r in rules if r.startswith(("~", "%"))]
    assert "~cm:ws:wsid:*" in keys
    assert "%R~cm:tools:*" in keys
    assert "%R~cm:deps:deps" in keys and "~cm:deps:deps" not in keys
    assert not any(k in ("~*", "allkeys", "~cm:*") for k in rules)
    granted = [r for r in rules if r.startswith("+")]
    assert granted and rules.index("-@all") < rules.index(granted[0])
    assert not any(r.startswith("+@") for r in rules), "categories grow with Redis versions"
    for denied in ("scan", "keys", "dbsize", "info", "eval", "select", "client|tracking"):
        assert f"+{denied}" not in rules
    assert redis_acl.acl_username("team", "ws") == "codemode:team:ws"
