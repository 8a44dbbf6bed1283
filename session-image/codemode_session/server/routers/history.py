"""`/api/history`: the workspace's session history (Agentix's create/get/list/fork/delete).

Records are written by the server on every `/execute` (server/history.py); these routes
read, fork and delete them. The workspace is the X-Session-ID session's, else the
server's. A live session's id may name its history: an id the server issued is mapped
to the digest its history is kept under (storage/history.history_id).
"""

from __future__ import annotations

import secrets
import time
from typing import Annotated, Any

from fastapi import Path, Query, Request

from codemode_session.errors import ForbiddenError, NotFoundError
from codemode_session.server.dependencies import CallerWorkspace, authenticated_router
from codemode_session.server.history import History
from codemode_session.server.models import documented
from codemode_session.server.openapi import errors
from codemode_session.storage.history import (
    AGENT_ID_RE,
    HISTORY_ID_HELP,
    HISTORY_ID_RE,
    HistoryStore,
    history_id,
    validate_agent_id,
    validate_history_id,
)

router = authenticated_router()

HistoryId = Annotated[
    str,
    Path(json_schema_extra=documented(HISTORY_ID_RE.pattern, 1, 160), description=HISTORY_ID_HELP),
]
AgentQuery = Annotated[
    str | None,
    Query(
        json_schema_extra=documented(AGENT_ID_RE.pattern, 1, 128),
        description="The agent whose sessions to list (default: the server's AGENT_ID)",
    ),
]
Offset = Annotated[int, Query(ge=0, le=1_000_000_000)]
Limit = Annotated[int, Query(ge=1, le=1000)]


async def _store(request: Request, workspace: CallerWorkspace) -> tuple[History, HistoryStore]:
    """The workspace's history, once every run this server answered is written to it."""
    history: History = request.app.state.history
    await history.flush()
    return history, history.store(workspace.storage().workspace_id)


@router.get("/api/history/sessions", responses=errors(404, 503))
async def list_sessions(
    request: Request,
    workspace: CallerWorkspace,
    agent_id: AgentQuery = None,
    offset: Offset = 0,
    limit: Limit = 100,
) -> dict[str, Any]:
    """An agent's sessions, newest first (by updated_at, from its index)."""
    history = request.app.state.history
    agent = validate_agent_id(agent_id) if agent_id is not None else history.default_agent
    _, store = await _store(request, workspace)
    sessions, total = await store.list_sessions(agent, offset, limit)
    return {"agent_id": agent, "sessions": sessions, "total": total, "offset": offset}


@router.get("/api/history/sessions/{session_id}", responses=errors(404, 503))
async def get_session(
    session_id: HistoryId,
    request: Request,
    workspace: CallerWorkspace,
    offset: Offset = 0,
    limit: Limit = 100,
) -> dict[str, Any]:
    """A session's record and a page of its messages (oldest first)."""
    key = history_id(validate_history_id(session_id))
    _, store = await _store(request, workspace)
    page = await store.get(key, offset, limit)
    if page is None:
        raise NotFoundError(f"no session history {session_id!r}")
    return {
        **page.session,
        "messages": page.messages,
        "offset": offset,
        "total_messages": page.total,
        "messages_dropped": page.count - page.total,
    }


@router.delete("/api/history/sessions/{session_id}", responses=errors(404, 503))
async def delete_session(
    session_id: HistoryId, request: Request, workspace: CallerWorkspace
) -> dict[str, Any]:
    key = history_id(validate_history_id(session_id))
    _, store = await _store(request, workspace)
    if not await store.delete(key):
        raise NotFoundError(f"no session history {session_id!r}")
    return {"deleted": key}


@router.post("/api/history/sessions/{session_id}/fork", responses=errors(403, 404, 503))
async def fork_session(
    session_id: HistoryId, request: Request, workspace: CallerWorkspace
) -> dict[str, Any]:
    """A copy of the session's record and every message under a new id, indexed under
    the same agent; the two then diverge independently."""
    if not request.app.state.config.history_enabled:
        raise ForbiddenError("session history is off on this server (HISTORY_ENABLED)")
    key = history_id(validate_history_id(session_id))
    _, store = await _store(request, workspace)
    forked = await store.fork(key, "h." + secrets.token_urlsafe(24), time.time())
    if forked is None:
        raise NotFoundError(f"no session history {session_id!r}")
    return forked
