"""Bearer-token auth that fails closed, compared in constant time."""

from __future__ import annotations

import hashlib
import hmac

from fastapi import HTTPException, Request

from codemode_session.server import metrics


async def check_bearer(request: Request) -> None:
    """FastAPI dependency: 401 unless the request carries the server's token.

    Async on purpose: FastAPI runs a sync dependency in its thread pool, a thread
    hand-off per request that cost more than the rest of /execute.
    """
    config = request.app.state.config
    if config.auth_disabled:
        return
    expected: str | None = config.auth_token
    header = request.headers.get("authorization", "")
    scheme, _, supplied = header.partition(" ")
    if (
        expected is None
        or scheme.lower() != "bearer"
        or not hmac.compare_digest(supplied.strip().encode(), expected.encode())
    ):
        metrics.AUTH_FAILURES.inc()
        raise HTTPException(
            status_code=401,
            detail="missing or invalid bearer token (send 'Authorization: Bearer <token>')",
            headers={"WWW-Authenticate": "Bearer"},
        )


def token_owner(request: Request) -> str | None:
    """Who a client-chosen session id belongs to: a digest of the bearer token sent
    (None when auth is off). The token itself is never kept."""
    if request.app.state.config.auth_disabled:
        return None
    _, _, supplied = request.headers.get("authorization", "").partition(" ")
    return hashlib.sha256(supplied.strip().encode()).hexdigest()
