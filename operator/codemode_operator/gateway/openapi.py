"""The gateway's own OpenAPI document (served at /openapi.json): its routes and every
answer the gateway gives itself. A session server's answers are its own document's
(`GET /v1/namespaces/{ns}/codesessions/{name}/openapi.json` through the gateway);
tests/unit/test_gateway_openapi.py checks that no answer of the gateway is left out."""

from __future__ import annotations

from typing import Any

from codemode_operator.gateway.mcp import PREFIX as MCP_PREFIX
from codemode_operator.gateway.routing import PREFIX

# Every answer the gateway gives itself on a session's route, and why.
SESSION_ANSWERS = {
    400: "The path names no session, or the session cannot be created (invalid spec).",
    401: "No bearer token, or the API server does not accept it (TokenReview): expired, "
    "revoked or forged, or issued for another session's or workspace's audience.",
    403: "RBAC does not allow the caller `create` on `codesessions/exec` for this session "
    "(SubjectAccessReview), or the session is missing and the caller may not create "
    "CodeSessions.",
    404: "The session does not exist (and no X-Codemode-Workspace names where to create "
    "it), or it was deleted while the request waited.",
    409: "The session is in a final phase (Terminated, Expired) or is being deleted.",
    503: "The session is not Ready within the wait time, its pod cannot be reached, or the "
    "Kubernetes API cannot: retry after Retry-After seconds.",
}
# The gateway's own refusals on the MCP endpoint, then the MCP SDK's (streamable HTTP).
MCP_GATEWAY_ANSWERS = {
    400: "The path names no namespace or session.",
    401: SESSION_ANSWERS[401],
    403: "The endpoint is bound to a session that RBAC does not allow the caller to use, "
    "or it is bound to none and this gateway serves bound endpoints only (the `session` "
    "argument is turned off).",
    503: "The Kubernetes API cannot be reached, or too many MCP sessions are open: retry.",
}
MCP_ANSWERS = {
    200: "A JSON-RPC answer: JSON, or an event stream (text/event-stream) of progress and "
    "log notifications ending with the answer. On GET, the server's event stream.",
    202: "A notification or response accepted.",
    **MCP_GATEWAY_ANSWERS,
    400: MCP_GATEWAY_ANSWERS[400] + " Or the MCP SDK's: Content-Type is not "
    "application/json, the body is not JSON-RPC, a session id is missing.",
    404: "The MCP session does not exist, has ended, or belongs to another user.",
    405: "A method the endpoint does not take.",
    406: "Accept does not include application/json and text/event-stream.",
    409: "A second event stream for one MCP session.",
    413: "The request body is over 4 MiB.",
    500: "The MCP server failed to handle the message.",
}
OWN_ANSWERS = {
    "/healthz": {200: "The gateway serves."},
    "/openapi.json": {200: "This document."},
}

_ERROR = {
    "type": "object",
    "required": ["detail"],
    "properties": {"detail": {"type": "string", "description": "Why, in one sentence."}},
}
_NAMESPACE = {
    "name": "namespace",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"},
}
_NAME = {
    "name": "name",
    "in": "path",
    "required": True,
    "description": "The CodeSession's name.",
    "schema": {"type": "string", "pattern": "^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"},
}


def _error(description: str, status: int) -> dict[str, Any]:
    answer: dict[str, Any] = {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }
    if status == 503:
        answer["headers"] = {"Retry-After": {"schema": {"type": "integer"}}}
    elif status == 401:
        answer["headers"] = {"WWW-Authenticate": {"schema": {"type": "string"}}}
    return answer


def _session_route(rest: bool) -> dict[str, Any]:
    parameters: list[dict[str, Any]] = [_NAMESPACE, _NAME]
    if rest:
        parameters.append(
            {
                "name": "path",
                "in": "path",
                "required": True,
                "description": "The session server's path (may hold slashes), e.g. execute, "
                "files/data/a.csv, api/workflows.",
                "schema": {"type": "string"},
            }
        )
    parameters.append(
        {
            "name": "X-Codemode-Workspace",
            "in": "header",
            "required": False,
            "description": "Create the session in this Workspace if it is missing and the "
            "caller may create CodeSessions.",
            "schema": {"type": "string"},
        }
    )
    responses: dict[str, Any] = {
        "default": {
            "description": "The session server's own answer, passed through as it streams "
            "(an event stream of a run too). Its document: openapi.json of the session."
        }
    }
    responses.update({str(s): _error(d, s) for s, d in SESSION_ANSWERS.items()})
    operation = {
        "summary": "Forwarded to the session's server, with the session's token in place "
        "of the caller's credentials",
        "security": [{"kubernetes": []}],
        "parameters": parameters,
        "responses": responses,
    }
    methods = ("get", "post", "put", "patch", "delete", "head", "options")
    return {m: {**operation, "operationId": f"{m}Session{'Path' if rest else ''}"} for m in methods}


def _mcp_route(bound: bool) -> dict[str, Any]:
    parameters: list[dict[str, Any]] = [_NAMESPACE]
    if bound:
        parameters.append(_NAME)
        parameters.append(
            {
                "name": "workspace",
                "in": "query",
                "required": False,
                "description": "Create the bound session in this Workspace if it is missing.",
                "schema": {"type": "string"},
            }
        )
    responses: dict[str, Any] = {}
    for status, description in MCP_ANSWERS.items():
        if status in (200, 202):
            responses[str(status)] = {"description": description}
        else:
            responses[str(status)] = _error(description, status)
    summary = (
        "MCP (streamable HTTP) bound to this CodeSession"
        if bound
        else "MCP (streamable HTTP); every code call names its CodeSession"
    )
    operation = {
        "summary": summary,
        "description": "codemode mcp's tools; each call runs with the caller's token.",
        "security": [{"kubernetes": []}],
        "parameters": parameters,
        "responses": responses,
    }
    suffix = "Bound" if bound else ""
    return {m: {**operation, "operationId": f"{m}Mcp{suffix}"} for m in ("post", "get", "delete")}


def _own(path: str) -> dict[str, Any]:
    (status, description), *_ = OWN_ANSWERS[path].items()
    return {
        "get": {
            "operationId": "health" if path == "/healthz" else "openapi",
            "security": [],
            "responses": {str(status): {"description": description}},
        }
    }


def document(version: str) -> dict[str, Any]:
    session = f"{PREFIX}{{namespace}}/codesessions/{{name}}"
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "codemode gateway",
            "version": version,
            "description": "One address for every CodeSession. The caller's Kubernetes "
            "token is checked with a TokenReview; RBAC decides per session "
            "(SubjectAccessReview of `create` on `codesessions/exec`).",
        },
        "paths": {
            "/healthz": _own("/healthz"),
            "/openapi.json": _own("/openapi.json"),
            session: _session_route(rest=False),
            f"{session}/{{path}}": _session_route(rest=True),
            f"{MCP_PREFIX}{{namespace}}": _mcp_route(bound=False),
            f"{MCP_PREFIX}{{namespace}}/codesessions/{{name}}": _mcp_route(bound=True),
        },
        "components": {
            "schemas": {"Error": _ERROR},
            "securitySchemes": {
                "kubernetes": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "A Kubernetes token the API server accepts, e.g. a "
                    "ServiceAccount's (kubectl create token NAME), or one issued for a "
                    "single session (--audience codemode.dev/v1/namespaces/{ns}/"
                    "codesessions/{name}) or for a workspace's sessions (--audience "
                    "codemode.dev/v1/namespaces/{ns}/workspaces/{workspace}).",
                }
            },
        },
    }
