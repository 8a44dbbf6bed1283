"""The gateway's OpenAPI document lists every answer the gateway gives itself.

Each refusal is provoked against the real ASGI app (the Kubernetes API a stand-in in
memory) and its status looked up in the document under the route and method that gave
it; the source is scanned too, so a new refusal cannot be added without documenting it.
"""

from __future__ import annotations

import base64
import re
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
from codemode_operator.gateway import openapi
from codemode_operator.gateway.app import Gateway
from codemode_operator.gateway.auth import Reviewer
from codemode_operator.gateway.kubeapi import ApiError
from codemode_operator.gateway.mcp import GatewayBackend, McpEndpoint
from codemode_operator.gateway.targets import Targets
from codemode_operator.gateway.upstream import Upstream
from kubernetes import client

GATEWAY_SOURCE = Path(openapi.__file__).parent
TOKEN = "alice-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
NS = "/v1/namespaces/team/codesessions"
MCP = "/mcp/v1/namespaces/team"
SESSION_ROUTE = "/v1/namespaces/{namespace}/codesessions/{name}/{path}"
MCP_ROUTE = "/mcp/v1/namespaces/{namespace}"
MCP_BOUND = "/mcp/v1/namespaces/{namespace}/codesessions/{name}"
MCP_ACCEPT = {"Accept": "application/json, text/event-stream"}
INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-06-18",
        "capabilities": {},
        "clientInfo": {"name": "test", "version": "1"},
    },
}


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class StandIn:
    """alice may use `a`, `t` (terminated), `gone` (being deleted), `down` (unreachable)
    and `c` (missing); she may not create sessions; the API fails for `broken`."""

    async def call(self, method: str, path: str, body: Any = None, **_: Any) -> dict[str, Any]:
        if path.endswith("/tokenreviews"):
            ok = body["spec"]["token"] == TOKEN
            return {"status": {"authenticated": ok, "user": {"username": "alice"}}}
        if path.endswith("/subjectaccessreviews"):
            attrs = body["spec"]["resourceAttributes"]
            return {"status": {"allowed": attrs.get("name") in ("a", "t", "gone", "down", "c")}}
        found = await self.get_or_none(path)
        if found is None:
            raise ApiError(404, "not found")
        return found

    async def get_or_none(self, path: str) -> dict[str, Any] | None:
        name = path.rsplit("/", 1)[1]
        if "/codesessions/" in path:
            if name == "broken":
                raise ApiError(500, "etcd is down")
            phase = {"a": "Ready", "down": "Ready", "t": "Terminated", "gone": "Ready"}.get(name)
            if phase is None:
                return None
            meta = {"deletionTimestamp": "2026-01-01T00:00:00Z"} if name == "gone" else {}
            return {
                "metadata": meta,
                "status": {"phase": phase, "podName": name, "tokenSecret": "s"},
            }
        if "/secrets/" in path:
            return {"data": {"token": base64.b64encode(b"session-token").decode()}}
        return None


@asynccontextmanager
async def running_gateway() -> AsyncIterator[httpx.AsyncClient]:
    """Not a fixture: the MCP endpoint's task group must end in the task that began it."""
    targets = Targets(StandIn(), wait=1)  # type: ignore[arg-type]

    async def address(route: Any, status: Any) -> str:
        return f"http://127.0.0.1:{_closed_port()}"  # no session server runs here

    targets._address = address  # type: ignore[method-assign]
    mcp = McpEndpoint(GatewayBackend("http://127.0.0.1:1", client.Configuration(), wait=1))
    app = Gateway(Reviewer(StandIn()), targets, Upstream(), mcp)  # type: ignore[arg-type]
    async with (
        mcp.running(),
        httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://gw") as http,
    ):
        yield http


# (route in the document, method, path, headers, body, the status it must answer)
SESSION_CASES: list[tuple[str, str, dict[str, str], int]] = [
    ("GET", f"{NS}/a/health", {}, 401),
    ("GET", f"{NS}/a/health", {"Authorization": "Bearer forged"}, 401),
    ("GET", "/v1/namespaces/Team/codesessions/a/health", AUTH, 400),
    ("POST", f"{NS}/b/execute", AUTH, 403),
    ("GET", f"{NS}/c/health", AUTH, 404),
    ("GET", f"{NS}/c/health", {**AUTH, "X-Codemode-Workspace": "w"}, 403),
    ("GET", f"{NS}/t/health", AUTH, 409),
    ("GET", f"{NS}/gone/health", AUTH, 409),
    ("GET", f"{NS}/down/health", AUTH, 503),
]


async def test_every_answer_of_a_session_route_is_documented() -> None:
    async with running_gateway() as gateway:
        await _session_answers(gateway)


async def _session_answers(gateway: httpx.AsyncClient) -> None:
    paths = (await gateway.get("/openapi.json")).json()["paths"]
    for method, path, headers, status in SESSION_CASES:
        answer = await gateway.request(method, path, headers=headers)
        assert answer.status_code == status, (path, answer.text)
        assert answer.json()["detail"]
        documented = paths[SESSION_ROUTE][method.lower()]["responses"]
        assert str(status) in documented, (method, path, status)
    broken = await gateway.get(f"{NS}/broken/health", headers=AUTH)
    assert broken.status_code == 403  # not allowed: refused before any lookup


async def test_every_answer_of_the_mcp_endpoint_is_documented() -> None:
    async with running_gateway() as gateway:
        await _mcp_answers(gateway)


async def _mcp_answers(gateway: httpx.AsyncClient) -> None:
    paths = (await gateway.get("/openapi.json")).json()["paths"]
    json_ = {**MCP_ACCEPT, "Content-Type": "application/json"}
    opened = await gateway.post(MCP, json=INITIALIZE, headers={**AUTH, **MCP_ACCEPT})
    assert opened.status_code == 200, opened.text
    sid = {"mcp-session-id": opened.headers["mcp-session-id"], "mcp-protocol-version": "2025-06-18"}
    initialized = {"jsonrpc": "2.0", "method": "notifications/initialized"}
    cases: list[tuple[str, str, str, dict[str, str], Any, int]] = [
        (MCP_ROUTE, "POST", MCP, {**AUTH, **json_, **sid}, initialized, 202),
        (MCP_ROUTE, "POST", MCP, json_, INITIALIZE, 401),
        (MCP_BOUND, "POST", f"{MCP}/codesessions/b", {**AUTH, **json_}, INITIALIZE, 403),
        (MCP_ROUTE, "POST", "/mcp/v1/namespaces/Team", {**AUTH, **json_}, INITIALIZE, 400),
        (MCP_ROUTE, "POST", MCP, {**AUTH, **json_, "mcp-session-id": "nope"}, INITIALIZE, 404),
        (MCP_ROUTE, "POST", MCP, {**AUTH, "Accept": "text/plain"}, INITIALIZE, 406),
        (MCP_ROUTE, "POST", MCP, {**AUTH, **MCP_ACCEPT, "Content-Type": "text/plain"}, "x", 400),
        (MCP_ROUTE, "POST", MCP, {**AUTH, **json_}, "x" * (5 << 20), 413),
    ]
    for route, method, path, headers, body, status in cases:
        content = body.encode() if isinstance(body, str) else None
        answer = await gateway.request(
            method, path, headers=headers, content=content, json=None if content else body
        )
        assert answer.status_code == status, (path, status, answer.text)
        documented = paths[route][method.lower()]["responses"]
        assert str(status) in documented, (method, path, status)
    for method in ("PUT", "PATCH"):
        answer = await gateway.request(method, MCP, headers={**AUTH, **json_, **sid})
        assert answer.status_code == 405
        assert "405" in paths[MCP_ROUTE]["post"]["responses"]  # any method: one document
    own = await gateway.get("/healthz")
    assert own.status_code == 200 and "200" in paths["/healthz"]["get"]["responses"]


def test_no_status_in_the_gateways_source_is_left_out() -> None:
    """Every status the gateway's code answers with (`Refused(...)`, `_answer(send, ...)`)."""
    found: set[int] = set()
    for source in GATEWAY_SOURCE.glob("*.py"):
        text = source.read_text()
        found |= {int(s) for s in re.findall(r"Refused\(\s*(\d{3})", text)}
        found |= {int(s) for s in re.findall(r"_answer\(\s*send,\s*(\d{3})", text)}
    assert found >= {400, 401, 403, 404, 409, 503}
    documented = set(openapi.SESSION_ANSWERS) | set(openapi.MCP_GATEWAY_ANSWERS) | {200}
    assert found <= documented, found - documented
