"""The operator's settings that shape session pods' network policy and the Workspace timer:
parsed once by OperatorConfig.from_env, and a value the operator cannot use is a ConfigError
that names the variable (the operator then exits at start with that one line)."""

from __future__ import annotations

import pytest
from codemode_operator.reconcile.workspace import params_of
from codemode_operator.settings import ConfigError, DnsEgress, OperatorConfig


def test_dns_defaults_are_the_usual_cluster_dns() -> None:
    cfg = OperatorConfig.from_env({})
    assert cfg.dns == DnsEgress("kube-system", (("k8s-app", "kube-dns"),), ())
    assert cfg.workspace_poll_seconds == 30.0


def test_dns_settings_are_parsed_and_normalised() -> None:
    cfg = OperatorConfig.from_env(
        {
            "SESSION_DNS_NAMESPACE": " dns ",
            "SESSION_DNS_POD_LABELS": "example.com/role=resolver, app=",
            "SESSION_DNS_CIDRS": " 169.254.20.10/32 ,,10.250.250.1/32,169.254.20.10/32,FD00::/8",
            "WORKSPACE_POLL_SECONDS": "600",
        }
    )
    assert cfg.dns == DnsEgress(
        "dns",
        (("example.com/role", "resolver"), ("app", "")),
        ("169.254.20.10/32", "10.250.250.1/32", "fd00::/8"),
    )
    assert cfg.workspace_poll_seconds == 600.0


def test_the_dns_settings_reach_the_workspace_params() -> None:
    cfg = OperatorConfig.from_env({"SESSION_DNS_CIDRS": "10.250.250.1/32"})
    body = {
        "metadata": {"name": "ws", "namespace": "team", "uid": "u"},
        "spec": {"redis": {"url": "redis://r:6379/0"}},
    }
    assert params_of(body, cfg).dns.cidrs == ("10.250.250.1/32",)


def test_session_ingress_cidrs_reach_the_workspace_params() -> None:
    cfg = OperatorConfig.from_env({"SESSION_INGRESS_CIDRS": "172.18.0.1/32, ,172.18.0.1/32"})
    body = {
        "metadata": {"name": "ws", "namespace": "team", "uid": "u"},
        "spec": {"redis": {"url": "redis://r:6379/0"}},
    }
    assert params_of(body, cfg).ingress_cidrs == ("172.18.0.1/32",)
    assert OperatorConfig.from_env({}).session_ingress_cidrs == ()


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("SESSION_DNS_CIDRS", "10.250.250.1/24"),  # host bits set
        ("SESSION_DNS_CIDRS", "dns.example"),
        ("SESSION_INGRESS_CIDRS", "172.18.0.1/16"),
        ("SESSION_DNS_POD_LABELS", "k8s-app"),
        ("SESSION_DNS_POD_LABELS", "k8s app=kube-dns"),
        ("SESSION_DNS_POD_LABELS", "k8s-app=kube dns"),
        ("SESSION_DNS_NAMESPACE", "Kube_System"),
        ("WORKSPACE_POLL_SECONDS", "0"),
        ("WORKSPACE_POLL_SECONDS", "often"),
    ],
)
def test_unusable_values_name_the_variable(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name):
        OperatorConfig.from_env({name: value})
