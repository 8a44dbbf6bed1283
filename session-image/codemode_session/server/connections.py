"""Bounds on the HTTP connections the session server keeps open.

uvicorn closes an idle keep-alive connection, but a connection that has not yet
sent a whole request has no timeout at all: one that sends nothing, or half a
request line, or headers and then only part of its body, is kept (with its file
descriptor) forever, and nothing limits how many there are. Here uvicorn's
own HTTP protocol gets, per connection:

- a header deadline: a request's line and headers must arrive within
  `header_timeout` seconds of its first byte (of the connection, for the first
  request), and within `max_header_bytes`; else 408 (431) and the connection closes;
- a body idle timeout: while a request body is being received, a gap of more
  than `body_idle_timeout` seconds closes it (408);
- a cap: a connection beyond `max_connections` open ones is answered 503 and
  closed.

Every refusal has a JSON `detail`, like the application's errors.

Nothing applies while the application is working on a request, so a long
/execute is never cut. `uvicorn_options(env)` gives what `codemode serve` passes
to `uvicorn.Config`.
"""

from __future__ import annotations

import asyncio
import json
import resource
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, cast

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from codemode_session.errors import ValidationError
from codemode_session.server.config import _float

try:  # uvicorn[standard] brings httptools; h11 is uvicorn's own fallback
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
except ImportError:  # pragma: no cover
    HttpToolsProtocol = None  # type: ignore[assignment,misc]

DEFAULT_MAX_CONNECTIONS = 1000
# After a refusal the answer is sent and our side shut; what the client still sends is
# read and dropped this long, so that closing does not reset the connection (a reset
# can destroy the answer before the client reads it).
LINGER_SECONDS = 2.0


def _whole(env: Mapping[str, str], name: str, default: int) -> int:
    value = _float(env, name, default)
    if value != int(value):
        raise ValidationError(f"{name} must be a whole number, got {env.get(name)!r}")
    return int(value)


def _default_max_connections() -> int:
    """1000, but at most half the descriptors the process may open: workers' pipes,
    Redis connections and log files need the rest."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return DEFAULT_MAX_CONNECTIONS
    return max(16, min(DEFAULT_MAX_CONNECTIONS, soft // 2))


@dataclass(frozen=True)
class ConnectionLimits:
    header_timeout: float = 10.0
    body_idle_timeout: float = 30.0
    keep_alive_timeout: float = 5.0
    max_header_bytes: int = 64 * 1024
    max_connections: int = DEFAULT_MAX_CONNECTIONS

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> ConnectionLimits:
        """HTTP_HEADER_TIMEOUT, HTTP_BODY_IDLE_TIMEOUT, HTTP_KEEPALIVE_TIMEOUT (seconds),
        HTTP_MAX_HEADER_BYTES and MAX_CONNECTIONS; ValidationError names a bad one."""
        return cls(
            header_timeout=_float(env, "HTTP_HEADER_TIMEOUT", cls.header_timeout),
            body_idle_timeout=_float(env, "HTTP_BODY_IDLE_TIMEOUT", cls.body_idle_timeout),
            keep_alive_timeout=_float(env, "HTTP_KEEPALIVE_TIMEOUT", cls.keep_alive_timeout),
            max_header_bytes=_whole(env, "HTTP_MAX_HEADER_BYTES", cls.max_header_bytes),
            max_connections=_whole(env, "MAX_CONNECTIONS", _default_max_connections()),
        )


def _raw_response(status: int, reason: str, detail: str) -> bytes:
    body = json.dumps({"detail": detail}).encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    )
    return head.encode() + body


class _Bounded(asyncio.Protocol):
    """Deadlines and the cap, on top of a uvicorn HTTP protocol (the next class in
    the MRO). State is read from uvicorn's `cycle` (one per request, made when its
    headers are complete), which both of its HTTP implementations keep alike."""

    limits: ClassVar[ConnectionLimits] = ConnectionLimits()
    # uvicorn's attributes this class reads (set by the protocol it is mixed into).
    cycle: Any
    connections: set[Any]
    transport: asyncio.Transport
    flow: Any
    loop: asyncio.AbstractEventLoop

    _refused = False
    _discarding = False
    _linger: asyncio.TimerHandle | None = None
    _timer: asyncio.TimerHandle | None = None
    _timer_kind = ""
    _seen_cycle: Any = None
    _header_bytes = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if len(self.connections) >= self.limits.max_connections:
            self._refused = True
            self.transport = cast(asyncio.Transport, transport)
            self._refuse(
                503,
                "Service Unavailable",
                "too many open connections "
                f"(MAX_CONNECTIONS={self.limits.max_connections}); retry later",
            )
            return
        super().connection_made(transport)
        self._arm("headers", self.limits.header_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel()
        if self._linger is not None:
            self._linger.cancel()
        if not self._refused:
            super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._discarding:
            return
        if self._awaiting_headers():
            self._header_bytes += len(data)
        super().data_received(data)
        if self.transport.is_closing():
            return
        if self.cycle is not self._seen_cycle:  # a request's headers are complete
            self._seen_cycle = self.cycle
            self._header_bytes = 0
            self._cancel()
        if self._awaiting_headers():
            if self._header_bytes > self.limits.max_header_bytes:
                self._refuse(
                    431,
                    "Request Header Fields Too Large",
                    f"request line and headers exceed {self.limits.max_header_bytes} bytes",
                )
            elif self._timer_kind != "headers":  # the first byte of a new request
                self._arm("headers", self.limits.header_timeout)
        elif self._awaiting_body():
            self._arm("body", self.limits.body_idle_timeout)  # any progress restarts it
        else:
            self._cancel()

    # ---- state -----------------------------------------------------------------------

    def _awaiting_headers(self) -> bool:
        """No request is open: the next bytes are a request line and headers."""
        return self.cycle is None or bool(self.cycle.response_complete)

    def _awaiting_body(self) -> bool:
        """A request is open and the client still owes part of its body."""
        cycle = self.cycle
        return bool(cycle.more_body) and not cycle.response_complete

    # ---- timers ----------------------------------------------------------------------

    def _arm(self, kind: str, seconds: float) -> None:
        self._cancel()
        self._timer_kind = kind
        self._timer = self.loop.call_later(seconds, self._expired, kind)

    def _cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer, self._timer_kind = None, ""

    def _expired(self, kind: str) -> None:
        self._timer, self._timer_kind = None, ""
        if self.transport.is_closing():
            return
        if kind == "headers" and self._awaiting_headers():
            if self._header_bytes:
                self._refuse(
                    408,
                    "Request Timeout",
                    "the request line and headers did not "
                    f"arrive within {self.limits.header_timeout:g}s",
                )
            else:  # it never said anything: nothing to answer
                self.transport.close()
        elif kind == "body" and self._awaiting_body():
            if self.flow.read_paused:  # we stopped reading, not the client: not idle
                self._arm("body", self.limits.body_idle_timeout)
            elif self.cycle.response_started:
                self.transport.close()
            else:
                self._refuse(
                    408,
                    "Request Timeout",
                    f"no part of the request body arrived for {self.limits.body_idle_timeout:g}s",
                )

    def _refuse(self, status: int, reason: str, detail: str) -> None:
        """Answer `status` and end the connection (after LINGER_SECONDS at most)."""
        self._cancel()
        self._discarding = True
        transport = self.transport
        transport.write(_raw_response(status, reason, detail))
        if transport.can_write_eof():
            transport.write_eof()
        self._linger = self.loop.call_later(LINGER_SECONDS, transport.close)


class BoundedH11Protocol(_Bounded, H11Protocol):
    """uvicorn's h11 protocol with the bounds of `_Bounded`."""


if HttpToolsProtocol is not None:

    class BoundedHttpToolsProtocol(_Bounded, HttpToolsProtocol):
        """uvicorn's httptools protocol (its default) with the bounds of `_Bounded`."""


def protocol_class(limits: ConnectionLimits) -> type[asyncio.Protocol]:
    """The HTTP protocol uvicorn should use (httptools when installed), bound to `limits`."""
    base: type[_Bounded] = (
        BoundedHttpToolsProtocol if HttpToolsProtocol is not None else BoundedH11Protocol
    )
    return cast("type[asyncio.Protocol]", type(base.__name__, (base,), {"limits": limits}))


def uvicorn_options(env: Mapping[str, str]) -> dict[str, Any]:
    """Keyword arguments for `uvicorn.Config` that bound connections (ValidationError
    names a bad setting). WebSockets are off: no endpoint uses them."""
    limits = ConnectionLimits.from_env(env)
    return {
        "http": protocol_class(limits),
        "ws": "none",
        "timeout_keep_alive": limits.keep_alive_timeout,
        # h11's own cap (a bare 400) sits above ours, so both protocols answer 431.
        "h11_max_incomplete_event_size": 2 * limits.max_header_bytes,
    }


def build_config(
    app: Any, *, host: str, port: int, log_level: str, env: Mapping[str, str]
) -> uvicorn.Config:
    """The `uvicorn.Config` `codemode serve` runs with (as its CLI builds it today),
    plus the bounds above."""
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        access_log=False,
        timeout_graceful_shutdown=10,
        **uvicorn_options(env),
    )
