"""A Workspace's children: the scoped Redis credentials Secret and the NetworkPolicy."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from codemode_operator import PREFIX
from codemode_operator.api.workspace import WorkspaceSpec
from codemode_operator.builders.common import labels, owner_reference
from codemode_operator.builders.session import PORT
from codemode_operator.settings import DnsEgress


@dataclass(frozen=True)
class WorkspaceParams:
    name: str
    namespace: str
    uid: str
    spec: WorkspaceSpec
    operator_namespace: str
    dns: DnsEgress = field(default_factory=DnsEgress)
    ingress_cidrs: tuple[str, ...] = ()  # the operator's SESSION_INGRESS_CIDRS

    @property
    def workspace_id(self) -> str:
        return self.spec.workspace_id or self.name

    @property
    def credentials_secret(self) -> str:
        return f"{self.name}-redis"

    def owner(self) -> list[dict[str, Any]]:
        return [owner_reference("Workspace", self.name, self.uid)]


def credentials_secret(p: WorkspaceParams, scoped_url: str) -> dict[str, Any]:
    """What sessions and Jobs get: a URL that can only reach this workspace's keys."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": p.credentials_secret,
            "namespace": p.namespace,
            "labels": labels("credentials", p.name),
            "ownerReferences": p.owner(),
        },
        "type": "Opaque",
        "stringData": {"url": scoped_url},
    }


def _redis_peer(url: str) -> tuple[dict[str, Any] | None, int]:
    """A NetworkPolicy peer for the Redis host: its namespace for *.svc names, its IP."""
    parts = urlsplit(url)
    port = parts.port or 6379
    host = parts.hostname or ""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        pieces = host.split(".")
        if len(pieces) >= 2 and (len(pieces) == 2 or pieces[2] == "svc"):
            return {
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": pieces[1]}}
            }, port
        return None, port
    bits = 32 if address.version == 4 else 128
    return {"ipBlock": {"cidr": f"{address}/{bits}"}}, port


def _dns_peers(dns: DnsEgress) -> list[dict[str, Any]]:
    """The cluster's DNS only: its pods (by namespace and labels; a policy sees the pods
    behind the kube-dns Service's ClusterIP) and the node-local resolvers' CIDRs. Not
    "port 53 anywhere": any pod can listen on port 53, and an address outside the
    cluster would be a way out."""
    peers: list[dict[str, Any]] = []
    if dns.namespace:
        peers.append(
            {
                "namespaceSelector": {
                    "matchLabels": {"kubernetes.io/metadata.name": dns.namespace}
                },
                "podSelector": {"matchLabels": dict(dns.pod_labels)} if dns.pod_labels else {},
            }
        )
    peers += [{"ipBlock": {"cidr": cidr}} for cidr in dns.cidrs]
    return peers


def network_policy(p: WorkspaceParams, redis_url: str) -> dict[str, Any]:
    """Session pods: ingress only from allowed namespaces (and the operator's
    SESSION_INGRESS_CIDRS, for clients outside the cluster) on the server port; egress only
    to Redis, the cluster's DNS (`p.dns`, the operator's SESSION_DNS_* settings) and the
    declared allow-list. Nothing else, not even the API.

    Only session pods are selected: a library's sync Job carries the workspace label
    too but must reach its git server, which no session may."""
    allowed_ns = sorted(
        {p.namespace, p.operator_namespace, *p.spec.network.ingress_from_namespaces}
    )
    peer, redis_port = _redis_peer(redis_url)
    redis_rule: dict[str, Any] = {"ports": [{"protocol": "TCP", "port": redis_port}]}
    if peer is not None:
        redis_rule["to"] = [peer]
    egress: list[dict[str, Any]] = []
    dns_peers = _dns_peers(p.dns)
    if dns_peers:  # none configured: no DNS at all (an egress rule without `to` is "anywhere")
        egress.append(
            {
                "to": dns_peers,
                "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}],
            }
        )
    egress.append(redis_rule)
    for rule in p.spec.network.egress:
        entry: dict[str, Any] = {"to": [{"ipBlock": {"cidr": rule.cidr}}]}
        if rule.ports:
            entry["ports"] = [{"protocol": "TCP", "port": port} for port in rule.ports]
        egress.append(entry)
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {
            "name": f"{p.name}-sessions",
            "namespace": p.namespace,
            "labels": labels("network-policy", p.name),
            "ownerReferences": p.owner(),
        },
        "spec": {
            "podSelector": {
                "matchLabels": {
                    f"{PREFIX}/workspace": p.name,
                    "app.kubernetes.io/component": "session",
                }
            },
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [
                {
                    "from": [
                        {
                            "namespaceSelector": {
                                "matchExpressions": [
                                    {
                                        "key": "kubernetes.io/metadata.name",
                                        "operator": "In",
                                        "values": allowed_ns,
                                    }
                                ]
                            }
                        },
                        *({"ipBlock": {"cidr": cidr}} for cidr in p.ingress_cidrs),
                    ],
                    "ports": [{"protocol": "TCP", "port": PORT}],
                }
            ],
            "egress": egress,
        },
    }
