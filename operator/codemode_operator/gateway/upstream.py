"""A small HTTP/1.1 client for the hop to session servers, with kept-alive connections.

httpx costs about 0.8 ms a request here, more than the whole latency budget of the
gateway (0.5 ms at p50); asyncio streams with httptools' parser (uvicorn's) cost about a
tenth of it. It does only what the hop needs: one request at a time per connection,
bodies streamed both ways (by Content-Length, or chunked when the caller's was), and
connections reused while the server keeps them alive.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator
from typing import Any

import httptools

READ = 65536
# The session server (uvicorn) closes a connection idle for 5 s: reuse one for less.
IDLE_SECONDS = 4.0
MAX_IDLE_PER_HOST = 64


class UpstreamError(OSError):
    """The session server closed the connection or sent something that is not HTTP."""


class _Parsing:
    """httptools' callbacks for one response."""

    def __init__(self) -> None:
        self.headers: list[tuple[bytes, bytes]] = []
        self.chunks: deque[bytes] = deque()
        self.headers_done = False
        self.done = False
        self.keep_alive = False
        self.parser: Any = None

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        self.headers_done = True
        # Only now: once the whole message is parsed the parser no longer says.
        self.keep_alive = bool(self.parser.should_keep_alive())

    def on_body(self, body: bytes) -> None:
        self.chunks.append(body)

    def on_message_complete(self) -> None:
        self.done = True


class _Conn:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.idle_since = 0.0

    def usable(self) -> bool:
        return (
            not self.reader.at_eof()
            and not self.writer.is_closing()
            and time.monotonic() - self.idle_since < IDLE_SECONDS
        )

    def close(self) -> None:
        self.writer.close()


class Response:
    def __init__(
        self, pool: Upstream, key: tuple[str, int], conn: _Conn, parsing: _Parsing, parser: object
    ) -> None:
        self.pool, self.key, self.conn, self.parsing, self.parser = (
            pool,
            key,
            conn,
            parsing,
            parser,
        )
        self.status: int = parser.get_status_code()  # type: ignore[attr-defined]
        self.keep_alive = parsing.keep_alive
        self.headers = parsing.headers
        self._open = True

    def header(self, name: bytes) -> bytes:
        return next((v for k, v in self.headers if k == name), b"")

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body as it arrives; the connection goes back to the pool at its end."""
        parsing = self.parsing
        while True:
            while parsing.chunks:
                yield parsing.chunks.popleft()
            if parsing.done:
                break
            data = await self.conn.reader.read(READ)
            if not data:
                raise UpstreamError("the session server closed the connection mid-answer")
            self.parser.feed_data(data)  # type: ignore[attr-defined]
        if self._open:
            self._open = False
            if self.keep_alive:
                self.pool.release(self.key, self.conn)
            else:
                self.conn.close()

    async def aclose(self) -> None:
        """Stop early: the connection cannot be reused (the rest of the body is unread),
        and closing it is how the server learns the caller has gone."""
        if self._open:
            self._open = False
            self.conn.close()


class Upstream:
    def __init__(self, connect_timeout: float = 10.0) -> None:
        self.connect_timeout = connect_timeout
        self._idle: dict[tuple[str, int], list[_Conn]] = {}

    def release(self, key: tuple[str, int], conn: _Conn) -> None:
        idle = self._idle.setdefault(key, [])
        if len(idle) >= MAX_IDLE_PER_HOST:
            conn.close()
            return
        conn.idle_since = time.monotonic()
        idle.append(conn)

    async def _connection(self, key: tuple[str, int]) -> _Conn:
        idle = self._idle.get(key)
        while idle:
            conn = idle.pop()
            if conn.usable():
                return conn
            conn.close()
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(*key, limit=READ), self.connect_timeout
        )
        return _Conn(reader, writer)

    async def send(
        self,
        method: str,
        host: str,
        port: int,
        target: str,
        headers: list[tuple[bytes, bytes]],
        body: AsyncIterator[bytes] | None,
    ) -> Response:
        """Send the request (its body streamed) and read the answer's head."""
        key = (host, port)
        conn = await self._connection(key)
        try:
            return await self._exchange(conn, key, method, target, headers, body)
        except BaseException:
            conn.close()
            raise

    async def _exchange(
        self,
        conn: _Conn,
        key: tuple[str, int],
        method: str,
        target: str,
        headers: list[tuple[bytes, bytes]],
        body: AsyncIterator[bytes] | None,
    ) -> Response:
        chunked = body is not None and not any(k == b"content-length" for k, _ in headers)
        head = [f"{method} {target} HTTP/1.1\r\nhost: {key[0]}:{key[1]}\r\n".encode()]
        head += [k + b": " + v + b"\r\n" for k, v in headers]
        if chunked:
            head.append(b"transfer-encoding: chunked\r\n")
        head.append(b"\r\n")
        writer = conn.writer
        if body is None:
            writer.write(b"".join(head))
        else:
            async for chunk in body:
                if chunked:
                    chunk = b"%x\r\n%b\r\n" % (len(chunk), chunk)
                if head:  # the head goes with the first piece: one packet for a small request
                    chunk, head = b"".join(head) + chunk, []
                writer.write(chunk)
                await writer.drain()
            writer.write(b"".join(head) + (b"0\r\n\r\n" if chunked else b""))
        await writer.drain()
        parsing = _Parsing()
        parser = httptools.HttpResponseParser(parsing)
        parsing.parser = parser
        while not parsing.headers_done:
            data = await conn.reader.read(READ)
            if not data:
                raise UpstreamError("the session server closed the connection")
            try:
                parser.feed_data(data)
            except httptools.HttpParserError as exc:
                raise UpstreamError(f"the session server's answer is not HTTP: {exc}") from None
        if method == "HEAD":
            parsing.done = True
        return Response(self, key, conn, parsing, parser)

    def close(self) -> None:
        for idle in self._idle.values():
            for conn in idle:
                conn.close()
        self._idle.clear()
