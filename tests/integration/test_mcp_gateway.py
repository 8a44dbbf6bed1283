"""The gateway's MCP endpoint in front of a real `codemode serve`, driven by the MCP SDK's
own streamable HTTP client (issue 15, item 3).

The Kubernetes side is tests/integration/test_gateway_proxy.py's stand-in (alice may use
session `a` only); tests/e2e/test_gateway.py runs the same against a real API server.
What this tier shows: tool calls go through the gateway's own authorised routes with the
caller's token, so RBAC decides per call, and an MCP session belongs to whoever opened it.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import anyio
import httpx
import httpx2
import pytest
import uvicorn
from codemode_operator.gateway.app import Gateway
from codemode_operator.gateway.auth import Reviewer
from codemode_operator.gateway.mcp import GatewayBackend, McpEndpoint, Replicas
from codemode_operator.gateway.targets import Targets
from codemode_operator.gateway.upstream import Upstream
from kubernetes import client
from mcp.client import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from tests.conftest import RedisServer, free_port, wait_for_port
from tests.integration.server_fixture import ServerProcess, base_settings, running_server
from tests.integration.test_gateway_proxy import ALICE, StandInApi
from tests.integration.test_mcp_stdio import CODE_TOOLS, SESSION_TOOLS, Agent
from tests.unit.test_gateway_openapi import INITIALIZE

pytestmark = pytest.mark.redis


BOB = "bob-token"  # a valid token, allowed nothing


class WithBob(StandInApi):
    async def call(self, method: str, path: str, body: Any = None, **kw: Any) -> dict[str, Any]:
        if path.endswith("/tokenreviews") and body["spec"]["token"] == BOB:
            return {"status": {"authenticated": True, "user": {"username": "bob"}}}
        return await super().call(method, path, body, **kw)


@pytest.fixture(scope="module")
def server(redis_server: RedisServer) -> Iterator[ServerProcess]:
    env = base_settings(redis_server.url, f"gm{uuid.uuid4().hex[:8]}", WORKSPACE_ID="wsgm")
    with running_server(env) as srv:
        yield srv


@contextmanager
def serving(
    server: ServerProcess, key: bytes | None = None, allow_session_argument: bool = True
) -> Iterator[str]:
    """A gateway for `server`'s session `a`; with `key`, one replica of several."""
    api = WithBob(server)
    port = int(server.url.rsplit(":", 1)[1])
    gw_port = free_port()
    own = f"http://127.0.0.1:{gw_port}"

    targets = Targets(api)  # type: ignore[arg-type]
    original = targets._address

    async def address(route: Any, status: Any) -> str:
        return (await original(route, status)).replace(":8080", f":{port}")

    targets._address = address  # type: ignore[method-assign]
    replicas = Replicas(f"127.0.0.1:{gw_port}" if key else None, key)
    backend = GatewayBackend(own, client.Configuration(), 30, allow_session_argument)
    mcp = McpEndpoint(backend, replicas)
    app = Gateway(Reviewer(api), targets, Upstream(), mcp)  # type: ignore[arg-type]
    served = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=gw_port, log_level="warning", lifespan="on")
    )
    thread = threading.Thread(target=served.run, daemon=True)
    thread.start()
    wait_for_port(gw_port)
    try:
        yield own
    finally:
        served.should_exit = True
        thread.join(10)


@pytest.fixture(scope="module")
def gateway(server: ServerProcess) -> Iterator[str]:
    with serving(server) as url:
        yield url


class Alternating(httpx2.AsyncBaseTransport):
    """A load balancer that sends each request to the next replica in turn."""

    def __init__(self, ports: list[int]) -> None:
        self.ports, self.sent = ports, 0
        self.inner = httpx2.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        port = self.ports[self.sent % len(self.ports)]
        self.sent += 1
        request.url = request.url.copy_with(port=port)
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


@asynccontextmanager
async def agent(url: str, token: str) -> AsyncIterator[Agent]:
    headers = {"Authorization": f"Bearer {token}"}
    async with (
        httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30, read=300)) as http,
        streamable_http_client(url, http_client=http) as (read, write),
        ClientSession(read, write, read_timeout_seconds=120) as session,
    ):
        await session.initialize()
        yield Agent(session)


async def test_tools_run_as_the_caller_and_rbac_decides_each_call(gateway: str) -> None:
    async with agent(f"{gateway}/mcp/v1/namespaces/team/codesessions/a", ALICE) as mcp:
        tools = {tool.name for tool in (await mcp.session.list_tools()).tools}
        assert tools == CODE_TOOLS | SESSION_TOOLS
        assert await mcp.text("run_code", code="x = 41") == "(no output)"
        assert await mcp.text("run_code", code="print('hi')\nx + 1") == "42\n\nStdout:\nhi\n"
        # alice may not use b: the gateway's own route refuses her, the call says why.
        refused = await mcp.error("run_code", code="1", session="b")
        assert "403" in refused and "may not create codesessions/exec 'b'" in refused

    # Unbound: every code call names its session.
    async with agent(f"{gateway}/mcp/v1/namespaces/team", ALICE) as mcp:
        assert "bound to no session" in await mcp.error("run_code", code="1")
        assert await mcp.text("run_code", code="2 * 21", session="a") == "42"


async def test_the_endpoint_refuses_what_the_routes_refuse(gateway: str) -> None:
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
    bound_b = f"{gateway}/mcp/v1/namespaces/team/codesessions/b"
    for url, token, status in [
        (f"{gateway}/mcp/v1/namespaces/team", None, 401),
        (f"{gateway}/mcp/v1/namespaces/team", "forged", 401),
        (bound_b, ALICE, 403),
        (f"{gateway}/mcp/v1/namespaces/Team", ALICE, 400),
    ]:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        answer = httpx.post(url, json=body, headers=headers)
        assert answer.status_code == status, answer.text
        assert answer.json()["detail"]
    # The SDK's client fails to connect (it says no more than that the server refused).
    with pytest.raises(ExceptionGroup) as failed:
        async with agent(bound_b, ALICE):
            pass
    assert failed.group_contains(MCPError, match="error response", depth=2)


async def test_with_the_session_argument_off_an_endpoint_reaches_its_session_only(
    server: ServerProcess,
) -> None:
    """GATEWAY_MCP_SESSION_ARGUMENT=off: the namespace's endpoint is refused with the
    reason, and a bound endpoint's calls cannot name another session (refused by the
    setting, before any lookup or review of that session)."""
    with serving(server, allow_session_argument=False) as gateway:
        unbound = f"{gateway}/mcp/v1/namespaces/team"
        answer = httpx.post(unbound, json=INITIALIZE, headers={"Authorization": f"Bearer {ALICE}"})
        assert answer.status_code == 403, answer.text
        assert "bound to one session only" in answer.json()["detail"]
        assert "/mcp/v1/namespaces/team/codesessions/NAME" in answer.json()["detail"]
        anonymous = httpx.post(unbound, json=INITIALIZE)
        assert anonymous.status_code == 401  # who asks is checked first

        async with agent(f"{unbound}/codesessions/a", ALICE) as mcp:
            assert await mcp.text("run_code", code="6 * 7") == "42"
            assert await mcp.text("run_code", code="1 + 1", session="a") == "2"  # its own
            for tool, arguments in [
                ("run_code", {"code": "1"}),
                ("list_tools", {}),
                ("session_history", {}),
                ("suspend_session", {}),
            ]:
                refused = await mcp.error(tool, session="b", **arguments)
                assert "`session` argument is turned off" in refused, (tool, refused)
                assert "'a'" in refused
            assert await mcp.text("run_code", code="'still'") == "still"


async def test_an_mcp_session_is_its_openers_only(gateway: str) -> None:
    """Another user's token on an open MCP session is answered as for no session."""
    url = f"{gateway}/mcp/v1/namespaces/team"
    accept = {"Accept": "application/json, text/event-stream"}
    opened = httpx.post(
        url, json=INITIALIZE, headers={**accept, "Authorization": f"Bearer {ALICE}"}
    )
    assert opened.status_code == 200, opened.text
    headers = {
        **accept,
        "mcp-session-id": opened.headers["mcp-session-id"],
        "mcp-protocol-version": INITIALIZE["params"]["protocolVersion"],  # type: ignore[index]
    }
    ping = {"jsonrpc": "2.0", "id": 2, "method": "ping"}
    for token, status in ((ALICE, 200), (BOB, 404)):
        answer = httpx.post(url, json=ping, headers={**headers, "Authorization": f"Bearer {token}"})
        assert answer.status_code == status, answer.text


async def test_progress_and_cancellation_through_the_gateway(gateway: str, tmp_path: Any) -> None:
    """run_code's output arrives as progress; a cancelled call interrupts its run (the
    run writes a file when it sees the interrupt) and the session goes on."""
    marker = tmp_path / "interrupted"
    code = (
        "import time\n"
        "try:\n"
        "    print('started', flush=True)\n"
        "    while True:\n"
        "        time.sleep(0.05)\n"
        "except KeyboardInterrupt:\n"
        f"    open({str(marker)!r}, 'w').write('interrupted')\n"
        "    raise"
    )
    async with agent(f"{gateway}/mcp/v1/namespaces/team/codesessions/a", ALICE) as mcp:
        await mcp.text("run_code", code="kept = 'here'")
        messages: list[str | None] = []
        started = anyio.Event()

        async def on_progress(progress: float, total: float | None, message: str | None) -> None:
            messages.append(message)
            started.set()

        async def run() -> None:
            await mcp.session.call_tool("run_code", {"code": code}, progress_callback=on_progress)

        async with anyio.create_task_group() as group:
            group.start_soon(run)
            await started.wait()
            group.cancel_scope.cancel()
        assert messages[0] == "started\n"
        with anyio.fail_after(60):  # a bound on waiting, not a measurement
            while not marker.exists():
                await anyio.sleep(0.05)
        assert await mcp.text("run_code", code="kept") == "here"


async def test_an_mcp_session_works_through_any_replica(server: ServerProcess) -> None:
    """Two replicas sharing a key behind a balancer that alternates: a request reaching
    the replica that does not hold the session is passed on to the one that does."""
    key = b"shared-by-the-replicas"
    with serving(server, key) as one, serving(server, key) as two:
        ports = [int(one.rsplit(":", 1)[1]), int(two.rsplit(":", 1)[1])]
        balancer = Alternating(ports)
        headers = {"Authorization": f"Bearer {ALICE}"}
        async with (
            httpx2.AsyncClient(transport=balancer, headers=headers, timeout=60) as http,
            streamable_http_client(f"{one}/mcp/v1/namespaces/team/codesessions/a", http_client=http)
            as (read, write),
            ClientSession(read, write, read_timeout_seconds=120) as session,
        ):  # fmt: skip
            await session.initialize()
            mcp = Agent(session)
            assert await mcp.text("run_code", code="y = 20") == "(no output)"
            assert await mcp.text("run_code", code="y + 22") == "42"
            assert len((await session.list_tools()).tools) == len(CODE_TOOLS | SESSION_TOOLS)
        assert balancer.sent >= 6  # both replicas took requests
        # A session id naming a replica without the key's signature is no session.
        opened = httpx.post(
            f"{one}/mcp/v1/namespaces/team",
            json=INITIALIZE,
            headers={"Accept": "application/json, text/event-stream", **headers},
        )
        sid = opened.headers["mcp-session-id"]
        assert f".127.0.0.1:{ports[0]}." in sid
        forged = sid.rsplit(".", 1)[0] + ".AAAAAAAAAAAAAAAAAAAAAAAA"
        ping = {"jsonrpc": "2.0", "id": 2, "method": "ping"}
        answer = httpx.post(
            f"{two}/mcp/v1/namespaces/team",
            json=ping,
            headers={
                "Accept": "application/json, text/event-stream",
                "mcp-session-id": forged,
                "mcp-protocol-version": "2025-06-18",
                **headers,
            },
        )
        assert answer.status_code == 404, answer.text
