"""The error answers and limits of the HTTP API, for its OpenAPI document.

FastAPI documents only the success answer and 422; clients generated from the
document (and schemathesis, which checks answers against it) must also know
the other statuses the server gives and the shape of their bodies.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import Field

from codemode_session.server.models import ErrorResponse


class InvalidRequestResponse(ErrorResponse):
    """A 400: invalid input (`detail` says what), or X-Session-ID names no session of the
    caller: then `detail` is exactly `Invalid session ID` (what py-code-mode's clients
    look for to open a new session) and `error` says why and what to do."""

    error: str | None = Field(
        default=None,
        description="With `detail` `Invalid session ID`: unknown or expired session; "
        "omit X-Session-ID or create one with POST /sessions",
    )


ERRORS: dict[int, str] = {
    400: "Invalid input (a name, a workflow source, a package spec, text that is not "
    "Unicode), or X-Session-ID names no session of the caller (unknown, ended or expired): "
    '`detail` is then exactly "Invalid session ID" and `error` says why',
    401: "Missing or wrong bearer token",
    403: "Not allowed here: another workspace than the server's, or runtime deps are off",
    404: "No such artifact or session history (a missing workflow is `null`/`false`)",
    409: "The object belongs to a WorkflowLibrary, or concurrent writers kept changing it; "
    "a warm pool pod not bound yet runs nothing, and one bound is never bound again",
    413: "The request body is larger than MAX_REQUEST_BYTES, the code than MAX_CODE_BYTES, "
    "or a write would pass the workspace's storage quota",
    429: "All MAX_SESSIONS workers are running code (idle sessions give theirs up); retry "
    "when one finishes",
    503: "Storage (Redis or the storage folder) does not answer",
}


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """`responses=` for a route that can answer `codes` (each with `{"detail": str}`)."""
    return {
        code: {
            "model": InvalidRequestResponse if code == 400 else ErrorResponse,
            "description": ERRORS[code],
        }
        for code in codes
    }


def install(app: FastAPI, max_execution_time: float) -> None:
    """Generate the document as FastAPI does, plus the server's own limits (known only
    once it is configured): a larger `timeout` than MAX_EXECUTION_TIME is a 422."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = get_openapi(
                title=app.title, version=app.version, routes=app.routes, description=app.description
            )
            timeout = document["components"]["schemas"]["ExecuteRequest"]["properties"]["timeout"]
            for option in timeout.get("anyOf", [timeout]):
                if option.get("type") == "number":
                    option["maximum"] = max_execution_time
            app.openapi_schema = document
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
