"""The gateway's ASGI application: authenticate, authorise, find the session, forward.

Every answer the gateway gives itself is JSON with a `detail` saying why: 400 for a path
that names no session, 401 without a valid Kubernetes token, 403 when RBAC does not
allow the caller that session, 404 for a missing session it may not or cannot create,
409 for a terminated one, 503 (with Retry-After) while a session cannot be reached yet.
Anything else is the session server's own answer, passed through. `/mcp/v1/...` is the
MCP endpoint (gateway/mcp.py), `/openapi.json` the gateway's own document (openapi.py);
metrics are on a port of their own (__main__.py).
"""

from __future__ import annotations

import contextlib
import functools
import json
import time
from typing import TYPE_CHECKING, Any

import httpx

from codemode_operator.gateway import metrics
from codemode_operator.gateway.auth import (
    CREATE,
    Reviewer,
    User,
    claimed_audiences,
    session_audience,
    workspace_audience,
)
from codemode_operator.gateway.kubeapi import ApiError
from codemode_operator.gateway.proxy import BodyReader, Receive, Scope, Send, open_upstream, relay
from codemode_operator.gateway.routing import BadRoute, Route, parse
from codemode_operator.gateway.targets import Refused, Target, Targets
from codemode_operator.gateway.upstream import Upstream

if TYPE_CHECKING:
    from codemode_operator.gateway.mcp import McpEndpoint

WORKSPACE_HEADER = b"x-codemode-workspace"
PASSED_ON = b"x-codemode-gateway-passed-on"
HOP_BY_HOP = frozenset(
    {b"host", b"connection", b"keep-alive", b"te", b"trailer", b"transfer-encoding", b"upgrade"}
)
MCP_PREFIX = "/mcp/"


class Gateway:
    def __init__(
        self,
        reviewer: Reviewer,
        targets: Targets,
        upstream: Upstream,
        mcp: McpEndpoint | None = None,
    ) -> None:
        self.reviewer, self.targets, self.upstream = reviewer, targets, upstream
        self.mcp = mcp

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":  # websockets: not served
            return
        started = time.perf_counter()
        status = await self._serve(scope, receive, send)
        metrics.LATENCY.observe(time.perf_counter() - started)
        metrics.requests(scope["method"], status).inc()

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        """Start and stop the watch of CodeSessions and the MCP endpoint's sessions with
        the server."""
        async with contextlib.AsyncExitStack() as stack:
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await stack.enter_async_context(self.targets.running())
                    if self.mcp is not None:
                        await stack.enter_async_context(self.mcp.running())
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await stack.aclose()
                    await send({"type": "lifespan.shutdown.complete"})
                    return

    async def _serve(self, scope: Scope, receive: Receive, send: Send) -> int:
        path: str = scope["path"]
        if path == "/healthz":
            return await _answer(send, 200, {"status": "ok"})
        if path == "/openapi.json":
            return await _answer(send, 200, _openapi())
        if path.startswith(MCP_PREFIX) and self.mcp is not None:
            return await self._serve_mcp(scope, receive, send, self.mcp)
        try:
            route = parse(path)
            user, _ = await self._authenticate(scope, route)
            await self._authorize(user, route)
            target = await self.targets.resolve(
                route, _header(scope, WORKSPACE_HEADER), lambda: self._may_create(user, route)
            )
            return await self._forward(scope, receive, send, route, target)
        except REFUSALS as exc:
            return await _refuse(send, exc)

    async def _serve_mcp(self, scope: Scope, receive: Receive, send: Send, mcp: McpEndpoint) -> int:
        """The MCP endpoint: the caller is authenticated here, as for a session's route,
        and the bound session authorised; each tool call is authorised again with the
        caller's token (codemode_operator.gateway.mcp)."""
        from codemode_operator.gateway.mcp import Caller
        from codemode_operator.gateway.mcp import parse as parse_mcp

        try:
            namespace, bound, workspace = parse_mcp(scope["path"], scope.get("query_string", b""))
            user, token = await self._authenticate(
                scope, Route(namespace, bound, "/") if bound is not None else None
            )
            if bound is not None:
                await self._authorize(user, Route(namespace, bound, "/"))
            elif not mcp.backend.allow_session_argument:
                raise Refused(
                    403,
                    "this gateway serves MCP endpoints bound to one session only (the "
                    "`session` argument is turned off): connect to "
                    f"/mcp/v1/namespaces/{namespace}/codesessions/NAME",
                )
        except REFUSALS as exc:
            return await _refuse(send, exc)
        session = _header(scope, b"mcp-session-id") or ""
        owner = mcp.replicas.owner(session)[1] if session else None
        if owner is not None and _header(scope, PASSED_ON) is None:
            return await self._pass_on(scope, receive, send, owner)
        caller = Caller(token, namespace, bound, workspace, session)
        return await mcp.handle(scope, receive, send, caller, user)

    async def _pass_on(self, scope: Scope, receive: Receive, send: Send, owner: str) -> int:
        """An MCP request for a session another replica holds, passed on to it as it came
        (the caller's token too: that replica checks it again)."""
        host, _, port = owner.rpartition(":")
        query = scope.get("query_string", b"")
        target = scope["path"] + ("?" + query.decode("latin-1") if query else "")
        headers = [(k, v) for k, v in scope["headers"] if k.lower() not in HOP_BY_HOP]
        headers.append((PASSED_ON, b"1"))
        has_body = any(k in (b"content-length", b"transfer-encoding") for k, _ in scope["headers"])
        body = BodyReader(receive)
        try:
            response = await self.upstream.send(
                scope["method"],
                host,
                int(port),
                target,
                headers,
                body.__aiter__() if has_body else None,
            )
        except OSError:
            # That replica is gone, and the session with it: a client opens a new one.
            return await _answer(
                send, 404, {"detail": "the MCP session ended with its gateway replica"}
            )
        await relay(response, receive, send)
        return response.status

    async def _authenticate(self, scope: Scope, route: Route | None) -> tuple[User, str]:
        """The caller: a token the API server takes, or one issued for `route`'s session
        alone or for its workspace (auth.session_audience, auth.workspace_audience)."""
        auth = _header(scope, b"authorization") or ""
        scheme, _, token = auth.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            metrics.UNAUTHENTICATED.inc()
            raise Refused(401, "send a Kubernetes bearer token: Authorization: Bearer <token>")
        user = await self.reviewer.authenticate(token.strip())
        if user is None and route is not None:
            audience = await self._scoped_audience(scope, route, claimed_audiences(token))
            if audience is not None:  # the API server checks the token for it
                user = await self.reviewer.authenticate(token.strip(), audience)
        if user is None:
            metrics.UNAUTHENTICATED.inc()
            raise Refused(401, "the token is not valid (expired, revoked or forged)")
        return user, token.strip()

    async def _scoped_audience(self, scope: Scope, route: Route, claimed: list[str]) -> str | None:
        """The codemode audience a token claims that fits `route`, else None (a plain or
        forged token costs no more reviews). What a token claims is not trusted: the
        TokenReview with that audience is what decides."""
        if session_audience(route.namespace, route.name) in claimed:
            return session_audience(route.namespace, route.name)
        prefix = workspace_audience(route.namespace, "")
        if not any(a.startswith(prefix) for a in claimed):
            return None
        # The session's workspace; for a session still to be created, the one named.
        found = await self.targets.session(route.namespace, route.name)
        workspace = ((found or {}).get("spec") or {}).get("workspaceRef")
        if found is None:
            workspace = _header(scope, WORKSPACE_HEADER)
        audience = workspace_audience(route.namespace, str(workspace or ""))
        return audience if workspace and audience in claimed else None

    async def _authorize(self, user: User, route: Route) -> None:
        decision = await self.reviewer.authorize(user, route.namespace, route.name)
        (metrics.ALLOWED if decision.allowed else metrics.DENIED).inc()
        if not decision.allowed:
            raise Refused(403, decision.reason)

    async def _may_create(self, user: User, route: Route) -> bool:
        decision = await self.reviewer.authorize(user, route.namespace, "", CREATE)
        return decision.allowed

    async def _forward(
        self, scope: Scope, receive: Receive, send: Send, route: Route, target: Target
    ) -> int:
        body = BodyReader(receive)
        for attempt in (1, 2):
            try:
                response = await open_upstream(
                    self.upstream, scope, body, target.url, route.path, target.token
                )
            except OSError as exc:  # refused, reset, timed out, closed early
                # The remembered pod is gone (replaced, suspended): look again, and send
                # again if the caller's body was not read yet.
                self.targets.forget(route)
                if attempt == 2 or body.started:
                    return await _answer(
                        send,
                        503,
                        {"detail": f"session {route.name!r} cannot be reached ({exc!r}); retry"},
                    )
                target = await self.targets.resolve(route)
                continue
            if response.status == 401:  # its token changed: look it up next time
                self.targets.forget(route)
            await relay(response, receive, send)
            return response.status
        raise AssertionError("unreachable")


@functools.cache
def _openapi() -> dict[str, Any]:
    import codemode_operator
    from codemode_operator.gateway.openapi import document

    return document(codemode_operator.__version__)


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key.lower() == name:
            return bytes(value).decode("latin-1")
    return None


# What a route, a review or a lookup can fail with, answered alike by every entry point.
REFUSALS = (BadRoute, Refused, ApiError, httpx.TransportError)


async def _refuse(send: Send, exc: Exception) -> int:
    """The answer to one of REFUSALS: 400 for a bad route, the refusal's own status, 503
    while the Kubernetes API cannot answer."""
    if isinstance(exc, BadRoute):
        return await _answer(send, 400, {"detail": str(exc)})
    if isinstance(exc, Refused):
        return await _answer(send, exc.status, {"detail": exc.reason})
    if isinstance(exc, ApiError):
        return await _answer(send, 503, {"detail": f"the Kubernetes API answered {exc}; retry"})
    return await _answer(
        send, 503, {"detail": f"the Kubernetes API cannot be reached ({exc!r}); retry"}
    )


async def _answer(send: Send, status: int, body: dict[str, Any]) -> int:
    payload = json.dumps(body).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(payload)).encode()),
    ]
    if status == 503:
        headers.append((b"retry-after", b"2"))
    elif status == 401:
        headers.append((b"www-authenticate", b"Bearer"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})
    return status
