"""Operator configuration, parsed once at start-up from the environment the Deployment sets.

`python -m codemode_operator` calls `OperatorConfig.from_env()` once and hands the result
to everything that needs it (handlers.register, the kopf settings); no module reads the
environment at import.
"""

from __future__ import annotations

import ipaddress
import os
import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field


class ConfigError(ValueError):
    """An environment variable has a value the operator cannot use."""


def _number(
    env: Mapping[str, str], name: str, default: str, kind: type[float] | type[int], minimum: float
) -> float:
    text = env.get(name, default)
    try:
        value = kind(text)
    except ValueError:
        raise ConfigError(f"{name}={text!r} is not a {kind.__name__}") from None
    if value < minimum:
        raise ConfigError(f"{name}={text!r} must be at least {minimum:g}")
    return value


# A label's name: an optional DNS-subdomain prefix and a name of up to 63 characters; its
# value: up to 63 characters, alphanumeric at both ends (Kubernetes' own rules).
_LABEL_NAME = re.compile(
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
)
_LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$")
_NAMESPACE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


@dataclass(frozen=True)
class DnsEgress:
    """Where session pods may send DNS queries (port 53, UDP and TCP): the pods labelled
    `pod_labels` in `namespace` (the cluster's DNS behind its Service; no pod peer when
    `namespace` is empty), and the resolvers at `cidrs` (a node-local cache such as
    NodeLocal DNSCache's 169.254.20.10, or CoreDNS on the node's address). Nothing else
    answers on port 53 for them, so port 53 is no way to another pod or out of the cluster.
    """

    namespace: str = "kube-system"
    pod_labels: tuple[tuple[str, str], ...] = (("k8s-app", "kube-dns"),)
    cidrs: tuple[str, ...] = ()

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> DnsEgress:
        namespace = env.get("SESSION_DNS_NAMESPACE", cls.namespace).strip()
        if namespace and not _NAMESPACE.match(namespace):
            raise ConfigError(f"SESSION_DNS_NAMESPACE={namespace!r} is not a namespace name")
        labels_text = env.get("SESSION_DNS_POD_LABELS", "k8s-app=kube-dns")
        pod_labels = []
        for item in (i.strip() for i in labels_text.split(",")):
            if not item:
                continue
            key, sep, value = (p.strip() for p in item.partition("="))
            if not sep or not _LABEL_NAME.match(key) or not _LABEL_VALUE.match(value):
                raise ConfigError(
                    f"SESSION_DNS_POD_LABELS={labels_text!r}: {item!r} is not a label "
                    "name=value (comma-separated, e.g. k8s-app=kube-dns)"
                )
            pod_labels.append((key, value))
        return cls(namespace, tuple(pod_labels), _cidrs(env, "SESSION_DNS_CIDRS"))


def _cidrs(env: Mapping[str, str], name: str) -> tuple[str, ...]:
    """A comma-separated list of networks (each exact: no host bits set), deduplicated."""
    text = env.get(name, "")
    found = []
    for item in (i.strip() for i in text.split(",")):
        if not item:
            continue
        try:
            found.append(str(ipaddress.ip_network(item, strict=True)))
        except ValueError as exc:
            raise ConfigError(f"{name}={text!r}: {exc}") from None
    return tuple(dict.fromkeys(found))


@dataclass(frozen=True)
class OperatorConfig:
    session_image: str
    image_pull_policy: str
    namespace: str
    watch_namespaces: tuple[str, ...]
    metrics_port: int
    session_poll_seconds: float
    library_poll_seconds: float
    workers: int = 32
    workspace_poll_seconds: float = 30.0
    dns: DnsEgress = field(default_factory=DnsEgress)
    # Addresses outside the cluster's pods that may connect to session pods' server port
    # (SESSION_INGRESS_CIDRS): an operator or gateway run outside the cluster, such as
    # the operator on a developer's machine polling /health. None by default.
    session_ingress_cidrs: tuple[str, ...] = ()
    # kopf's name for this process; kopf asks getpass.getuser() otherwise, which fails for
    # a uid without a passwd entry (any runAsUser in a pod).
    identity: str = "codemode-operator"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> OperatorConfig:
        env = os.environ if env is None else env
        watch = tuple(n.strip() for n in env.get("WATCH_NAMESPACES", "").split(",") if n.strip())
        return cls(
            session_image=env.get("CODEMODE_SESSION_IMAGE", "localhost/codemode/session:dev"),
            image_pull_policy=env.get("CODEMODE_IMAGE_PULL_POLICY", "IfNotPresent"),
            namespace=env.get("OPERATOR_NAMESPACE", "codemode-system"),
            watch_namespaces=watch,
            metrics_port=int(_number(env, "METRICS_PORT", "8080", int, 0)),
            session_poll_seconds=_number(env, "SESSION_POLL_SECONDS", "5", float, 0.1),
            library_poll_seconds=_number(env, "LIBRARY_POLL_SECONDS", "10", float, 0.1),
            workers=int(_number(env, "OPERATOR_WORKERS", "32", int, 1)),
            workspace_poll_seconds=_number(env, "WORKSPACE_POLL_SECONDS", "30", float, 1),
            dns=DnsEgress.from_env(env),
            session_ingress_cidrs=_cidrs(env, "SESSION_INGRESS_CIDRS"),
            identity=env.get("POD_ID") or f"codemode-operator@{socket.gethostname()}",
        )
