"""`python -m codemode_operator.gateway`: serve the gateway (settings from the environment).

GATEWAY_PORT (8080); GATEWAY_METRICS_PORT (9090: Prometheus metrics, on a port apart from
the one callers and an Ingress reach; 0: none); GATEWAY_AUTH_CACHE_SECONDS (10: how long a
TokenReview or SubjectAccessReview answer is reused); GATEWAY_NAMESPACES (the namespaces
whose CodeSessions it watches, comma-separated; empty: every namespace);
GATEWAY_SESSION_CACHE_SECONDS (5: how long a session's address is reused while that watch
is out of step); GATEWAY_WAIT_SECONDS (120: how long a request waits for a session to
resume or start); GATEWAY_MCP (on: the MCP endpoint at /mcp/v1/namespaces/...; off: none);
GATEWAY_MCP_SESSION_ARGUMENT (on; off: MCP endpoints bound to one session only, and no tool
call may name another in `session`);
GATEWAY_POD_IP and GATEWAY_REPLICA_KEY (a secret all replicas share): with both, an MCP
request reaching a replica that does not hold its session is passed on to the one that does.
"""

from __future__ import annotations

import os

import uvicorn
from prometheus_client import start_http_server

from codemode_operator.gateway import metrics
from codemode_operator.gateway.app import Gateway
from codemode_operator.gateway.auth import Reviewer
from codemode_operator.gateway.informer import Informer
from codemode_operator.gateway.kubeapi import KubeApi
from codemode_operator.gateway.targets import Targets
from codemode_operator.gateway.upstream import Upstream


def build() -> Gateway:
    api = KubeApi.from_environment()
    # A streamed run may print nothing for minutes: no read timeout towards sessions.
    upstream = Upstream(connect_timeout=10.0)
    wait = float(os.environ.get("GATEWAY_WAIT_SECONDS", "120"))
    namespaces = [
        n.strip() for n in os.environ.get("GATEWAY_NAMESPACES", "").split(",") if n.strip()
    ]
    mcp = None
    if os.environ.get("GATEWAY_MCP", "on") != "off":
        from codemode_operator.gateway.mcp import GatewayBackend, McpEndpoint, Replicas

        port = os.environ.get("GATEWAY_PORT", "8080")
        # Tool calls come back through this gateway's own routes, as the caller.
        backend = GatewayBackend(
            f"http://127.0.0.1:{port}",
            api.conf,
            wait,
            allow_session_argument=os.environ.get("GATEWAY_MCP_SESSION_ARGUMENT", "on") != "off",
        )
        pod_ip = os.environ.get("GATEWAY_POD_IP")
        key = os.environ.get("GATEWAY_REPLICA_KEY", "").encode() or None
        replicas = Replicas(f"{pod_ip}:{port}" if pod_ip and key else None, key)
        mcp = McpEndpoint(backend, replicas)
    return Gateway(
        Reviewer(api, ttl=float(os.environ.get("GATEWAY_AUTH_CACHE_SECONDS", "10"))),
        Targets(
            api,
            ttl=float(os.environ.get("GATEWAY_SESSION_CACHE_SECONDS", "5")),
            wait=wait,
            informer=Informer(api, namespaces or None),
        ),
        upstream,
        mcp,
    )


def main() -> None:
    metrics_port = int(os.environ.get("GATEWAY_METRICS_PORT", "9090"))
    if metrics_port:
        # A thread of its own: it serves while the event loop is busy, and its own port
        # keeps it off whatever publishes the gateway's.
        start_http_server(
            metrics_port, addr=os.environ.get("GATEWAY_HOST", "0.0.0.0"), registry=metrics.REGISTRY
        )
    uvicorn.run(
        build(),
        host=os.environ.get("GATEWAY_HOST", "0.0.0.0"),
        port=int(os.environ.get("GATEWAY_PORT", "8080")),
        log_level=os.environ.get("GATEWAY_LOG_LEVEL", "warning"),
        access_log=False,
        proxy_headers=False,  # the gateway reads no client address
        lifespan="on",
    )


if __name__ == "__main__":
    main()
