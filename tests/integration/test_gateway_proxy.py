"""The gateway in front of a real `codemode serve`: what a caller sees of forwarding.

The Kubernetes side (TokenReview, SubjectAccessReview, the CodeSession and its Secret)
is an in-memory stand-in here; tests/e2e/test_gateway.py runs the same paths against a
real API server and session pods. What this tier shows is the forwarding itself: a
streamed run arrives line by line, 50 MB go up and come back identical, the caller's
token never reaches the session server, and every refusal is a 4xx with a reason."""

from __future__ import annotations

import base64
import hashlib
import io
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import uvicorn
from codemode_operator.gateway import metrics
from codemode_operator.gateway.app import Gateway
from codemode_operator.gateway.auth import Reviewer
from codemode_operator.gateway.kubeapi import ApiError
from codemode_operator.gateway.targets import Targets
from codemode_operator.gateway.upstream import Upstream
from codemode_operator.sessions import Sessions
from codemode_session.client import Output, SessionClient
from codemode_session.results import ExecuteResult
from prometheus_client import start_http_server

from tests.conftest import RedisServer, free_port, wait_for_port
from tests.integration.server_fixture import ServerProcess, base_settings, running_server

pytestmark = pytest.mark.redis

ALICE = "alice-token"  # may use session "a" only
PATH_A = "/v1/namespaces/team/codesessions/a"


class StandInApi:
    """Answers the gateway's API calls: two users, one session pointing at `server`."""

    def __init__(self, server: ServerProcess) -> None:
        self.server = server
        self.calls: list[tuple[str, str]] = []

    async def call(self, method: str, path: str, body: Any = None, **_: Any) -> dict[str, Any]:
        self.calls.append((method, path))
        if path.endswith("/tokenreviews"):
            token = body["spec"]["token"]
            if token != ALICE:
                return {"status": {"authenticated": False}}
            return {"status": {"authenticated": True, "user": {"username": "alice"}}}
        if path.endswith("/subjectaccessreviews"):
            attrs = body["spec"]["resourceAttributes"]
            allowed = attrs.get("name") == "a" and attrs.get("subresource") == "exec"
            return {"status": {"allowed": allowed}}
        found = await self.get_or_none(path)
        if found is None:
            raise ApiError(404, "not found")
        return found

    async def get_or_none(self, path: str) -> dict[str, Any] | None:
        self.calls.append(("GET", path))
        if path.endswith("/codesessions/a"):
            return {
                "spec": {},
                "status": {"phase": "Ready", "podName": "a-session", "tokenSecret": "a-token"},
            }
        if path.endswith("/secrets/a-token"):
            return {"data": {"token": base64.b64encode(self.server.token.encode()).decode()}}
        if path.endswith("/pods/a-session"):
            host_port = self.server.url.split("//", 1)[1]
            return {"status": {"podIP": host_port.split(":")[0]}}
        return None


@pytest.fixture(scope="module")
def server(redis_server: RedisServer) -> Iterator[ServerProcess]:
    env = base_settings(redis_server.url, f"gw{uuid.uuid4().hex[:8]}", WORKSPACE_ID="wsgw")
    with running_server(env) as srv:
        yield srv


@pytest.fixture(scope="module")
def gateway(server: ServerProcess) -> Iterator[str]:
    api = StandInApi(server)
    port = int(server.url.rsplit(":", 1)[1])

    def build() -> Gateway:
        targets = Targets(api)  # type: ignore[arg-type]
        original = targets._address

        async def address(route: Any, status: Any) -> str:
            return (await original(route, status)).replace(":8080", f":{port}")

        targets._address = address  # type: ignore[method-assign]
        return Gateway(Reviewer(api), targets, Upstream())  # type: ignore[arg-type]

    gw_port = free_port()
    config = uvicorn.Config(build(), host="127.0.0.1", port=gw_port, log_level="warning")
    served = uvicorn.Server(config)
    thread = threading.Thread(target=served.run, daemon=True)
    thread.start()
    wait_for_port(gw_port)
    try:
        yield f"http://127.0.0.1:{gw_port}"
    finally:
        served.should_exit = True
        thread.join(10)


def test_a_run_through_the_gateway_with_the_callers_token(gateway: str) -> None:
    # The session server accepts only its own token: ALICE's would be a 401 there.
    with SessionClient(gateway + PATH_A, token=ALICE) as client:
        assert client.execute("6 * 7").value == 42


def test_streamed_output_arrives_line_by_line(gateway: str) -> None:
    """Each line is acknowledged (a file uploaded through the gateway) before the run
    prints the next: output held back by the gateway would never let it finish."""
    code = (
        "import os, time\n"
        "for i in range(4):\n"
        "    print(f'line {i}')\n"
        "    deadline = time.time() + 20\n"
        "    while not os.path.exists(f'ack{i}') and time.time() < deadline:\n"
        "        time.sleep(0.02)\n"
        "    assert os.path.exists(f'ack{i}'), f'line {i} was not received while running'\n"
        "'done'"
    )
    with SessionClient(gateway + PATH_A, token=ALICE) as client:
        client.create_session()
        result: ExecuteResult | None = None
        with SessionClient(gateway + PATH_A, token=ALICE, session_id=client.session_id) as other:
            for item in client.execute_stream(code):
                if isinstance(item, Output):
                    for line in item.text.splitlines():
                        other.upload_file(f"ack{line.split()[-1]}", b"")
                else:
                    result = item
        assert result is not None and result.error is None and result.value == "done"


def test_fifty_megabytes_up_and_back_identical(gateway: str) -> None:
    data = os.urandom(50 * 1024 * 1024)
    with SessionClient(gateway + PATH_A, token=ALICE, timeout=120) as client:
        client.create_session()
        client.upload_file("big.bin", data)  # Content-Length
        client.upload_file("big2.bin", io.BytesIO(data))  # streamed: chunked, no length
        back = client.download_file("big.bin")
        into = io.BytesIO()
        assert client.download_file("big2.bin", into) == len(data)
    digest = hashlib.sha256(data).digest()
    assert hashlib.sha256(back).digest() == digest  # type: ignore[arg-type]
    assert hashlib.sha256(into.getvalue()).digest() == digest


@pytest.mark.parametrize(
    "path,headers,status,says",
    [
        (PATH_A + "/health", {}, 401, "Bearer"),
        (PATH_A + "/health", {"Authorization": "Bearer forged"}, 401, "not valid"),
        (
            "/v1/namespaces/team/codesessions/b/health",
            {"Authorization": f"Bearer {ALICE}"},
            403,
            "alice may not create codesessions/exec 'b'",
        ),
        ("/elsewhere", {"Authorization": f"Bearer {ALICE}"}, 400, "no session in path"),
        ("/v1/namespaces/Team/codesessions/a/x", {}, 400, "not a namespace name"),
    ],
)
def test_refusals_are_4xx_with_a_reason(
    gateway: str, path: str, headers: dict[str, str], status: int, says: str
) -> None:
    response = httpx.get(gateway + path, headers=headers)
    assert response.status_code == status
    assert says in response.json()["detail"]


def test_metrics_count_requests_and_decisions(gateway: str) -> None:
    httpx.get(gateway + PATH_A + "/health", headers={"Authorization": "Bearer forged"})
    # Not on the callers' port: on their own (GATEWAY_METRICS_PORT), as the gateway serves them.
    assert httpx.get(gateway + "/metrics").status_code == 400
    served, thread = start_http_server(0, addr="127.0.0.1", registry=metrics.REGISTRY)
    try:
        text = httpx.get(f"http://127.0.0.1:{served.server_port}/metrics").text
    finally:
        served.shutdown()
        thread.join(10)
    assert 'codemode_gateway_authorization_total{decision="unauthenticated"}' in text
    assert 'codemode_gateway_requests_total{method="GET",status="401"}' in text
    assert "codemode_gateway_request_seconds_bucket" in text


def test_a_closed_stream_interrupts_the_run(gateway: str) -> None:
    code = "import time\nfor i in range(100):\n    print(i)\n    time.sleep(0.1)\n'end'"
    with SessionClient(gateway + PATH_A, token=ALICE) as client:
        client.create_session()
        started = time.monotonic()
        stream = client.execute_stream(code)
        for item in stream:
            if isinstance(item, Output):
                break
        stream.close()
        after = client.execute("1")
        assert after.value == 1 and time.monotonic() - started < 5


def test_codemode_exec_and_sessions_use_the_configured_gateway(
    gateway: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    """No kubeconfig at all: the gateway and the caller's token are all that is needed."""
    env = {
        **os.environ,
        "CODEMODE_GATEWAY": gateway,
        "CODEMODE_GATEWAY_TOKEN": ALICE,
        "KUBECONFIG": str(tmp_path / "none"),
        "XDG_CACHE_HOME": str(tmp_path),
    }
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "codemode_session",
            "exec",
            "-n",
            "team",
            "a",
            "print('hi'); 40 + 2",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (done.returncode, done.stdout) == (0, "hi\n42\n"), done.stderr
    denied = subprocess.run(
        [sys.executable, "-m", "codemode_session", "exec", "-n", "team", "b", "1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert denied.returncode != 0 and "403" in denied.stderr and "may not" in denied.stderr

    monkeypatch.setenv("CODEMODE_GATEWAY", gateway)
    monkeypatch.setenv("CODEMODE_GATEWAY_TOKEN", ALICE)
    sessions = Sessions(namespace="team")
    with sessions.connect("a") as client:
        assert client.execute("'via ' + 'gateway'").value == "via gateway"
