"""`POST /bind`: a warm pool pod becomes one CodeSession's (server/binding.py)."""

from __future__ import annotations

from fastapi import Request

from codemode_session.server.binding import Binding
from codemode_session.server.dependencies import State, authenticated_router
from codemode_session.server.models import BindRequest, BindResponse
from codemode_session.server.openapi import errors

router = authenticated_router(tags=["pool"])


@router.post("/bind", response_model=BindResponse, responses=errors(409, 503))
async def bind(body: BindRequest, state: State, request: Request) -> BindResponse:
    binding: Binding = request.app.state.binding
    found = await binding.bind(
        body.state_id,
        body.agent_id,
        body.fork_from,
        request.app.state.history,
        request.app.state.snapshots,
        state.sessions,
    )
    return BindResponse(**found)
