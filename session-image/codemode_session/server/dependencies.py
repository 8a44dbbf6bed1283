"""FastAPI dependencies every router shares: auth, the server's state, the caller's workspace.

Async on purpose: FastAPI runs a sync dependency in its thread pool, a thread
hand-off per request.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Path, Request

from codemode_session.server.auth import check_bearer, token_owner
from codemode_session.server.models import (
    ARTIFACT_NAME,
    ARTIFACT_NAME_HELP,
    WORKFLOW_NAME,
    WORKFLOW_NAME_HELP,
)
from codemode_session.server.openapi import errors
from codemode_session.server.responses import AsciiJSONResponse
from codemode_session.server.state import ServerState
from codemode_session.storage.base import Storage


async def server_state(request: Request) -> ServerState:
    state: ServerState = request.app.state.server
    return state


State = Annotated[ServerState, Depends(server_state)]


async def caller(request: Request) -> str | None:
    return token_owner(request)


# Whom a client-chosen session id is bound to (sessions.Session.owner).
Owner = Annotated[str | None, Depends(caller)]
SessionHeader = Annotated[str, Header(alias="X-Session-ID")]
OptionalSessionHeader = Annotated[str | None, Header(alias="X-Session-ID")]

# Path names are checked by the handlers (a 400 saying why); the document shows the rules.
WorkflowName = Annotated[str, Path(json_schema_extra=WORKFLOW_NAME, description=WORKFLOW_NAME_HELP)]
ArtifactName = Annotated[str, Path(json_schema_extra=ARTIFACT_NAME, description=ARTIFACT_NAME_HELP)]


@dataclass(frozen=True)
class Workspace:
    """The workspace a request works in: its session's (X-Session-ID), else the server's.

    Looked up only when a handler asks, after it has checked its input: a bad name
    is a 400 even with an unknown session, and an invalid body a 422 before both.
    """

    state: ServerState
    session_id: str | None
    owner: str | None = None

    def storage(self) -> Storage:
        return self.state.storage_for(self.session_id, self.owner)


async def workspace(
    state: State, owner: Owner, x_session_id: OptionalSessionHeader = None
) -> Workspace:
    return Workspace(state, x_session_id, owner)


CallerWorkspace = Annotated[Workspace, Depends(workspace)]


def authenticated_router(**kwargs: Any) -> APIRouter:
    """A router whose every route needs the bearer token; any request may also be
    unauthenticated, too large or not Unicode (401, 413, 400)."""
    return APIRouter(
        dependencies=[Depends(check_bearer)],
        default_response_class=AsciiJSONResponse,
        responses=errors(400, 401, 413),
        **kwargs,
    )
