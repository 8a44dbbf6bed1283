"""`/health`, `/ready`, `/metrics`: open to the kubelet and Prometheus, no token."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from codemode_session import __version__
from codemode_session.errors import CodemodeError
from codemode_session.server.dependencies import State
from codemode_session.server.models import ReadyResponse
from codemode_session.server.responses import AsciiJSONResponse

READY_TIMEOUT = 3.0

router = APIRouter(tags=["probes"], default_response_class=AsciiJSONResponse)


@router.get("/health")
async def health(state: State, request: Request) -> dict[str, Any]:
    found: dict[str, Any] = {
        "status": "healthy",
        "uptime_seconds": time.time() - state.started,
        "active_sessions": state.sessions.count,
        "last_activity": state.sessions.last_activity,
        "workspace_id": state.config.workspace_id,
        "version": __version__,
    }
    snapshots = getattr(request.app.state, "snapshots", None)
    if snapshots is not None and snapshots.shared:
        # A CodeSession pod: its state's last snapshot and restore, for the operator's
        # status (names, sizes and times; never values).
        found["state"] = snapshots.status()
        history = getattr(request.app.state, "history", None)
        found["state"]["history_messages"] = getattr(history, "state_messages", None)
    return found


@router.get(
    "/ready",
    response_model=ReadyResponse,
    responses={503: {"model": ReadyResponse, "description": "storage does not answer"}},
)
async def ready(state: State) -> JSONResponse:
    if not state.sessions.primed.is_set():
        reason = "loading the session's saved state"
        if state.sessions.prime_error:
            reason += f": {state.sessions.prime_error}"
        return AsciiJSONResponse({"ready": False, "reason": reason}, status_code=503)
    try:
        await asyncio.wait_for(state.storage_for(None).ping(), READY_TIMEOUT)
    except (CodemodeError, TimeoutError) as exc:
        reason = str(exc) or f"storage did not answer within {READY_TIMEOUT:g}s"
        return AsciiJSONResponse({"ready": False, "reason": reason}, status_code=503)
    return AsciiJSONResponse({"ready": True})


@router.get("/metrics", response_class=PlainTextResponse)
async def prometheus_metrics() -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
