"""The chart's gateway keeps its metrics off the port callers and an Ingress reach, can
turn its MCP endpoint off, and gives its replicas what they need to share MCP sessions."""

from __future__ import annotations

import base64
from typing import Any

from tests.cluster.helm import helm_binary
from tests.unit.test_chart_render import gateway_docs, render


def _gateway(*values: str) -> tuple[dict[str, Any], dict[str, Any], list[dict[str, Any]]]:
    docs = render(str(helm_binary()), *values)
    (secret,) = gateway_docs(docs, "Secret")
    assert len(base64.b64decode(secret["data"]["replica-key"])) == 48
    (dep,) = gateway_docs(docs, "Deployment")
    (svc,) = gateway_docs(docs, "Service")
    return dep["spec"]["template"]["spec"]["containers"][0], svc, gateway_docs(docs, "Ingress")


def test_metrics_have_a_port_of_their_own_that_no_ingress_routes() -> None:
    container, svc, _ = _gateway("--set", "gateway.ingress.enabled=true")
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["GATEWAY_METRICS_PORT"] == "9090" and env["GATEWAY_MCP"] == "on"
    assert {p["name"]: p["containerPort"] for p in container["ports"]} == {
        "http": 8080,
        "metrics": 9090,
    }
    assert [(p["name"], p["port"]) for p in svc["spec"]["ports"]] == [
        ("http", 80),
        ("metrics", 9090),
    ]
    _, _, (ingress,) = _gateway("--set", "gateway.ingress.enabled=true")
    backends = [
        p["backend"]["service"]["port"] for p in ingress["spec"]["rules"][0]["http"]["paths"]
    ]
    assert backends == [{"name": "http"}]


def test_a_published_service_has_no_metrics_port_and_mcp_can_be_off() -> None:
    for kind in ("LoadBalancer", "NodePort"):
        container, svc, _ = _gateway(
            "--set", f"gateway.service.type={kind}", "--set", "gateway.mcp=false",
            "--set", "gateway.metricsPort=9102",
        )  # fmt: skip
        assert [p["name"] for p in svc["spec"]["ports"]] == ["http"]
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert env["GATEWAY_MCP"] == "off" and env["GATEWAY_METRICS_PORT"] == "9102"


def test_replicas_pass_mcp_requests_on_with_their_address_and_shared_key() -> None:
    container, _, _ = _gateway()
    env = {e["name"]: e for e in container["env"]}
    assert env["GATEWAY_POD_IP"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
    key = env["GATEWAY_REPLICA_KEY"]["valueFrom"]["secretKeyRef"]
    assert key == {"name": "codemode-gateway", "key": "replica-key"}


def test_the_gateway_watches_the_sessions_of_the_operators_namespaces() -> None:
    for values, namespaces in [((), ""), (("--set", "watchNamespaces={a,b}"), "a,b")]:
        container, _, _ = _gateway(*values)
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert env["GATEWAY_NAMESPACES"] == namespaces


def test_the_session_argument_of_mcp_calls_can_be_turned_off() -> None:
    for values, setting in [
        ((), "on"),
        (("--set", "gateway.mcpAllowSessionArgument=false"), "off"),
    ]:
        container, _, _ = _gateway(*values)
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert env["GATEWAY_MCP_SESSION_ARGUMENT"] == setting
