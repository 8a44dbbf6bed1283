"""Errors to HTTP answers, in one table.

Handlers raise the domain's errors (codemode_session.errors, plus the two only
the server gives); the table decides the status, the message is the `detail`.
Only auth's 401 stays an HTTPException (it carries a WWW-Authenticate header).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError

from codemode_session.errors import (
    CodemodeError,
    ConflictError,
    ForbiddenError,
    NotFoundError,
    QuotaExceededError,
    StorageUnavailableError,
    ValidationError,
)
from codemode_session.server.responses import AsciiJSONResponse, finite_json


class TooLarge(CodemodeError):
    """A part of the request is larger than the server accepts (not a storage quota)."""


class SessionLimitReached(CodemodeError):
    """MAX_SESSIONS sessions are open."""


# The answer for an X-Session-ID that names no session of the caller (unknown, ended,
# expired, another token's, or not an id a client may choose): 400 with exactly this
# `detail`, the answer py-code-mode's newer server gives and the only one on which its
# client opens a new session; our own reason (which says what to do) is in `error`.
INVALID_SESSION_ID = "Invalid session ID"


class UnknownSession(NotFoundError):
    """X-Session-ID names no session of this caller (HTTP 400 `Invalid session ID`)."""


# First match wins; a CodemodeError not listed is a 400.
STATUS_BY_ERROR: tuple[tuple[type[CodemodeError], int], ...] = (
    (UnknownSession, 400),
    (ValidationError, 400),
    (NotFoundError, 404),
    (ForbiddenError, 403),
    (ConflictError, 409),
    (StorageUnavailableError, 503),
    (QuotaExceededError, 413),
    (TooLarge, 413),
    (SessionLimitReached, 429),
)

NOT_UNICODE = (
    "the request contains text that is not valid Unicode (a lone surrogate such as "
    "\\udcff); send UTF-8 text"
)


def error_response(detail: Any, status: int) -> Response:
    """`{"detail": ...}` as ASCII JSON: details may quote the caller's input."""
    return AsciiJSONResponse({"detail": finite_json(jsonable_encoder(detail))}, status_code=status)


def status_of(exc: CodemodeError) -> int:
    return next((code for kind, code in STATUS_BY_ERROR if isinstance(exc, kind)), 400)


def unknown_session_response(reason: str) -> Response:
    """`{"detail": "Invalid session ID", "error": reason}`, status 400."""
    body = {"detail": INVALID_SESSION_ID, "error": reason}
    return AsciiJSONResponse(finite_json(jsonable_encoder(body)), status_code=400)


async def _codemode_error(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, CodemodeError)
    if isinstance(exc, UnknownSession):
        return unknown_session_response(str(exc))
    return error_response(str(exc), status_of(exc))


async def _invalid_request(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    return error_response(exc.errors(), 422)


async def _not_unicode(_: Request, __: Exception) -> Response:
    return error_response(NOT_UNICODE, 400)


HANDLERS: dict[type[Exception], Callable[[Request, Exception], Awaitable[Response]]] = {
    CodemodeError: _codemode_error,
    RequestValidationError: _invalid_request,
    UnicodeError: _not_unicode,
}


def install(app: FastAPI) -> None:
    for kind, handler in HANDLERS.items():
        app.add_exception_handler(kind, handler)
