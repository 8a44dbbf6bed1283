"""The MCP server: py-code-mode's eleven tools and the session tools, on the official SDK.

Every tool takes an optional `session`: without it, the call goes to the server's own
session (bound); with it, to the session it names, unless the backend turns that off
(Backend.check_session, checked here before any tool runs). Tools are synchronous (the SDK runs
them on worker threads) and every failure is a tool error with the reason, never a
crash: the agent reads why and can fix its call.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, ParamSpec

import anyio.to_thread
import httpx
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import ToolAnnotations
from pydantic import Field

from codemode_session.client import AsyncSessionClient, Output
from codemode_session.errors import CodemodeError
from codemode_session.mcp.backends import Backend
from codemode_session.mcp.render import as_json, run_text
from codemode_session.results import ExecuteResult

log = logging.getLogger("codemode.mcp")
P = ParamSpec("P")

Session = Annotated[
    str | None,
    Field(
        description="Another session to use for this call: a session id (plain session "
        "server) or a CodeSession name (Kubernetes). Leave it out for this server's own."
    ),
]
Limit = Annotated[int, Field(ge=1, le=1000, description="At most this many results")]
# Annotations are read from module globals (the SDK evaluates them), so these live here.
Name = Annotated[str | None, Field(description="A CodeSession's name (Kubernetes only)")]
Wait = Annotated[
    float | None, Field(ge=0, description="Seconds to wait until done (default: do not)")
]

READ = ToolAnnotations(read_only_hint=True, open_world_hint=False)
WRITE = ToolAnnotations(read_only_hint=False, destructive_hint=False, open_world_hint=False)
DELETE = ToolAnnotations(read_only_hint=False, destructive_hint=True, open_world_hint=False)

INSTRUCTIONS = """\
Python "code mode" sessions. Write Python and run it with run_code; variables persist
between runs. In the code, `tools`, `workflows`, `artifacts` and `deps` are ready.
Search workflows before solving a task from scratch; save what works as a workflow."""


def describe(exc: Exception) -> str:
    """One readable line for a failure, whatever raised it."""
    if isinstance(exc, CodemodeError):
        return str(exc)
    if isinstance(exc, httpx.TimeoutException):
        return f"the session server did not answer in time ({_where(exc)})"
    if isinstance(exc, httpx.TransportError):
        return f"cannot reach the session server ({_where(exc)}): {exc or type(exc).__name__}"
    if type(exc).__name__ == "ApiException":  # kubernetes'
        status, reason = getattr(exc, "status", "?"), getattr(exc, "reason", "")
        return f"the Kubernetes API answered {status} {reason}".strip()
    return f"{type(exc).__name__}: {exc}"


def _where(exc: httpx.TransportError) -> str:
    try:
        return str(exc.request.url)
    except RuntimeError:  # no request attached
        return "no request"


def _tool_error(tool: str, exc: Exception) -> ToolError:
    """A tool's failure as the MCP tool error the client sees; one we did not expect is
    logged with its traceback too."""
    if not isinstance(exc, CodemodeError | httpx.HTTPError):
        log.warning("tool %s failed", tool, exc_info=exc)
    return ToolError(describe(exc))


def reported(fn: Callable[P, str], backend: Backend | None = None) -> Callable[P, str]:
    """Any failure of the tool becomes a tool error carrying its reason; with `backend`,
    a `session` argument it does not allow is one (the SDK passes arguments by name)."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> str:
        try:
            if backend is not None:
                backend.check_session(_session_argument(kwargs))
            return fn(*args, **kwargs)
        except ToolError:
            raise
        except Exception as exc:
            raise _tool_error(fn.__name__, exc) from exc

    return wrapper


def reported_async(
    fn: Callable[P, Awaitable[str]], backend: Backend | None = None
) -> Callable[P, Awaitable[str]]:
    """`reported`, for a coroutine tool."""

    @functools.wraps(fn)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> str:
        try:
            if backend is not None:
                backend.check_session(_session_argument(kwargs))
            return await fn(*args, **kwargs)
        except ToolError:
            raise
        except Exception as exc:
            raise _tool_error(fn.__name__, exc) from exc

    return wrapper


def _session_argument(kwargs: dict[str, Any]) -> str | None:
    session = kwargs.get("session")
    return session if isinstance(session, str) else None


async def run_streamed(
    backend: Backend,
    session: str | None,
    code: str,
    timeout: float | None,
    progress: Callable[[str], Awaitable[None]],
) -> ExecuteResult:
    """Run `code` as a stream: each piece of output goes to `progress` as it is printed.
    The MCP call being cancelled cancels this task, which closes the stream: the session
    server then interrupts the run (as for any client that goes away)."""
    for attempt in (1, 2):
        # Finding the session may block (a CodeSession resuming): off the event loop.
        client = await anyio.to_thread.run_sync(backend.resolve, session)
        stream = AsyncSessionClient(
            client.base_url,
            token=client.token,
            session_id=client.session_id,
            workspace_id=client.workspace_id,
        )
        try:
            try:
                async with stream:
                    async for item in stream.execute_stream(code, timeout):
                        if isinstance(item, Output):
                            await progress(item.text)
                        else:
                            return item
            finally:
                client.session_id = stream.session_id or client.session_id
            raise CodemodeError("the session server ended the run's stream without a result")
        except Exception as exc:
            # Only failures before the run started are retried (no address, no session).
            if attempt == 2 or not await anyio.to_thread.run_sync(
                backend.recover, session, client, exc
            ):
                raise
    raise AssertionError("unreachable")


def adder(
    server: MCPServer[Any], annotations: ToolAnnotations, backend: Backend
) -> Callable[[Callable[P, str]], Callable[P, str]]:
    """A decorator that registers a text tool whose failures are tool errors."""

    def register(fn: Callable[P, str]) -> Callable[P, str]:
        server.add_tool(reported(fn, backend), annotations=annotations, structured_output=False)
        return fn

    return register


def build(backend: Backend) -> MCPServer[Any]:
    server: MCPServer[Any] = MCPServer("codemode", instructions=INSTRUCTIONS, log_level="WARNING")
    add_code_tools(server, backend)
    add_session_tools(server, backend)
    return server


def add_code_tools(server: MCPServer[Any], backend: Backend) -> None:
    """py-code-mode's tools: same names, parameters and answers, plus `session`."""

    async def run_code(
        code: Annotated[str, Field(description="Python source; the last expression is the value")],
        ctx: Context[Any, Any],
        timeout: Annotated[
            float | None, Field(gt=0, description="Seconds before the run is stopped")
        ] = None,
        session: Session = None,
    ) -> str:
        """Run Python in the session and answer its value, stdout and stderr ("Error: ..."
        when the code raised). Variables, imports and functions persist between runs.

        Ready in the code: `tools.<name>(...)`, `tools.search("query")`;
        `workflows.<name>(...)`, `workflows.search("query")`,
        `workflows.create("name", source, "description")`; `artifacts.save("name", data)`,
        `artifacts.load("name")`; `deps.add("package")`, `deps.list()`."""
        sent = 0

        async def progress(text: str) -> None:
            nonlocal sent
            sent += 1
            await ctx.report_progress(sent, None, text)

        result = await run_streamed(backend, session, code, timeout, progress)
        return run_text(result, backend.take_notes())

    server.add_tool(reported_async(run_code, backend), annotations=WRITE, structured_output=False)

    @adder(server, READ, backend)
    def list_tools(session: Session = None) -> str:
        """All tools callable as `tools.<name>(...)`, with descriptions and parameters (JSON)."""
        return as_json(backend.call(session, lambda c: c.list_tools()))

    @adder(server, READ, backend)
    def search_tools(
        query: Annotated[str, Field(description="What you want to do, in words")],
        limit: Limit = 10,
        session: Session = None,
    ) -> str:
        """Tools matching an intent ("make HTTP requests"), best first (JSON)."""
        return as_json(backend.call(session, lambda c: c.search_tools(query, limit)))

    @adder(server, READ, backend)
    def list_workflows(session: Session = None) -> str:
        """All workflows of the workspace: reusable recipes, `workflows.<name>(...)` (JSON)."""
        return as_json(backend.call(session, lambda c: c.list_workflows()))

    @adder(server, READ, backend)
    def search_workflows(
        query: Annotated[str, Field(description="The task, in words")],
        limit: Limit = 5,
        session: Session = None,
    ) -> str:
        """Start here: workflows that may already solve the task, best first (JSON). With
        none, solve it with run_code, then save the solution with create_workflow."""
        return as_json(backend.call(session, lambda c: c.search_workflows(query, limit)))

    @adder(server, WRITE, backend)
    def create_workflow(
        name: Annotated[str, Field(description="Its name: `workflows.<name>(...)` calls it")],
        source: Annotated[str, Field(description="Python defining `async def run(...)`")],
        description: Annotated[str, Field(description="What it does, for search")],
        session: Session = None,
    ) -> str:
        """Save a reusable workflow for every agent of the workspace; answers its record
        (JSON). `run` may call `tools`, `workflows` and `artifacts`."""
        return as_json(
            backend.call(session, lambda c: c.create_workflow(name, source, description))
        )

    @adder(server, DELETE, backend)
    def delete_workflow(
        name: Annotated[str, Field(description="The workflow's name")], session: Session = None
    ) -> str:
        """Delete a workflow: `true`, or `false` when there was none of that name."""
        return as_json(backend.call(session, lambda c: c.delete_workflow(name)))

    @adder(server, READ, backend)
    def list_artifacts(session: Session = None) -> str:
        """Saved artifacts (persistent data, `artifacts.load("name")`) with metadata (JSON)."""
        return as_json(backend.call(session, lambda c: c.list_artifacts()))

    @adder(server, READ, backend)
    def list_deps(session: Session = None) -> str:
        """Python packages configured for the workspace (JSON)."""
        return as_json(backend.call(session, lambda c: c.list_deps()))

    @adder(server, WRITE, backend)
    def add_dep(
        package: Annotated[str, Field(description='A requirement, e.g. "pandas>=2"')],
        session: Session = None,
    ) -> str:
        """Install a package and add it to the workspace's deps (JSON result); refused
        where the server does not allow runtime deps."""
        return as_json(backend.call(session, lambda c: c.add_dep(package)))

    @adder(server, DELETE, backend)
    def remove_dep(
        package: Annotated[str, Field(description="The package's name")],
        session: Session = None,
    ) -> str:
        """Remove a package the workspace added (JSON result)."""
        return as_json(backend.call(session, lambda c: c.remove_dep(package)))


def add_session_tools(server: MCPServer[Any], backend: Backend) -> None:
    """create, list, history, fork, suspend, resume: what a session server or the
    operator offers; the answer says when an operation needs the other kind."""

    @adder(server, WRITE, backend)
    def create_session(
        name: Name = None,
        workspace: Annotated[str | None, Field(description="Its workspace")] = None,
        agent: Annotated[str | None, Field(description="The agent it belongs to")] = None,
    ) -> str:
        """Open a new session and answer its id or record (JSON); pass it as `session` to
        other tools. A plain server issues the id; on Kubernetes, name the CodeSession."""
        return as_json(backend.create(name, workspace, agent))

    @adder(server, READ, backend)
    def list_sessions(
        agent: Annotated[str | None, Field(description="Only this agent's")] = None,
        workspace: Annotated[str | None, Field(description="Only this workspace's")] = None,
    ) -> str:
        """Sessions, newest first (JSON): CodeSessions with their phase, or on a plain
        server the sessions this server opened and the recorded history."""
        return as_json(backend.list(agent, workspace))

    @adder(server, READ, backend)
    def session_history(
        session: Session = None,
        offset: Annotated[int, Field(ge=0, description="Skip this many messages")] = 0,
        limit: Limit = 100,
    ) -> str:
        """A session's recorded runs, oldest first: its code and results (JSON)."""
        return as_json(backend.history(session, offset, limit))

    @adder(server, WRITE, backend)
    def fork_session(session: Session = None, new_name: Name = None) -> str:
        """Copy a session (JSON record of the copy). A CodeSession's fork starts from its
        latest variables and history; a plain server copies the history only."""
        return as_json(backend.fork(session, new_name))

    @adder(server, WRITE, backend)
    def suspend_session(session: Session = None, wait: Wait = None) -> str:
        """Save a CodeSession's variables and stop its pod (Kubernetes only)."""
        return as_json(backend.suspend(session, wait))

    @adder(server, WRITE, backend)
    def resume_session(session: Session = None, wait: Wait = None) -> str:
        """Bring a suspended CodeSession back with its variables (Kubernetes only)."""
        return as_json(backend.resume(session, wait))
