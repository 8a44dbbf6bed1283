"""The gateway's MCP endpoint on a real node (issue 15, item 3, over HTTP): the MCP SDK's
own streamable HTTP client, on the host, through the gateway's Service, with
ServiceAccount tokens whose RBAC differs.

The gateway is the chart's (tests/e2e/test_gateway.py's `env`: sessions a and b, a token
`agent` allowed on a only). Its own ServiceAccount may read every CodeSession of the
namespace; `agent` may not, so a session tool that answers `agent` 403 shows that the
call ran with the caller's token, not the gateway's."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx
import httpx2
import pytest
from mcp.client import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from mcp.types import CallToolResult, TextContent

from tests.e2e import test_gateway
from tests.e2e.gateway_support import scale_gateway
from tests.e2e.test_gateway import _service_account_token
from tests.integration.test_mcp_stdio import CODE_TOOLS, SESSION_TOOLS

pytestmark = pytest.mark.e2e
env = test_gateway.env  # the fixture: the chart's gateway, sessions a and b, token `agent`

TOOLS = CODE_TOOLS | SESSION_TOOLS  # codemode mcp's tools, as the stdio tests list them


@asynccontextmanager
async def mcp_client(url: str, token: str) -> AsyncIterator[ClientSession]:
    headers = {"Authorization": f"Bearer {token}"}
    async with (
        httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30, read=300)) as http,
        streamable_http_client(url, http_client=http) as (read, write),
        ClientSession(read, write, read_timeout_seconds=240) as session,
    ):
        await session.initialize()
        yield session


async def call(mcp: ClientSession, tool: str, **arguments: Any) -> tuple[bool, str]:
    """(is a tool error, its text)."""
    result = await mcp.call_tool(tool, arguments)
    assert isinstance(result, CallToolResult)
    content = result.content[0]
    assert isinstance(content, TextContent)
    return bool(result.is_error), content.text


def _endpoint(env: dict[str, Any], name: str | None = None) -> str:
    base = f"{env['gateway']}/mcp/v1/namespaces/{env['namespace']}"
    return f"{base}/codesessions/{name}" if name else base


async def test_mcp_through_the_gateway_as_the_caller(env: dict[str, Any]) -> None:
    token = env["token"]  # RBAC: codesessions/exec on a, nothing else
    async with mcp_client(_endpoint(env, "a"), token) as session:
        assert {tool.name for tool in (await session.list_tools()).tools} == TOOLS
        assert await call(session, "run_code", code="x = 6 * 7") == (False, "(no output)")
        assert await call(session, "run_code", code="print('hi')\nx") == (
            False,
            "42\n\nStdout:\nhi\n",
        )
        await output_streams_and_a_cancelled_call_interrupts_its_run(session)
        error, text = await call(session, "run_code", code="1", session="b")
        assert error and "403" in text and "may not create codesessions/exec 'b'" in text
        # The gateway may list CodeSessions; the caller may not, and the call is the caller's.
        error, text = await call(session, "list_sessions")
        assert error and "403" in text, text

    # An endpoint bound to b is refused when the client connects.
    with pytest.raises(ExceptionGroup) as refused:
        async with mcp_client(_endpoint(env, "b"), token):
            pass
    assert refused.group_contains(MCPError, depth=2)

    # A token issued for session a alone works on a's endpoint, for code, and nowhere else.
    kinds, namespace = env["kinds"], env["namespace"]
    audience = f"codemode.dev/v1/namespaces/{namespace}/codesessions/a"
    scoped = kinds.core.create_namespaced_service_account_token(
        "agent", namespace, {"spec": {"audiences": [audience], "expirationSeconds": 600}}
    ).status.token
    async with mcp_client(_endpoint(env, "a"), scoped) as session:
        assert await call(session, "run_code", code="'scoped'") == (False, "scoped")
        error, text = await call(session, "run_code", code="1", session="b")
        assert error and "401" in text, text
    with pytest.raises(ExceptionGroup):
        async with mcp_client(_endpoint(env), scoped):  # bound to no session: no audience
            pass

    # A token issued for workspace gw is taken for its sessions (RBAC still decides: b is
    # 403, not 401); one for another workspace is not.
    def issued_for(audience: str) -> dict[str, str]:
        token = kinds.core.create_namespaced_service_account_token(
            "agent", namespace, {"spec": {"audiences": [audience], "expirationSeconds": 600}}
        ).status.token
        return {"Authorization": f"Bearer {token}"}

    sessions = f"{env['gateway']}/v1/namespaces/{namespace}/codesessions"
    workspace = issued_for(f"codemode.dev/v1/namespaces/{namespace}/workspaces/gw")
    other = issued_for(f"codemode.dev/v1/namespaces/{namespace}/workspaces/other")
    for headers, session, status in [
        (workspace, "a", 200),
        (workspace, "b", 403),
        (other, "a", 401),
    ]:
        answer = httpx.get(f"{sessions}/{session}/health", headers=headers)
        assert answer.status_code == status, (session, answer.text)

    # A caller whose Role also reads CodeSessions gets the session tools.
    reader = _service_account_token(env, "reader", [
        {"apiGroups": ["codemode.dev"], "resources": ["codesessions"],
         "verbs": ["get", "list", "watch"]},
        {"apiGroups": ["codemode.dev"], "resources": ["codesessions/exec"],
         "resourceNames": ["a"], "verbs": ["create"]},
    ])  # fmt: skip
    async with mcp_client(_endpoint(env), reader) as session:
        error, text = await call(session, "list_sessions")
        assert not error, text
        assert {row["name"] for row in json.loads(text)} >= {"a", "b"}
        error, text = await call(session, "run_code", code="'from a'", session="a")
        assert (error, text) == (False, "from a")
        error, text = await call(session, "session_history", session="a")
        assert not error, text
        messages = json.loads(text)["messages"]
        codes = [m["content"] for m in messages if m["role"] == "user"]
        assert "'from a'" in codes and "x = 6 * 7" in codes, codes


async def output_streams_and_a_cancelled_call_interrupts_its_run(session: ClientSession) -> None:
    """run_code's output arrives as progress notifications while it runs; cancelling the
    call interrupts the run in the pod (its except block records it), and the session
    keeps its variables. Were the run not interrupted, the next call would wait behind it."""
    code = (
        "import time\n"
        "interrupted = False\n"
        "try:\n"
        "    print('started', flush=True)\n"
        "    while True:\n"
        "        time.sleep(0.05)\n"
        "except KeyboardInterrupt:\n"
        "    interrupted = True\n"
        "    raise"
    )
    messages: list[str | None] = []
    started = anyio.Event()

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        messages.append(message)
        started.set()

    async def run() -> None:
        await session.call_tool("run_code", {"code": code}, progress_callback=on_progress)

    async with anyio.create_task_group() as group:
        group.start_soon(run)
        await started.wait()
        group.cancel_scope.cancel()  # the SDK's client sends notifications/cancelled
    assert messages[0] == "started\n"
    assert await call(session, "run_code", code="(interrupted, x)") == (False, "[true, 42]")


async def test_an_mcp_session_through_either_of_two_replicas(env: dict[str, Any]) -> None:
    """Two gateway pods; the client's requests go to each in turn (their pod addresses):
    the replica that does not hold the session passes the request on to the one that does."""
    pods = scale_gateway(env["kubeconfig"], env["kinds"], 2)
    ports_by_host = [url.split("//")[1] for url in pods]
    balancer = AlternatingHosts(ports_by_host)
    headers = {"Authorization": f"Bearer {env['token']}"}
    url = f"{pods[0]}/mcp/v1/namespaces/{env['namespace']}/codesessions/a"
    timeout = httpx2.Timeout(30, read=300)
    async with (
        httpx2.AsyncClient(transport=balancer, headers=headers, timeout=timeout) as http,
        streamable_http_client(url, http_client=http) as (read, write),
        ClientSession(read, write, read_timeout_seconds=240) as session,
    ):  # fmt: skip
        await session.initialize()
        assert await call(session, "run_code", code="z = 40") == (False, "(no output)")
        assert await call(session, "run_code", code="z + 2") == (False, "42")
        assert len((await session.list_tools()).tools) == len(TOOLS)
    assert set(balancer.hosts_used) == set(ports_by_host)


class AlternatingHosts(httpx2.AsyncBaseTransport):
    """A load balancer that sends each request to the next address in turn."""

    def __init__(self, hosts: list[str]) -> None:
        self.hosts = hosts
        self.hosts_used: list[str] = []
        self.inner = httpx2.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        host, port = self.hosts[len(self.hosts_used) % len(self.hosts)].split(":")
        self.hosts_used.append(f"{host}:{port}")
        request.url = request.url.copy_with(host=host, port=int(port))
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()
