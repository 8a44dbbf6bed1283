"""The session clients skip loading a CA store for plain http:// servers; an https://
server's certificate is still verified (a self-signed one is refused)."""

from __future__ import annotations

import http.server
import shutil
import ssl
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from codemode_session.client import AsyncSessionClient, SessionClient


class _Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b'{"status": "healthy"}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_: object) -> None:
        pass


def _serve(tls: ssl.SSLContext | None) -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Health)
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    scheme = "https" if tls is not None else "http"
    try:
        yield f"{scheme}://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def plain_url() -> Iterator[str]:
    yield from _serve(None)


@pytest.fixture
def self_signed_url(tmp_path: Path) -> Iterator[str]:
    if shutil.which("openssl") is None:
        pytest.fail("openssl is needed to make a self-signed certificate")
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
         "-out", str(cert), "-subj", "/CN=127.0.0.1", "-days", "1"],
        check=True, capture_output=True,
    )  # fmt: skip
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    yield from _serve(context)


def test_a_plain_http_server_is_reached(plain_url: str) -> None:
    with SessionClient(plain_url) as client:
        assert client.health() == {"status": "healthy"}


def test_an_https_servers_certificate_is_still_verified(self_signed_url: str) -> None:
    with SessionClient(self_signed_url) as client, pytest.raises(httpx.ConnectError) as caught:
        client.health()
    assert "CERTIFICATE_VERIFY_FAILED" in str(caught.value)


async def test_the_async_client_verifies_https_too(self_signed_url: str) -> None:
    async with AsyncSessionClient(self_signed_url) as client:
        with pytest.raises(httpx.ConnectError) as caught:
            await client.health()
    assert "CERTIFICATE_VERIFY_FAILED" in str(caught.value)
