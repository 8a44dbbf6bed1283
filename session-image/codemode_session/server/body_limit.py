"""A cap on the size of every request body (MAX_REQUEST_BYTES).

FastAPI reads a whole JSON body into memory before it validates anything, so
without a cap a client could make the server buffer gigabytes. This ASGI
middleware answers 413 as soon as it knows a body is too large: at once for a
Content-Length above the cap, and for a chunked body (no Content-Length) as
soon as the bytes read so far pass it. Nothing is buffered here; the body
passes through as it arrives.
"""

from __future__ import annotations

import json
from collections.abc import Collection

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# The probes take no body; they stay exactly as they are.
EXEMPT_PATHS = frozenset({"/health", "/ready", "/metrics"})
# Routes that cap their own bodies (uploads: MAX_FILE_BYTES, routers/files.py).
EXEMPT_PREFIXES = ("/files/",)


def too_large_detail(max_bytes: int) -> str:
    return f"request body is larger than MAX_REQUEST_BYTES ({max_bytes} bytes)"


class BodyTooLarge(HTTPException):
    """Raised from `receive` when a streamed body passes the cap.

    An HTTPException, so FastAPI re-raises it from its body reading and stops the
    request; whatever the app then answers, the middleware sends its own 413.
    """

    def __init__(self, max_bytes: int) -> None:
        super().__init__(413, too_large_detail(max_bytes), headers={"Connection": "close"})


def _json_413(max_bytes: int) -> tuple[Message, Message]:
    body = json.dumps({"detail": too_large_detail(max_bytes)}).encode()
    start: Message = {
        "type": "http.response.start",
        "status": 413,
        "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            # The rest of the body is never read: the connection cannot be reused.
            (b"connection", b"close"),
        ],
    }
    return start, {"type": "http.response.body", "body": body, "more_body": False}


def _declared_length(scope: Scope) -> int | None:
    """The largest Content-Length the request declares, or None (chunked or absent).

    The HTTP server refuses malformed values before we see them; anything left
    unparseable is ignored here and the streamed bytes are counted instead.
    """
    lengths = []
    for key, value in scope.get("headers", ()):
        if key.lower() == b"content-length":
            try:
                lengths.append(int(value))
            except ValueError:
                continue
    return max(lengths) if lengths else None


class BodySizeLimit:
    """Refuse request bodies larger than `max_bytes` with 413 and a JSON `detail`."""

    def __init__(
        self, app: ASGIApp, max_bytes: int, exempt_paths: Collection[str] = EXEMPT_PATHS
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.exempt_paths = exempt_paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = str(scope.get("path", ""))
        if scope["type"] != "http" or path in self.exempt_paths:
            await self.app(scope, receive, send)
            return
        if path.startswith(EXEMPT_PREFIXES):
            await _close_if_unread(self.app, scope, receive, send)
            return
        declared = _declared_length(scope)
        if declared is not None and declared > self.max_bytes:
            await self._refuse(send)
            return

        received = 0
        exceeded = False
        started = False
        max_bytes = self.max_bytes

        async def limited_receive() -> Message:
            nonlocal received, exceeded
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > max_bytes:
                    exceeded = True
                    raise BodyTooLarge(max_bytes)
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if exceeded:
                # The app answers the refused body somehow (FastAPI: with our 413, an
                # older one: with a 400): the caller always gets the same 413.
                if message["type"] == "http.response.start" and not started:
                    started = True
                    await self._refuse(send)
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except BodyTooLarge:
            if started:
                raise
            started = True
            await self._refuse(send)

    async def _refuse(self, send: Send) -> None:
        start, body = _json_413(self.max_bytes)
        await send(start)
        await send(body)


def _has_body(scope: Scope) -> bool:
    for key, value in scope.get("headers", ()):
        name = key.lower()
        if name == b"transfer-encoding" or (name == b"content-length" and value.strip() != b"0"):
            return True
    return False


async def _close_if_unread(app: ASGIApp, scope: Scope, receive: Receive, send: Send) -> None:
    """Pass the request on; an answer given before its body was read to the end (an
    upload refused early) closes the connection: the unread bytes would otherwise be
    taken for the next request on it."""
    unread = _has_body(scope)

    async def tracked_receive() -> Message:
        nonlocal unread
        message = await receive()
        if message["type"] != "http.request" or not message.get("more_body", False):
            unread = False
        return message

    async def tracked_send(message: Message) -> None:
        if message["type"] == "http.response.start" and unread:
            headers = [*message.get("headers", ()), (b"connection", b"close")]
            message = {**message, "headers": headers}
        await send(message)

    await app(scope, tracked_receive, tracked_send)
