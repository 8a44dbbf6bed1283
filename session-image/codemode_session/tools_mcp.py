"""MCP tools: an MCP server described in YAML, its tools called from agent code as
`tools.<name>.<tool>(...)`, through the official MCP SDK's client.

A server starts on the first use in a worker (a call, `tools.list()`, a search) and
stays up for the worker's life: a stdio server is the worker's child and is killed with
its process tree; a remote one (streamable HTTP or SSE) is reached within the
Workspace's egress policy. The SDK is asyncio; agent code is not, so each server has a
thread with its own event loop, where one task holds the connection open from start to
stop (anyio's scopes must close in the task that opened them) and calls are submitted
to that loop.
"""

from __future__ import annotations

import asyncio
import atexit
import base64
import concurrent.futures
import contextlib
import tempfile
import threading
from dataclasses import dataclass
from typing import Any

from codemode_session.tool_errors import ToolError
from codemode_session.tools_http import expand_env, secret_header_values

START_TIMEOUT = 30.0


@dataclass(frozen=True)
class McpToolSpec:
    name: str
    transport: str  # stdio, streamable-http or sse
    description: str = ""
    tags: tuple[str, ...] = ()
    timeout: float = 60.0
    command: str | None = None
    args: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    url: str | None = None
    headers: tuple[tuple[str, str], ...] = ()
    secret_headers: tuple[tuple[str, str], ...] = ()
    kind: str = "mcp"

    def summary(self, tools: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        """As list and search show it; `tools` once the server was asked for them."""
        found: dict[str, Any] = {
            "name": self.name,
            "type": self.kind,
            "description": self.description,
            "tags": list(self.tags),
            "transport": self.transport,
        }
        if tools is not None:
            found["tools"] = tools
        return found

    def search_text(self) -> str:
        return f"{self.description}. tags: {', '.join(self.tags)}. an MCP server"


def mcp_spec(name: str, model: Any) -> McpToolSpec:
    """The spec of a validated `tool_model_remote.McpToolModel`."""
    return McpToolSpec(
        name=name,
        transport=model.transport,
        description=model.description,
        tags=model.tags,
        timeout=model.timeout,
        command=model.command,
        args=tuple(model.args),
        env=tuple(model.env.items()),
        url=model.url,
        headers=tuple(model.headers.items()),
        secret_headers=tuple(model.secret_headers.items()),
    )


def _wrapped(schema: Any) -> bool:
    """The SDK's servers wrap a tool's non-object return as `{"result": value}`, with an
    output schema of that one property: such answers are unwrapped."""
    return isinstance(schema, dict) and set(schema.get("properties") or {}) == {"result"}


def _content(result: Any, what: str, unwrap: bool = False) -> Any:
    """A tool's answer: its structured content, else its text, else its content blocks."""
    blocks = list(getattr(result, "content", None) or [])
    texts = [b.text for b in blocks if getattr(b, "type", None) == "text"]
    if getattr(result, "is_error", False):
        raise ToolError(f"{what} failed: {' '.join(texts) or 'no message'}")
    structured = getattr(result, "structured_content", None)
    if structured is not None:
        if unwrap and isinstance(structured, dict) and set(structured) == {"result"}:
            return structured["result"]
        return structured
    if len(texts) == len(blocks):
        return "\n".join(texts)
    out = []
    for block in blocks:
        item = block.model_dump(mode="json", exclude_none=True)
        if isinstance(item.get("data"), bytes):
            item["data"] = base64.b64encode(item["data"]).decode()
        out.append(item)
    return out


class McpServer:
    """One running MCP server of a worker."""

    def __init__(self, spec: McpToolSpec) -> None:
        self.spec = spec
        self.tools: list[dict[str, Any]] = []
        self._unwrap: set[str] = set()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name=f"mcp-{spec.name}", daemon=True
        )
        self._session: Any = None
        self._stop: asyncio.Event | None = None
        # A stdio server's stderr, for the reason it did not start; closed in `close`.
        self._errlog = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115
        self._thread.start()
        self._held: concurrent.futures.Future[None] = asyncio.run_coroutine_threadsafe(
            self._hold(), self._loop
        )
        ready = asyncio.run_coroutine_threadsafe(self._wait_ready(), self._loop)
        try:
            ready.result(START_TIMEOUT)
        except Exception as exc:
            self.close()
            raise ToolError(
                f"MCP server {spec.name!r} did not start: {self._reason(exc)}"
            ) from None

    def _reason(self, exc: BaseException) -> str:
        if isinstance(exc, TimeoutError):
            text = f"no answer within {START_TIMEOUT:g}s"
        else:
            inner = getattr(exc, "exceptions", None)
            while inner:  # an exception group from the SDK's task groups: its first cause
                exc = inner[0]
                inner = getattr(exc, "exceptions", None)
            text = f"{type(exc).__name__}: {exc}"
        with contextlib.suppress(OSError, ValueError):
            self._errlog.seek(0)
            tail = self._errlog.read()[-500:].strip()
            if tail:
                text += f" (its stderr: {tail})"
        return text

    async def _wait_ready(self) -> None:
        while self._session is None:
            if self._held.done():
                self._held.result()  # raises what stopped it
                raise ToolError("the connection closed")
            await asyncio.sleep(0.01)

    async def _hold(self) -> None:
        """Open the connection, list the tools, and keep it until `close`."""
        from mcp.client.session import ClientSession

        self._stop = asyncio.Event()
        async with contextlib.AsyncExitStack() as stack:
            read, write = await stack.enter_async_context(self._transport())
            session = await stack.enter_async_context(ClientSession(read, write))
            await session.initialize()
            listed = await session.list_tools()
            self.tools = [
                {
                    "name": t.name,
                    "description": t.description or "",
                    "input_schema": t.input_schema,
                }
                for t in listed.tools
            ]
            self._unwrap = {t.name for t in listed.tools if _wrapped(t.output_schema)}
            self._session = session
            await self._stop.wait()

    def _transport(self) -> Any:
        spec = self.spec
        if spec.transport == "stdio":
            from mcp.client.stdio import (
                StdioServerParameters,
                get_default_environment,
                stdio_client,
            )

            env = {
                **get_default_environment(),
                **{k: expand_env(v, spec.name) for k, v in spec.env},
            }
            params = StdioServerParameters(command=str(spec.command), args=list(spec.args), env=env)
            return stdio_client(params, errlog=self._errlog)
        headers = {k: expand_env(v, spec.name) for k, v in spec.headers}
        headers.update(secret_header_values(spec.name, spec.secret_headers))
        if spec.transport == "sse":
            from mcp.client.sse import sse_client

            return sse_client(str(spec.url), headers=headers)
        from mcp.client.streamable_http import streamable_http_client
        from mcp.shared._httpx_utils import create_mcp_http_client

        client = create_mcp_http_client(headers=headers)
        return streamable_http_client(str(spec.url), http_client=client)

    def call(self, tool: str, arguments: dict[str, Any]) -> Any:
        what = f"MCP tool {self.spec.name}.{tool}"
        if tool not in {t["name"] for t in self.tools}:
            names = ", ".join(t["name"] for t in self.tools) or "-"
            raise ToolError(f"MCP server {self.spec.name!r} has no tool {tool!r}; tools: {names}")
        if self._held.done():
            raise ToolError(f"{what}: the server stopped ({self._reason_of_stop()})")
        future = asyncio.run_coroutine_threadsafe(
            self._session.call_tool(tool, arguments), self._loop
        )
        try:
            result = future.result(self.spec.timeout)
        except TimeoutError:
            future.cancel()
            raise ToolError(f"{what}: no answer within {self.spec.timeout:g}s") from None
        except ToolError:
            raise
        except Exception as exc:
            raise ToolError(f"{what}: {self._reason(exc)}") from None
        return _content(result, what, unwrap=tool in self._unwrap)

    def _reason_of_stop(self) -> str:
        try:
            self._held.result()
        except BaseException as exc:
            return self._reason(exc)
        return "closed"

    def close(self) -> None:
        if self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        try:
            self._held.result(5)
        except concurrent.futures.TimeoutError:
            self._held.cancel()  # stuck in its start: cancelling closes what it opened
            with contextlib.suppress(Exception):
                self._held.result(5)
        except BaseException:  # it had stopped already; closing goes on
            pass
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        with contextlib.suppress(OSError):
            self._errlog.close()


_servers: dict[McpToolSpec, McpServer] = {}
_starting = threading.Lock()


def server_for(spec: McpToolSpec) -> McpServer:
    """The worker's running server for `spec`, started on first use (a changed YAML is
    another spec: another server)."""
    with _starting:
        found = _servers.get(spec)
        if found is not None and not found._held.done():
            return found
        if found is not None:
            found.close()
        server = McpServer(spec)
        _servers[spec] = server
        return server


def started(spec: McpToolSpec) -> McpServer | None:
    found = _servers.get(spec)
    return found if found is not None and not found._held.done() else None


@atexit.register
def _stop_all() -> None:
    for server in list(_servers.values()):
        with contextlib.suppress(Exception):
            server.close()
