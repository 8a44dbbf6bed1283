"""The gateway's ASGI application: authenticate, authorise, find the session, forward.

Every answer the gateway gives itself is JSON with a `detail` saying why: 400 for a path
that names no session, 401 without a valid Kubernetes token, 403 when RBAC does not
allow the caller that session, 404 for a missing session it may not or cannot create,
409 for a terminated one, 503 (with Retry-After) while a session cannot be reached yet.
Anything else is the session server's own answer, passed through.
"""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from codemode_operator.gateway import metrics
from codemode_operator.gateway.auth import CREATE, Reviewer, User
from codemode_operator.gateway.kubeapi import ApiError
from codemode_operator.gateway.proxy import BodyReader, Receive, Scope, Send, open_upstream, relay
from codemode_operator.gateway.routing import BadRoute, Route, parse
from codemode_operator.gateway.targets import Refused, Target, Targets
from codemode_operator.gateway.upstream import Upstream

WORKSPACE_HEADER = b"x-codemode-workspace"


class Gateway:
    def __init__(self, reviewer: Reviewer, targets: Targets, upstream: Upstream) -> None:
        self.reviewer, self.targets, self.upstream = reviewer, targets, upstream

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":  # websockets: not served
            return
        started = time.perf_counter()
        status = await self._serve(scope, receive, send)
        metrics.LATENCY.observe(time.perf_counter() - started)
        metrics.requests(scope["method"], status).inc()

    async def _serve(self, scope: Scope, receive: Receive, send: Send) -> int:
        path: str = scope["path"]
        if path == "/healthz":
            return await _answer(send, 200, {"status": "ok"})
        if path == "/metrics":
            body = generate_latest(metrics.REGISTRY)
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [(b"content-type", CONTENT_TYPE_LATEST.encode())],
                }
            )
            await send({"type": "http.response.body", "body": body})
            return 200
        try:
            route = parse(path)
            user = await self._authenticate(scope)
            await self._authorize(user, route)
            target = await self.targets.resolve(
                route, _header(scope, WORKSPACE_HEADER), lambda: self._may_create(user, route)
            )
            return await self._forward(scope, receive, send, route, target)
        except BadRoute as exc:
            return await _answer(send, 400, {"detail": str(exc)})
        except Refused as exc:
            return await _answer(send, exc.status, {"detail": exc.reason})
        except ApiError as exc:
            return await _answer(send, 503, {"detail": f"the Kubernetes API answered {exc}; retry"})
        except httpx.TransportError as exc:
            return await _answer(
                send, 503, {"detail": f"the Kubernetes API cannot be reached ({exc!r}); retry"}
            )

    async def _authenticate(self, scope: Scope) -> User:
        auth = _header(scope, b"authorization") or ""
        scheme, _, token = auth.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            metrics.UNAUTHENTICATED.inc()
            raise Refused(401, "send a Kubernetes bearer token: Authorization: Bearer <token>")
        user = await self.reviewer.authenticate(token.strip())
        if user is None:
            metrics.UNAUTHENTICATED.inc()
            raise Refused(401, "the token is not valid (expired, revoked or forged)")
        return user

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


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key.lower() == name:
            return bytes(value).decode("latin-1")
    return None


async def _answer(send: Send, status: int, body: dict[str, Any]) -> int:
    payload = json.dumps(body).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(payload)).encode()),
    ]
    if status == 503:
        headers.append((b"retry-after", b"2"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})
    return status


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
