"""Forwarding one request to a session server and its answer back, both streamed.

Bodies are passed on chunk by chunk as they arrive, in both directions: a 50 MB upload is
never held whole, and each event of a streamed run reaches the caller when the server
sends it. The caller's credentials never leave the gateway: its Authorization, cookies
and proxy headers are dropped, and the session's own token is sent instead.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import urlsplit

from codemode_operator.gateway.upstream import Response, Upstream

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

# Hop-by-hop headers (RFC 9110 7.6.1) and the caller's credentials.
DROPPED = frozenset(
    {
        b"authorization",
        b"cookie",
        b"proxy-authorization",
        b"host",
        b"connection",
        b"keep-alive",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"proxy-connection",
        b"x-codemode-workspace",
    }
)
DROPPED_BACK = frozenset(
    {b"connection", b"keep-alive", b"transfer-encoding", b"trailer", b"upgrade", b"set-cookie"}
)


def forwarded_headers(scope: Scope, token: str) -> list[tuple[bytes, bytes]]:
    headers = [(k, v) for k, v in scope["headers"] if k.lower() not in DROPPED]
    headers.append((b"authorization", b"Bearer " + token.encode()))
    return headers


class BodyReader:
    """The caller's body as an async iterator; `started` tells whether any was read (a
    request whose body was not read yet may be sent again to a new address)."""

    def __init__(self, receive: Receive) -> None:
        self.receive, self.started = receive, False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        self.started = True
        while True:
            message = await self.receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            if chunk:
                yield chunk
            if not message.get("more_body", False):
                return


async def open_upstream(
    upstream: Upstream, scope: Scope, body: BodyReader, base: str, path: str, token: str
) -> Response:
    parts = urlsplit(base)
    query = scope.get("query_string", b"")
    target = path + ("?" + query.decode("latin-1") if query else "")
    has_body = any(k in (b"content-length", b"transfer-encoding") for k, _ in scope["headers"])
    return await upstream.send(
        scope["method"],
        parts.hostname or "",
        parts.port or 80,
        target,
        forwarded_headers(scope, token),
        body.__aiter__() if has_body else None,
    )


async def relay(response: Response, receive: Receive, send: Send) -> None:
    """The session server's answer to the caller, each chunk as it comes. A caller that
    goes away from an event stream closes the connection to the server too (which
    interrupts the streamed run)."""
    headers = [(k, v) for k, v in response.headers if k not in DROPPED_BACK]
    start = {"type": "http.response.start", "status": response.status, "headers": headers}
    await send(start)
    if not response.header(b"content-type").startswith(b"text/event-stream"):
        try:  # a plain answer: no watcher task (it would cost every request ~20 µs)
            await _pump(response, send)
        finally:
            await response.aclose()
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        return
    pump = asyncio.create_task(_pump(response, send))
    gone = asyncio.create_task(_disconnected(receive))
    try:
        await asyncio.wait((pump, gone), return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
        pump.cancel()
        await response.aclose()
    if pump.done() and not pump.cancelled() and pump.exception() is None:
        await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _pump(response: Response, send: Send) -> None:
    async for chunk in response.chunks():
        await send({"type": "http.response.body", "body": chunk, "more_body": True})


async def _disconnected(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
