"""Sessions and running code: `/sessions`, `/execute`, `/info`, `/reset`."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Header, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import StreamingResponse

from codemode_session import __version__
from codemode_session.server.auth import token_owner
from codemode_session.server.config import ServerConfig
from codemode_session.server.dependencies import (
    CallerWorkspace,
    OptionalSessionHeader,
    Owner,
    SessionHeader,
    State,
    authenticated_router,
)
from codemode_session.server.execute_stream import MEDIA_TYPE, events, wants_stream
from codemode_session.server.http_errors import TooLarge, UnknownSession
from codemode_session.server.models import (
    CreateSessionRequest,
    CreateSessionResponse,
    ExecuteRequest,
    ExecuteResponse,
)
from codemode_session.server.openapi import errors
from codemode_session.server.responses import AsciiJSONResponse
from codemode_session.server.routers.tools import tool_specs_for
from codemode_session.server.state import UNKNOWN_SESSION, ServerState
from codemode_session.storage.history import validate_agent_id

AgentHeader = Annotated[
    str | None,
    Header(
        alias="X-Agent-ID",
        description="The agent a new session's history is indexed under (default: AGENT_ID)",
    ),
]

router = authenticated_router()


# 200, not 201: py-code-mode's clients take only 200 as success for what they create.
@router.post("/sessions", response_model=CreateSessionResponse, responses=errors(403, 409, 429))
async def create_session(
    state: State, body: CreateSessionRequest | None = None, x_agent_id: AgentHeader = None
) -> CreateSessionResponse:
    agent = (body.agent_id if body else None) or x_agent_id
    if agent is not None:
        validate_agent_id(agent)
    workspace = state.resolve_workspace(body.workspace_id if body else None)
    session = await state.open_session(workspace, agent_id=agent)
    return CreateSessionResponse(
        session_id=session.id,
        workspace_id=workspace,
        idle_timeout_seconds=state.config.session_idle_timeout,
    )


@router.delete("/sessions")
async def end_session(state: State, owner: Owner, x_session_id: SessionHeader) -> dict[str, Any]:
    if state.sessions.get(x_session_id, owner) is None or not await state.sessions.end(
        x_session_id
    ):
        raise UnknownSession(UNKNOWN_SESSION)
    return {"status": "ended", "session_id": x_session_id}


def run_timeout(requested: float | None, config: ServerConfig) -> float:
    """The run's deadline; past MAX_EXECUTION_TIME a 422 shaped like every other
    (a list of errors), as the document says."""
    timeout = requested or config.default_timeout
    if timeout > config.max_execution_time:
        raise RequestValidationError(
            [
                {
                    "type": "less_than_equal",
                    "loc": ("body", "timeout"),
                    "input": timeout,
                    "msg": f"timeout {timeout:g}s exceeds MAX_EXECUTION_TIME="
                    f"{config.max_execution_time:g}s",
                    "ctx": {"le": config.max_execution_time},
                }
            ]
        )
    return timeout


STREAMED: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The run's result; with `Accept: text/event-stream`, server-sent "
        "events as it runs: `stdout` and `stderr` ({text}), then `result` (this JSON) "
        "or `error` ({status, detail})",
        "content": {MEDIA_TYPE: {"schema": {"type": "string"}}},
    }
}


@router.post(
    "/execute", response_model=ExecuteResponse, responses={**STREAMED, **errors(409, 429, 503)}
)
async def execute(
    body: ExecuteRequest,
    request: Request,
    x_session_id: OptionalSessionHeader = None,
    x_agent_id: AgentHeader = None,
) -> Response:
    # The server state and the caller from the request itself, not from dependencies:
    # /execute is the hot path, and each dependency FastAPI resolves costs more than this.
    state: ServerState = request.app.state.server
    config = state.config
    if len(body.code.encode()) > config.max_code_bytes:
        raise TooLarge(f"code is larger than {config.max_code_bytes} bytes")
    timeout = run_timeout(body.timeout, config)
    if x_agent_id is not None:
        validate_agent_id(x_agent_id)  # used only when this run creates the session
    session = await state.session_for_execute(x_session_id, token_owner(request), x_agent_id)
    if wants_stream(request.headers.get("accept")):
        return StreamingResponse(
            events(state, session, body.code, timeout),
            media_type=MEDIA_TYPE,
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
    # The reply already has ExecuteResponse's fields and JSON types (it came as JSON
    # from the worker); returning it as is skips a second validation per request.
    return AsciiJSONResponse(await state.execute(session, body.code, timeout))


@router.get("/info", responses=errors(503))
async def info(workspace: CallerWorkspace) -> dict[str, Any]:
    config = workspace.state.config
    storage = workspace.storage()
    tools = await tool_specs_for(storage, config.tools_path)
    workflows = [
        {"name": w.name, "description": w.description} for w in await storage.list_workflows()
    ]
    return {
        "tools": [{"name": s.name, "description": s.description} for s in tools.values()],
        "workflows": workflows,
        "skills": workflows,
        "artifacts_path": storage.description,
        "workspace_id": storage.workspace_id,
        "allow_runtime_deps": config.allow_runtime_deps,
        "default_timeout": config.default_timeout,
        "max_execution_time": config.max_execution_time,
        "version": __version__,
        "session": _session_state(workspace),
    }


def _session_state(workspace: CallerWorkspace) -> dict[str, Any] | None:
    """The caller's session's saved state: the last stored snapshot (names saved and not
    saved, size, time), the last write's error, what its current worker restored."""
    if not workspace.session_id:
        return None
    session = workspace.state.sessions.get(workspace.session_id, workspace.owner)
    if session is None:
        return None
    stored = session.snapshot_meta or {}
    return {
        "session_id": session.id,
        "executions": session.executions,
        "snapshot": {
            "taken_at": stored.get("taken_at"),
            "bytes": stored.get("bytes"),
            "saved": stored.get("saved") or [],
            "unsaved": stored.get("unsaved") or {},
        }
        if stored
        else None,
        "snapshot_error": session.snapshot_error,
        "restored": session.restored,
    }


@router.post("/reset")
async def reset(state: State, owner: Owner, x_session_id: SessionHeader) -> dict[str, Any]:
    session = state.sessions.get(x_session_id, owner)
    if session is not None:
        await state.sessions.reset(session)
    elif not state.client_id_allowed(x_session_id):
        state.session(x_session_id, owner)  # the 400 Invalid session ID that says why
    # A client-chosen id with no session yet has nothing to reset: its first run starts
    # a fresh interpreter anyway.
    return {"status": "reset", "session_id": x_session_id}
