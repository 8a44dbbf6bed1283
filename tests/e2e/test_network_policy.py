"""NetworkPolicy is enforced on the node cluster (kube-router's firewall), and the
Workspace policy the operator builds lets a session pod reach exactly its Redis,
cluster DNS and its declared allow-list, and be reached only on its server port from
its own and the operator's namespaces (docs/architecture.md §7).

Cluster DNS is the operator's SESSION_DNS_* setting: here the ``op`` namespace's pods
labelled ``k8s-app=kube-dns`` stand for kube-system's DNS pods, and the node's address
is allowed as the chart's ``session.dns.cidrs`` does on this cluster, whose CoreDNS runs
on the host. A pod listening on port 53 anywhere else is as unreachable as any other.

Every connection is a single TCP connect or DNS query with a short timeout, from
``kubectl exec`` in a pod, to pods and Services of this cluster or the API server;
nothing off the machine is ever addressed. Before any policy exists every probe must
connect, so a refusal afterwards is the policy's doing, not a dead target.
"""

from __future__ import annotations

import functools
import ipaddress
import json
import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from codemode_operator import PREFIX
from codemode_operator.api.workspace import WorkspaceSpec
from codemode_operator.builders.common import labels
from codemode_operator.builders.session import PORT
from codemode_operator.builders.workspace import WorkspaceParams, network_policy
from codemode_operator.settings import DnsEgress
from kubernetes import client

from tests.cluster.images import BASE, REDIS
from tests.cluster.layout import NODE_HOST_IP, POD_CIDR, SERVICE_CIDR
from tests.cluster.pytest_plugin import Cluster
from tests.k8s.operator_fixture import wait_for

pytestmark = pytest.mark.e2e

OTHER_PORT = 9090  # a second listener on session pods: ingress there must be refused
DNS_PORT = 53
DNS_LABELS = {"k8s-app": "kube-dns"}  # what kubeadm, kind, EKS, GKE and AKS label DNS pods
KIND = bool(os.environ.get("CODEMODE_KUBECONFIG"))  # kind: its own kube-dns pods in kube-system
ALLOWED_PORT, UNLISTED_PORT = 7000, 7001  # the allow-list names only the first

LISTEN = """
import select, socket, sys
servers = [socket.create_server(("", int(p))) for p in sys.argv[1:]]
print("listening", sys.argv[1:], flush=True)
while True:
    for s in select.select(servers, [], [])[0]:
        s.accept()[0].close()
"""

# One try per check, 2 s at most: a policy's REJECT answers at once.
PROBE = r"""
import json, socket, struct, sys
TIMEOUT = 2.0

def dns(server, name):
    labels = b"".join(bytes([len(p)]) + p.encode() for p in name.split("."))
    question = labels + b"\0" + struct.pack(">HH", 1, 1)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(TIMEOUT)
        s.connect((server, 53))
        s.send(struct.pack(">HHHHHH", 0x4242, 0x0100, 1, 0, 0, 0) + question)
        reply = s.recv(1500)
    pos, answers = 12 + len(question), []
    for _ in range(struct.unpack(">H", reply[6:8])[0]):
        pos += 2 if reply[pos] >= 0xC0 else reply.index(b"\0", pos) + 1 - pos
        rtype, _, _, length = struct.unpack(">HHIH", reply[pos:pos + 10])
        pos += 10
        if rtype == 1:
            answers.append(socket.inet_ntoa(reply[pos:pos + 4]))
        pos += length
    return ("answered " + ",".join(answers)) if answers else "no answer"

def tcp(host, port, payload):
    with socket.create_connection((host, port), timeout=TIMEOUT) as s:
        if not payload:
            return "connected"
        s.sendall(payload.encode())
        return s.recv(64).decode(errors="replace").strip() or "closed"

out = []
for c in json.loads(sys.argv[1]):
    try:
        if c["kind"] == "dns":
            detail = dns(c["host"], c["name"])
        else:
            detail = tcp(c["host"], c["port"], c.get("payload"))
    except ConnectionRefusedError:
        detail = "refused"
    except socket.timeout:
        detail = "timeout"
    except OSError as e:
        detail = f"{type(e).__name__}: {e}"
    out.append(detail)
print(json.dumps(out))
"""


@dataclass(frozen=True)
class Check:
    """One connection attempt from a pod and whether the policy should let it through."""

    source: str  # key of the pod it runs in
    what: str
    kind: str  # tcp | redis | dns
    host: str
    port: int
    allow: bool
    name: str = ""  # DNS question

    def spec(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind, "host": self.host, "port": self.port}
        if self.kind == "redis":
            out["payload"] = "PING\r\n"
        if self.kind == "dns":
            out["name"] = self.name
        return out

    def passed(self, detail: str) -> bool:
        """Whether the attempt got through (a Redis PONG, a DNS answer, a connect)."""
        if self.kind == "redis":
            return detail.startswith("+PONG")
        if self.kind == "dns":
            return detail.startswith("answered ")
        return detail == "connected"


@dataclass(frozen=True)
class Net:
    """Two workspaces' session pods and everything around them, without policies yet."""

    cluster: Cluster
    ns: dict[str, str]  # role -> namespace
    pods: dict[str, tuple[str, str]]  # key -> (namespace, pod name)
    ips: dict[str, str]  # pod key or "svc:<name>" -> address
    nameserver: str
    api: tuple[str, int]  # the API server's endpoint (its real address, not the Service)

    def run(self, checks: list[Check]) -> list[str]:
        """Each check's outcome, one ``kubectl exec`` per source pod."""
        details: dict[Check, str] = {}
        for source in dict.fromkeys(c.source for c in checks):
            mine = [c for c in checks if c.source == source]
            for c in mine:
                _must_be_local(c.host, self)
            ns, pod = self.pods[source]
            out = self.cluster.kubectl(
                "exec",
                "-n",
                ns,
                pod,
                "--",
                "python3",
                "-c",
                PROBE,
                json.dumps([c.spec() for c in mine]),
            )
            details.update(zip(mine, json.loads(out.strip().splitlines()[-1]), strict=True))
        return [details[c] for c in checks]


def _must_be_local(host: str, net: Net) -> None:
    """The workplace rule: only this cluster's pods, Services and node address."""
    if host.endswith(".svc.cluster.local"):
        return  # a Service name: cluster DNS answers with a ClusterIP or nothing
    if os.environ.get("CODEMODE_KUBECONFIG"):
        ok = host in net.ips.values() or host in (net.nameserver, net.api[0])
    else:
        ip = ipaddress.ip_address(host)
        ok = ip == ipaddress.ip_address(NODE_HOST_IP) or any(
            ip in ipaddress.ip_network(cidr) for cidr in (POD_CIDR, SERVICE_CIDR)
        )
    assert ok, f"refusing to probe {host}: not an address of the local cluster"


def _table(checks: list[Check], details: list[str], baseline: bool = False) -> str:
    """One row per check; ``!!`` marks the wrong ones (without policies all must pass)."""
    rows = [("", "from", "to", "want", "got", "detail")]
    for c, detail in zip(checks, details, strict=True):
        got, want = c.passed(detail), baseline or c.allow
        rows.append(
            (
                "!!" if got != want else "",
                c.source,
                c.what,
                "allow" if want else "deny",
                "allow" if got else "deny",
                detail,
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in rows
    )


def _container(name: str, image: str, args: list[str], port: int | None) -> dict[str, Any]:
    c: dict[str, Any] = {
        "name": name,
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "args" if image == REDIS else "command": args,
    }
    if port is not None:
        c["readinessProbe"] = {"tcpSocket": {"port": port}, "periodSeconds": 1}
    return c


def _pod(name: str, pod_labels: dict[str, str], container: dict[str, Any]) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "labels": pod_labels},
        "spec": {
            "containers": [container],
            "terminationGracePeriodSeconds": 0,
            "automountServiceAccountToken": False,
        },
    }


def _listener(name: str, pod_labels: dict[str, str], *ports: int) -> dict[str, Any]:
    args = ["python3", "-c", LISTEN, *map(str, ports)]
    return _pod(name, pod_labels, _container("listen", BASE, args, ports[0]))


def _client(name: str) -> dict[str, Any]:
    return _pod(name, {"role": "client"}, _container("sleep", BASE, ["sleep", "3600"], None))


def _service(name: str, selector: dict[str, str], port: int) -> dict[str, Any]:
    return {
        "metadata": {"name": name},
        "spec": {"selector": selector, "ports": [{"port": port, "targetPort": port}]},
    }


def _namespace(core: Any, role: str) -> str:
    name = f"np-{role}-{uuid.uuid4().hex[:6]}"
    core.create_namespace({"metadata": {"name": name}})
    wait_for(lambda: _has_default_sa(core, name), 30, f"namespace {name} ready")
    return name


def _has_default_sa(core: Any, ns: str) -> bool:
    try:
        core.read_namespaced_service_account("default", ns)
    except client.ApiException as e:
        if e.status == 404:
            return False
        raise
    return True


def _ready(core: Any, ns: str, name: str) -> bool:
    pod = core.read_namespaced_pod(name, ns)
    return any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])


@pytest.fixture(scope="module")
def net(e2e_cluster: Cluster) -> Iterator[Net]:
    """Namespaces ``op`` (the operator's: Redis and a client), ``a`` and ``b`` (one
    workspace each: a session-labelled listener, its Service, a client) and ``x``
    (anyone else: a client and two listeners, one of them on ws-a's allow-list). Three
    pods listen on port 53: ``dns`` in ``op`` with the DNS pods' labels (the cluster DNS
    the policy names), ``dns-unlabelled`` in ``op`` without them, and ``dns-x`` in ``x``
    with them (a pod anyone can start)."""
    core: Any = client.CoreV1Api(e2e_cluster.api_client())
    ns = {role: _namespace(core, role) for role in ("op", "a", "b", "x")}
    try:
        session = {
            "a": labels("session", "ws-a", session="s-a"),
            "b": labels("session", "ws-b", session="s-b"),
        }
        pods: dict[str, tuple[str, dict[str, Any]]] = {
            "redis": (
                "op",
                _pod(
                    "redis",
                    {"app": "redis"},
                    _container(
                        "redis",
                        REDIS,
                        ["--protected-mode", "no", "--save", "", "--appendonly", "no"],
                        6379,
                    ),
                ),
            ),
            "op-client": ("op", _client("op-client")),
            "sess-a": ("a", _listener("sess-a", session["a"], PORT, OTHER_PORT)),
            "client-a": ("a", _client("client-a")),
            "sess-b": ("b", _listener("sess-b", session["b"], PORT, OTHER_PORT)),
            "client-b": ("b", _client("client-b")),
            "client-x": ("x", _client("client-x")),
            "allowed": ("x", _listener("allowed", {"app": "allowed"}, ALLOWED_PORT, UNLISTED_PORT)),
            "unlisted": ("x", _listener("unlisted", {"app": "unlisted"}, ALLOWED_PORT)),
            "dns": ("op", _listener("dns", DNS_LABELS, DNS_PORT)),
            "dns-unlabelled": ("op", _listener("dns-unlabelled", {"app": "dns"}, DNS_PORT)),
            "dns-x": ("x", _listener("dns-x", DNS_LABELS, DNS_PORT)),
        }
        for role, pod in pods.values():
            core.create_namespaced_pod(ns[role], pod)
        services = {
            "redis": ("op", {"app": "redis"}, 6379),
            "sess-a": ("a", {f"{PREFIX}/session": "s-a"}, PORT),
            "sess-b": ("b", {f"{PREFIX}/session": "s-b"}, PORT),
        }
        for svc, (role, selector, port) in services.items():
            core.create_namespaced_service(ns[role], _service(svc, selector, port))
        for key, (role, _) in pods.items():
            wait_for(functools.partial(_ready, core, ns[role], key), 120, f"pod {key} ready")
        ips = {
            key: core.read_namespaced_pod(key, ns[role]).status.pod_ip
            for key, (role, _) in pods.items()
        }
        ips.update(
            {
                f"svc:{svc}": core.read_namespaced_service(svc, ns[role]).spec.cluster_ip
                for svc, (role, _, _) in services.items()
            }
        )
        kubernetes = core.read_namespaced_service("kubernetes", "default")
        ips["svc:kubernetes"] = kubernetes.spec.cluster_ip
        discovery: Any = client.DiscoveryV1Api(e2e_cluster.api_client())
        slices = discovery.list_namespaced_endpoint_slice(
            "default", label_selector="kubernetes.io/service-name=kubernetes"
        )
        api = (slices.items[0].endpoints[0].addresses[0], slices.items[0].ports[0].port)
        resolv = e2e_cluster.kubectl(
            "exec", "-n", ns["a"], "client-a", "--", "cat", "/etc/resolv.conf"
        )
        nameserver = next(
            line.split()[1] for line in resolv.splitlines() if line.startswith("nameserver")
        )
        pod_refs = {key: (ns[role], key) for key, (role, _) in pods.items()}
        yield Net(e2e_cluster, ns, pod_refs, ips, nameserver, api)
    finally:
        for name in ns.values():
            core.delete_namespace(name)


def _workspace_policy(
    net: Net, workspace: str, role: str, egress: list[dict[str, Any]]
) -> dict[str, Any]:
    """The operator's NetworkPolicy for a Workspace whose Redis is the ``op`` namespace's
    (as with the chart's bundled Redis). The owner reference is dropped: no Workspace
    object exists here, and the garbage collector would delete an orphan."""
    spec = WorkspaceSpec.model_validate(
        {
            "redis": {"url": f"redis://redis.{net.ns['op']}.svc.cluster.local:6379/0"},
            "network": {"egress": egress},
        }
    )
    params = WorkspaceParams(
        name=workspace,
        namespace=net.ns[role],
        uid=str(uuid.uuid4()),
        spec=spec,
        operator_namespace=net.ns["op"],
        dns=_dns(net),
    )
    policy = network_policy(params, f"redis://redis.{net.ns['op']}.svc.cluster.local:6379/0")
    del policy["metadata"]["ownerReferences"]
    return policy


def _dns(net: Net) -> DnsEgress:
    """The operator's DNS setting for this cluster: the ``op`` namespace's DNS-labelled
    pods, and CoreDNS on the host by address (tests/k8s/operator_fixture.cluster_env).
    On kind, the operator's default: the kube-dns pods in kube-system."""
    if KIND:
        return DnsEgress()
    return DnsEgress(namespace=net.ns["op"], cidrs=(f"{NODE_HOST_IP}/32",))


def _checks(net: Net) -> list[Check]:
    ip, op = net.ips, net.ns["op"]
    redis_name = f"redis.{op}.svc.cluster.local"
    return [
        # ws-a's session pod: out to its Redis, DNS and the allow-list only.
        Check("sess-a", "Redis Service (PING)", "redis", ip["svc:redis"], 6379, True),
        Check("sess-a", f"Redis by name {redis_name}", "redis", redis_name, 6379, True),
        Check(
            "sess-a", f"DNS {net.nameserver} udp", "dns", net.nameserver, 53, True, name=redis_name
        ),
        Check("sess-a", f"DNS {net.nameserver} tcp", "tcp", net.nameserver, 53, True),
        Check(
            "sess-a", f"allow-listed pod :{ALLOWED_PORT}", "tcp", ip["allowed"], ALLOWED_PORT, True
        ),
        Check(
            "sess-a",
            f"allow-listed pod :{UNLISTED_PORT}",
            "tcp",
            ip["allowed"],
            UNLISTED_PORT,
            False,
        ),
        Check("sess-a", "pod not on the allow-list", "tcp", ip["unlisted"], ALLOWED_PORT, False),
        Check("sess-a", "kubernetes Service", "tcp", ip["svc:kubernetes"], 443, False),
        Check("sess-a", f"API server {net.api[0]}:{net.api[1]}", "tcp", *net.api, False),
        Check("sess-a", "ws-b session pod", "tcp", ip["sess-b"], PORT, False),
        Check("sess-a", "ws-b session Service", "tcp", ip["svc:sess-b"], PORT, False),
        # Port 53 only of the cluster's DNS: not of any pod that listens there.
        Check("sess-a", "DNS-labelled pod in op :53", "tcp", ip["dns"], DNS_PORT, not KIND),
        Check("sess-a", "unlabelled pod in op :53", "tcp", ip["dns-unlabelled"], DNS_PORT, False),
        Check("sess-a", "DNS-labelled pod in x :53", "tcp", ip["dns-x"], DNS_PORT, False),
        Check("sess-b", "DNS-labelled pod in x :53", "tcp", ip["dns-x"], DNS_PORT, False),
        Check(
            "sess-b", f"DNS {net.nameserver} udp", "dns", net.nameserver, 53, True, name=redis_name
        ),
        # ws-b's session pod: its Redis yes, the other workspace no.
        Check("sess-b", "Redis Service (PING)", "redis", ip["svc:redis"], 6379, True),
        Check("sess-b", "ws-a session pod", "tcp", ip["sess-a"], PORT, False),
        Check("sess-b", "ws-a session Service", "tcp", ip["svc:sess-a"], PORT, False),
        Check("sess-b", "API server", "tcp", *net.api, False),
        # Into ws-a's session pod: the server port, from its and the operator's namespace.
        Check("client-a", f"ws-a session pod :{PORT}", "tcp", ip["sess-a"], PORT, True),
        Check("client-a", f"ws-a session Service :{PORT}", "tcp", ip["svc:sess-a"], PORT, True),
        Check(
            "client-a", f"ws-a session pod :{OTHER_PORT}", "tcp", ip["sess-a"], OTHER_PORT, False
        ),
        Check("op-client", f"ws-a session pod :{PORT}", "tcp", ip["sess-a"], PORT, True),
        Check("op-client", f"ws-b session pod :{PORT}", "tcp", ip["sess-b"], PORT, True),
        Check(
            "op-client", f"ws-a session pod :{OTHER_PORT}", "tcp", ip["sess-a"], OTHER_PORT, False
        ),
        Check("client-b", f"ws-a session pod :{PORT}", "tcp", ip["sess-a"], PORT, False),
        Check("client-b", f"ws-a session Service :{PORT}", "tcp", ip["svc:sess-a"], PORT, False),
        Check("client-b", f"ws-b session pod :{PORT}", "tcp", ip["sess-b"], PORT, True),
        Check("client-x", f"ws-a session pod :{PORT}", "tcp", ip["sess-a"], PORT, False),
        Check("client-x", f"ws-b session pod :{PORT}", "tcp", ip["sess-b"], PORT, False),
        # Unselected pods are untouched.
        Check(
            "client-x",
            f"allow-listed pod :{UNLISTED_PORT}",
            "tcp",
            ip["allowed"],
            UNLISTED_PORT,
            True,
        ),
    ]


def _await_enforced(net: Net, sentinels: list[Check], what: str) -> None:
    """Until every sentinel has the outcome it wants (kube-router syncs a moment after
    a change); 30 rounds at most, then fail with the last table."""
    for _ in range(30):
        details = net.run(sentinels)
        if all(c.passed(d) == c.allow for c, d in zip(sentinels, details, strict=True)):
            return
        time.sleep(1)
    pytest.fail(
        f"{what} never took effect (is kube-router running? "
        f"`python -m tests.cluster status`)\n{_table(sentinels, details)}"
    )


def _baseline(net: Net, checks: list[Check]) -> list[str]:
    """Every check's outcome before any policy, once all connect: a Service answers a
    moment after its pod is Ready (kube-proxy programs it then), so this waits up to 30
    rounds for that, and returns the last outcomes either way."""
    details = net.run(checks)
    for _ in range(30):
        if all(c.passed(d) for c, d in zip(checks, details, strict=True)):
            break
        time.sleep(1)
        details = net.run(checks)
    return details


def test_workspace_policy_allows_exactly_redis_dns_and_the_allow_list(net: Net) -> None:
    checks = _checks(net)
    before = _baseline(net, checks)
    unreachable = [c for c, d in zip(checks, before, strict=True) if not c.passed(d)]
    assert not unreachable, (
        "every target must answer before any policy, or a deny proves "
        f"nothing:\n{_table(checks, before, baseline=True)}"
    )

    networking: Any = client.NetworkingV1Api(net.cluster.api_client())
    allow_list = [{"cidr": f"{net.ips['allowed']}/32", "ports": [ALLOWED_PORT]}]
    for workspace, role, egress in (("ws-a", "a", allow_list), ("ws-b", "b", [])):
        networking.create_namespaced_network_policy(
            net.ns[role], _workspace_policy(net, workspace, role, egress)
        )
    try:
        _await_enforced(
            net,
            [c for c in checks if c.source == "client-x" and not c.allow],
            "the workspaces' NetworkPolicies",
        )
        after = net.run(checks)
        wrong = [c for c, d in zip(checks, after, strict=True) if c.passed(d) != c.allow]
        assert not wrong, f"NetworkPolicy outcomes differ (!!):\n{_table(checks, after)}"
    finally:
        for role in ("a", "b"):
            networking.delete_collection_namespaced_network_policy(net.ns[role])


def test_a_default_deny_policy_blocks_a_working_connection(
    cluster: Cluster, namespace: str
) -> None:
    """Fails fast when nothing enforces NetworkPolicy (kube-router stopped or broken):
    an ingress default-deny must refuse what connected a moment before, and lifting it
    must let the connection through again."""
    core: Any = client.CoreV1Api(cluster.api_client())
    core.create_namespaced_pod(namespace, _listener("server", {"role": "server"}, PORT))
    core.create_namespaced_pod(namespace, _client("client"))
    for name in ("server", "client"):
        wait_for(functools.partial(_ready, core, namespace, name), 120, f"pod {name} ready")
    server_ip = core.read_namespaced_pod("server", namespace).status.pod_ip
    net = Net(cluster, {}, {"client": (namespace, "client")}, {"server": server_ip}, "", ("", 0))
    open_ = Check("client", f"server :{PORT}", "tcp", server_ip, PORT, True)
    shut = Check("client", f"server :{PORT}", "tcp", server_ip, PORT, False)
    [detail] = _baseline(net, [open_])
    assert open_.passed(detail), f"no connection without a policy:\n{_table([open_], [detail])}"

    networking: Any = client.NetworkingV1Api(cluster.api_client())
    networking.create_namespaced_network_policy(
        namespace,
        {
            "metadata": {"name": "deny-ingress"},
            "spec": {
                "podSelector": {"matchLabels": {"role": "server"}},
                "policyTypes": ["Ingress"],
            },
        },
    )
    _await_enforced(net, [shut], "an ingress default-deny")
    networking.delete_namespaced_network_policy("deny-ingress", namespace)
    _await_enforced(net, [open_], "deleting the default-deny")
