"""MAX_REQUEST_BYTES: every request body is capped, before the server reads it all.

The over-the-cap cases talk raw HTTP over a socket, as a hostile client would: a
Content-Length of gigabytes with no body behind it, or a chunked body that never
ends. Both must get a 413 with a JSON `detail` at once, never a 5xx and never after
the server has read the whole body. The clients that fail on 5xx (server_fixture)
check the normal cases and that the server stays healthy.
"""

from __future__ import annotations

import json
import select
import socket
import uuid
from collections.abc import Iterator

import pytest
from codemode_session.server.config import ServerConfig

from tests.conftest import RedisServer
from tests.integration.server_fixture import (
    TOKEN,
    Api,
    ServerProcess,
    base_settings,
    running_server,
    serve_refusals,
)

pytestmark = pytest.mark.redis

CAP = 200_000
DETAIL = f"request body is larger than MAX_REQUEST_BYTES ({CAP} bytes)"
AUTH = f"Authorization: Bearer {TOKEN}\r\n"
BODY_PATHS = ["/execute", "/sessions", "/api/artifacts", "/api/workflows", "/api/deps/add"]


@pytest.fixture(scope="module")
def server(redis_server: RedisServer) -> Iterator[ServerProcess]:
    prefix = f"limit{uuid.uuid4().hex[:8]}"
    with running_server(base_settings(redis_server.url, prefix, MAX_REQUEST_BYTES=str(CAP))) as srv:
        yield srv


@pytest.fixture(scope="module")
def api(server: ServerProcess) -> Iterator[Api]:
    with server.client() as client:
        yield Api(server, client)


# ---- raw HTTP ---------------------------------------------------------------------------


class RawResponse:
    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    def json(self) -> object:
        return json.loads(self.body)


def read_response(sock: socket.socket) -> RawResponse:
    """One HTTP/1.1 response with a Content-Length; a reset after it is fine."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed before a response: {data!r}"
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
    length = int(headers["content-length"])
    while len(body) < length:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        body += chunk
    return RawResponse(status, headers, body[:length])


def connect(server: ServerProcess) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=30)
    return sock


def request_head(method: str, path: str, extra: str, auth: bool = True) -> bytes:
    return (
        f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{AUTH if auth else ''}"
        f"Content-Type: application/json\r\n{extra}\r\n"
    ).encode()


def assert_too_large(response: RawResponse) -> None:
    assert response.status == 413, (response.status, response.body)
    assert response.headers["content-type"].startswith("application/json")
    assert response.json() == {"detail": DETAIL}


def stream_chunked(sock: socket.socket, limit: int, chunk_size: int = 16384) -> int:
    """Send chunks until the server answers (or `limit` bytes); the bytes sent."""
    chunk = b"%x\r\n" % chunk_size + b"x" * chunk_size + b"\r\n"
    sent = 0
    while sent < limit:
        readable, _, _ = select.select([sock], [], [], 0)
        if readable:
            break
        try:
            sock.sendall(chunk)
        except (BrokenPipeError, ConnectionResetError):
            break
        sent += chunk_size
    return sent


# ---- over the cap -----------------------------------------------------------------------------


@pytest.mark.parametrize("path", BODY_PATHS)
def test_declared_length_over_the_cap_is_413_at_once(server: ServerProcess, path: str) -> None:
    """Content-Length of 10 GB and no body behind it: answered from the headers alone."""
    with connect(server) as sock:
        sock.sendall(request_head("POST", path, "Content-Length: 10000000000\r\n") + b"{")
        response = read_response(sock)
    assert_too_large(response)
    assert response.headers.get("connection") == "close"


def test_declared_length_one_over_the_cap_is_413(server: ServerProcess) -> None:
    with connect(server) as sock:
        sock.sendall(request_head("POST", "/api/artifacts", f"Content-Length: {CAP + 1}\r\n"))
        assert_too_large(read_response(sock))


def test_cap_applies_before_auth(server: ServerProcess) -> None:
    """A caller without a token cannot make the server read a huge body either."""
    with connect(server) as sock:
        sock.sendall(
            request_head("POST", "/execute", "Content-Length: 10000000000\r\n", auth=False)
        )
        assert_too_large(read_response(sock))


@pytest.mark.parametrize("path", ["/execute", "/api/artifacts"])
def test_chunked_body_over_the_cap_is_413(server: ServerProcess, path: str) -> None:
    """No Content-Length: the streamed bytes are counted and refused past the cap."""
    with connect(server) as sock:
        sock.sendall(request_head("POST", path, "Transfer-Encoding: chunked\r\n"))
        sent = stream_chunked(sock, limit=CAP + 16384)
        assert sent > CAP
        assert_too_large(read_response(sock))


def test_endless_chunked_body_is_cut_off_early(server: ServerProcess) -> None:
    """A body that would go on for 1 GB is answered long before: nothing buffers it all."""
    with connect(server) as sock:
        sock.sendall(request_head("POST", "/api/artifacts", "Transfer-Encoding: chunked\r\n"))
        sent = stream_chunked(sock, limit=1 << 30)
        assert sent < 64 * CAP, f"the server read {sent} bytes before it answered"
        assert_too_large(read_response(sock))


def test_large_json_from_a_normal_client_is_413(api: Api) -> None:
    """httpx, sending a body a little over the cap: a 413 with the detail, not a 5xx."""
    data = "x" * (CAP + 10)
    response = api.http.post("/api/artifacts", json={"name": "big.txt", "data": data})
    assert response.status_code == 413, response.text
    assert response.json() == {"detail": DETAIL}


# ---- under the cap -------------------------------------------------------------------------


def artifact_body(size: int, name: str) -> bytes:
    """A JSON artifact request of exactly `size` bytes."""
    empty = json.dumps({"name": name, "data": ""}).encode()
    body = json.dumps({"name": name, "data": "x" * (size - len(empty))}).encode()
    assert len(body) == size
    return body


@pytest.mark.parametrize("size", [CAP - 1, CAP])
def test_body_up_to_the_cap_works(api: Api, size: int) -> None:
    name = f"near_cap_{size}.txt"
    body = artifact_body(size, name)
    response = api.http.post(
        "/api/artifacts", content=body, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 200, response.text
    fetched = api.http.get(f"/api/artifacts/{name}")
    assert fetched.status_code == 200
    assert len(fetched.json()) == size - len(json.dumps({"name": name, "data": ""}))


def test_chunked_body_under_the_cap_works(api: Api) -> None:
    body = artifact_body(CAP - 100, "chunked_under.txt")

    def chunks() -> Iterator[bytes]:
        for start in range(0, len(body), 10_000):
            yield body[start : start + 10_000]

    response = api.http.post(
        "/api/artifacts", content=chunks(), headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 200, response.text


def test_code_under_the_cap_still_runs(api: Api) -> None:
    session = api.session()
    code = "x = 1\n" * 20_000 + "x + 41"
    assert len(code) < CAP
    assert api.value(session, code) == 42


# ---- probes and health -----------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/health", "/ready", "/metrics"])
def test_probes_are_not_capped(server: ServerProcess, path: str) -> None:
    with connect(server) as sock:
        sock.sendall(
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
            f"Content-Length: {CAP + 1}\r\n\r\n".encode()
            + b"x" * (CAP + 1)
        )
        response = read_response(sock)
    assert response.status == 200, (response.status, response.body[:500])


def test_server_stays_healthy_after_refusals(server: ServerProcess, api: Api) -> None:
    for _ in range(5):
        with connect(server) as sock:
            sock.sendall(request_head("POST", "/execute", "Transfer-Encoding: chunked\r\n"))
            stream_chunked(sock, limit=CAP + 16384)
            assert_too_large(read_response(sock))
    assert server.alive
    assert api.http.get("/health").json()["status"] == "healthy"
    assert api.http.get("/ready").status_code == 200
    session = api.session()
    assert api.value(session, "sum(range(10))") == 45
    assert "Traceback" not in server.output()


# ---- the setting ---------------------------------------------------------------------------


REFUSALS = {
    "abc": "MAX_REQUEST_BYTES='abc' is not a whole number of bytes",
    "1.5": "MAX_REQUEST_BYTES='1.5' is not a whole number of bytes",
    "64MiB": "MAX_REQUEST_BYTES='64MiB' is not a whole number of bytes",
    "0": "MAX_REQUEST_BYTES must be positive, got '0'",
    "-1": "MAX_REQUEST_BYTES must be positive, got '-1'",
}


@pytest.fixture(scope="module")
def refusals(redis_server: RedisServer) -> dict[str, tuple[int, str]]:
    """Start `codemode serve` once per bad value, all at once; (exit code, stderr) each."""
    return serve_refusals(
        {
            value: base_settings(redis_server.url, "unused", MAX_REQUEST_BYTES=value)
            for value in REFUSALS
        }
    )


@pytest.mark.parametrize("value", sorted(REFUSALS))
def test_bad_max_request_bytes_stops_the_server(
    refusals: dict[str, tuple[int, str]], value: str
) -> None:
    returncode, stderr = refusals[value]
    assert returncode == 2, stderr
    lines = stderr.strip().splitlines()
    assert lines == [f"codemode serve: {REFUSALS[value]}"], stderr


def test_default_cap_is_64_mib() -> None:
    env = {"CONTAINER_AUTH_DISABLED": "true", "STORAGE_DIR": "/nonexistent"}
    assert ServerConfig.from_env(env).max_request_bytes == 64 * 1024 * 1024
    assert ServerConfig.from_env({**env, "MAX_REQUEST_BYTES": ""}).max_request_bytes == (
        64 * 1024 * 1024
    )
    assert ServerConfig.from_env({**env, "MAX_REQUEST_BYTES": "1024"}).max_request_bytes == 1024


# ---- names with a slash ----------------------------------------------------------------------


@pytest.mark.parametrize("method", ["GET", "DELETE"])
@pytest.mark.parametrize("path", ["/api/workflows/a%2Fb", "/api/workflows/a/b"])
def test_workflow_name_with_a_slash_is_400(api: Api, method: str, path: str) -> None:
    response = api.http.request(method, path)
    assert response.status_code == 400, response.text
    assert response.json()["detail"] == ("invalid workflow name 'a/b': must be a Python identifier")


def test_workflow_routes_still_route(api: Api) -> None:
    source = '"""Add one."""\n\n\nasync def run(a: int) -> int:\n    return a + 1\n'
    assert (
        api.http.post("/api/workflows", json={"name": "slash_ok", "source": source}).status_code
        == 200
    )
    assert api.http.get("/api/workflows/slash_ok").json()["name"] == "slash_ok"
    assert api.http.get("/api/workflows/search", params={"query": "slash"}).status_code == 200
    assert api.http.get("/api/workflows/nothing_here").json() is None
    assert api.http.delete("/api/workflows/slash_ok").json() is True
    assert api.http.get("/api/artifacts/a%2Fb").status_code == 404
