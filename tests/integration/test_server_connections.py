"""Connections that hold a file descriptor without finishing a request are closed
(issue 10, case 14).

Before, uvicorn kept a connection that sent nothing, half a request line, or headers
and then no body, open forever, and any number of them. Now (server/connections.py)
the request line and headers must arrive within HTTP_HEADER_TIMEOUT, a body may not
stall longer than HTTP_BODY_IDLE_TIMEOUT, and beyond MAX_CONNECTIONS a new
connection is answered 503 and closed. A request the application is working on is
never cut.

The server is started with `connections.build_config`, which is what `codemode serve`
runs once it passes `uvicorn_options` to uvicorn.
"""

from __future__ import annotations

import json
import selectors
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from codemode_session.errors import ValidationError
from codemode_session.server.connections import ConnectionLimits

from tests.conftest import RedisServer
from tests.integration.server_fixture import (
    ServerProcess,
    base_settings,
    free_port,
    server_env,
)

pytestmark = pytest.mark.redis

SERVE = """
import os, sys, uvicorn
from codemode_session.server.app import create_app
from codemode_session.server.connections import build_config
config = build_config(create_app(), host="127.0.0.1", port=int(sys.argv[1]),
                      log_level="warning", env=os.environ)
uvicorn.Server(config).run()
"""
# Long enough for any test machine to notice a closed connection; never reached when
# the server does its job.
PATIENCE = 60.0


@contextmanager
def bounded_server(settings: Mapping[str, str]) -> Iterator[ServerProcess]:
    """`codemode serve` as it runs with the connection bounds, until /health answers."""
    port = free_port()
    fd, log_name = tempfile.mkstemp(prefix="codemode-serve-", suffix=".log")
    with open(fd, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-c", SERVE, str(port)],
            env=server_env(settings),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = ServerProcess(proc, port, Path(log_name), settings.get("CONTAINER_AUTH_TOKEN"))
    try:
        with httpx.Client(trust_env=False, timeout=2.0) as http:
            for _ in range(600):
                assert proc.poll() is None, server.output()
                try:
                    if http.get(f"{server.url}/health").status_code == 200:
                        break
                except httpx.TransportError:
                    time.sleep(0.05)
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def server(redis_server: RedisServer) -> Iterator[ServerProcess]:
    settings = base_settings(
        redis_server.url,
        f"conn{uuid.uuid4().hex[:8]}",
        HTTP_HEADER_TIMEOUT="1",
        HTTP_BODY_IDLE_TIMEOUT="1",
        HTTP_KEEPALIVE_TIMEOUT="1",
    )
    with bounded_server(settings) as srv:
        yield srv


def connect(server: ServerProcess, data: bytes = b"") -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port))
    sock.settimeout(PATIENCE)
    if data:
        sock.sendall(data)
    return sock


def read_until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (a timeout fails)."""
    received = b""
    with sock:
        try:
            while chunk := sock.recv(65536):
                received += chunk
        except ConnectionResetError:
            pass
        except TimeoutError:
            pytest.fail(f"the server kept the connection open for {PATIENCE}s; got {received!r}")
    return received


def status_and_detail(raw: bytes) -> tuple[int, str]:
    head, _, body = raw.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, json.loads(body)["detail"]


def request(
    path: str, headers: Mapping[str, str] | None = None, body: bytes = b"", method: str = "GET"
) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def test_a_connection_that_sends_nothing_is_closed(server: ServerProcess) -> None:
    assert read_until_closed(connect(server)) == b""


def test_half_a_request_line_is_408(server: ServerProcess) -> None:
    raw = read_until_closed(connect(server, b"GET /hea"))
    assert status_and_detail(raw) == (408, "the request line and headers did not arrive within 1s")


def test_headers_that_never_end_are_408(server: ServerProcess) -> None:
    sock = connect(server, b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: ")
    assert status_and_detail(read_until_closed(sock))[0] == 408


def test_a_body_that_stalls_is_408(server: ServerProcess) -> None:
    headers = {
        "Authorization": f"Bearer {server.token}",
        "Content-Type": "application/json",
        "Content-Length": "100",
    }
    raw = read_until_closed(
        connect(server, request("/api/artifacts", headers, b'{"na', method="POST"))
    )
    assert status_and_detail(raw) == (408, "no part of the request body arrived for 1s")


def test_endless_headers_are_431(server: ServerProcess) -> None:
    sock = connect(server, b"GET /health HTTP/1.1\r\nX-Big: " + b"a" * 70_000)
    assert status_and_detail(read_until_closed(sock))[0] == 431


def test_an_idle_keep_alive_connection_is_closed(server: ServerProcess) -> None:
    sock = connect(server, request("/health"))
    raw = read_until_closed(sock)
    assert raw.startswith(b"HTTP/1.1 200 OK") and raw.count(b"HTTP/1.1") == 1


def test_the_next_request_on_a_connection_has_a_deadline_too(server: ServerProcess) -> None:
    sock = connect(server, request("/health"))
    first = sock.recv(65536)
    assert first.startswith(b"HTTP/1.1 200 OK")
    sock.sendall(b"GET /heal")  # stops the keep-alive timer, and never finishes
    assert status_and_detail(read_until_closed(sock))[0] == 408


def test_five_hundred_idle_connections_are_all_closed(server: ServerProcess) -> None:
    socks = [connect(server, b"" if n % 2 else b"GET / HTTP/1.1\r\n") for n in range(500)]
    open_ = set(socks)
    with selectors.DefaultSelector() as sel:
        for sock in socks:
            sel.register(sock, selectors.EVENT_READ)
        deadline = time.monotonic() + PATIENCE
        while open_ and time.monotonic() < deadline:
            for key, _ in sel.select(timeout=1.0):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                try:
                    if sock.recv(65536):
                        continue  # the 408; the close follows
                except ConnectionResetError:
                    pass
                sel.unregister(sock)
                sock.close()
                open_.discard(sock)
    for sock in open_:
        sock.close()
    assert not open_, f"{len(open_)} of 500 idle connections still open after {PATIENCE}s"
    assert httpx.get(f"{server.url}/health", trust_env=False).status_code == 200


def test_work_in_progress_is_not_cut(server: ServerProcess) -> None:
    """The deadlines bound the client, not the application: a 3 s run (longer than
    every timeout above) answers normally."""
    with server.client() as http:
        response = http.post("/execute", json={"code": "import time\ntime.sleep(3)\n'done'"})
        assert response.status_code == 200 and response.json()["value"] == "done"
        # A body sent slowly, but never idle for a whole second, is read. The pause is the
        # input (a slow client), not a wait for the server: 0.3 s is under
        # HTTP_BODY_IDLE_TIMEOUT=1, and the whole body takes longer than that.
        with connect(server) as sock:
            body = json.dumps({"name": "slow.txt", "data": "x" * 20}).encode()
            sock.sendall(
                request(
                    "/api/artifacts",
                    {
                        "Authorization": f"Bearer {server.token}",
                        "Content-Type": "application/json",
                        "Content-Length": str(len(body)),
                    },
                    method="POST",
                )
            )
            sending = time.monotonic()
            for n in range(0, len(body), 10):
                time.sleep(0.3)
                sock.sendall(body[n : n + 10])
            assert time.monotonic() - sending > 1.0, "the body was not sent slowly"
            assert sock.recv(65536).startswith(b"HTTP/1.1 200 OK")


def test_connections_past_the_cap_are_refused(redis_server: RedisServer) -> None:
    settings = base_settings(
        redis_server.url,
        f"cap{uuid.uuid4().hex[:8]}",
        MAX_CONNECTIONS="20",
        HTTP_HEADER_TIMEOUT="600",
    )
    with bounded_server(settings) as server:
        held = [connect(server) for _ in range(20)]
        refused = read_until_closed(connect(server, request("/health")))
        assert status_and_detail(refused) == (
            503,
            "too many open connections (MAX_CONNECTIONS=20); retry later",
        )
        for sock in held:
            sock.close()
        # Once the held connections are gone, requests are served again.
        with httpx.Client(trust_env=False, timeout=PATIENCE) as http:
            for _ in range(100):
                try:
                    if http.get(f"{server.url}/health").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                time.sleep(0.05)
            else:
                pytest.fail("the server did not serve again after the connections closed")


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("HTTP_HEADER_TIMEOUT", "soon", "HTTP_HEADER_TIMEOUT='soon' is not a number"),
        ("HTTP_BODY_IDLE_TIMEOUT", "0", "HTTP_BODY_IDLE_TIMEOUT must be positive"),
        ("MAX_CONNECTIONS", "2.5", "MAX_CONNECTIONS must be a whole number"),
    ],
)
def test_bad_settings_are_one_line(name: str, value: str, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        ConnectionLimits.from_env({name: value})
