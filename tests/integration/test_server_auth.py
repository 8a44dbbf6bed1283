"""Auth, startup refusal, sessions, probes and metrics of a real `codemode serve`."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.conftest import RedisServer, free_port
from tests.integration.server_fixture import (
    TOKEN,
    Api,
    ServerProcess,
    base_settings,
    running_server,
    serve_refusals,
)

pytestmark = pytest.mark.redis

INVALID_WORKSPACE_IDS = ["", ".", "..", "../x", "a/b", "a\\b", "a:b", "x" * 129]


@pytest.fixture(scope="module")
def server(redis_server: RedisServer) -> Iterator[ServerProcess]:
    prefix = f"auth{uuid.uuid4().hex[:8]}"
    with running_server(base_settings(redis_server.url, prefix)) as srv:
        yield srv


@pytest.fixture
def anonymous(server: ServerProcess) -> Iterator[httpx.Client]:
    """A client that sends no credentials."""
    with httpx.Client(base_url=server.url, trust_env=False, timeout=30) as client:
        yield client


@pytest.fixture
def api(server: ServerProcess) -> Iterator[Api]:
    with server.client() as client:
        yield Api(server, client)


# ---- auth ----------------------------------------------------------------------------


def test_health_is_open(anonymous: httpx.Client) -> None:
    response = anonymous.get("/health")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "healthy"
    assert "active_sessions" in body and "uptime_seconds" in body


@pytest.mark.parametrize(
    "authorization",
    [
        None,  # no header
        "",  # empty header
        f"Basic {TOKEN}",  # wrong scheme
        f"Token {TOKEN}",
        TOKEN,  # no scheme at all
        "Bearer",  # scheme without token
        "Bearer wrong-token-0123456789abcdef",  # wrong token of the same length
        "Bearer short",  # different length
        f"Bearer {TOKEN}x",  # longer
        f"Bearer {TOKEN[:-1]}",  # prefix of the right token
        f"Bearer {TOKEN.upper()}",
    ],
)
@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/sessions"),
        ("POST", "/execute"),
        ("GET", "/info"),
        ("GET", "/api/workflows"),
        ("GET", "/api/artifacts"),
        ("GET", "/api/tools"),
        ("GET", "/api/deps"),
        ("POST", "/reset"),
    ],
)
def test_bad_credentials_get_401(
    anonymous: httpx.Client, authorization: str | None, method: str, path: str
) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    body = {"code": "1+1"} if path == "/execute" else None
    response = anonymous.request(method, path, headers=headers, json=body)
    assert response.status_code == 401, response.text
    assert response.headers["www-authenticate"] == "Bearer"
    assert "bearer token" in response.json()["detail"]


def test_right_token_is_accepted(anonymous: httpx.Client) -> None:
    response = anonymous.post("/sessions", headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 200
    session_id = response.json()["session_id"]
    executed = anonymous.post(
        "/execute",
        json={"code": "6 * 7"},
        headers={"Authorization": f"Bearer {TOKEN}", "X-Session-ID": session_id},
    )
    assert executed.status_code == 200 and executed.json()["value"] == 42
    # The scheme is case-insensitive (RFC 7235).
    lower = anonymous.get("/api/workflows", headers={"Authorization": f"bearer {TOKEN}"})
    assert lower.status_code == 200


def test_auth_failures_are_counted(anonymous: httpx.Client) -> None:
    anonymous.get("/info")
    assert "codemode_auth_failures_total" in anonymous.get("/metrics").text


def test_worker_does_not_see_the_token(api: Api) -> None:
    session = api.session()
    assert api.value(session, "import os\nos.environ.get('CONTAINER_AUTH_TOKEN')") is None
    env_text = api.value(session, "open('/proc/self/environ', 'rb').read().decode('latin-1')")
    assert TOKEN not in env_text


def test_auth_disabled_client_ids_limits_timeouts_and_expiry(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    """CONTAINER_AUTH_DISABLED=true, ACCEPT_CLIENT_SESSION_IDS, MAX_SESSIONS, DEFAULT_TIMEOUT,
    MAX_EXECUTION_TIME and idle expiry, on one server."""
    settings = {
        "REDIS_URL": redis_server.url,
        "STORAGE_PREFIX": "authoff",
        "CONTAINER_AUTH_DISABLED": "true",
        "WORKER_SPARES": "0",
        "SESSION_IDLE_TIMEOUT": "1",
        "MAX_SESSIONS": "2",
        "ACCEPT_CLIENT_SESSION_IDS": "true",
        "DEFAULT_TIMEOUT": "1",
        "MAX_EXECUTION_TIME": "2",
    }
    with (
        running_server(settings) as server,
        httpx.Client(base_url=server.url, trust_env=False, timeout=30) as client,
    ):
        first, second = (client.post("/sessions") for _ in range(2))
        assert first.status_code == second.status_code == 200
        assert first.json()["idle_timeout_seconds"] == 1
        # MAX_SESSIONS counts workers, and idle sessions give theirs up: a third session
        # is refused only while the other two are running code.
        # Each busy cell touches a file first, so the third comes once both provably run
        # (with no spare worker, starting one takes a while on a loaded machine).
        markers = [tmp_path / f"running-{n}" for n in range(2)]
        with ThreadPoolExecutor(2) as running:
            busy = [
                running.submit(
                    client.post,
                    "/execute",
                    json={
                        "code": f"import pathlib, time\npathlib.Path({str(m)!r}).touch()\n"
                        "time.sleep(1.5)",
                        "timeout": 2,
                    },
                    headers={"X-Session-ID": s.json()["session_id"]},
                )
                for s, m in zip((first, second), markers, strict=True)
            ]
            deadline = time.monotonic() + 30
            while not all(m.exists() for m in markers):
                assert time.monotonic() < deadline, "the two busy cells did not start in 30s"
                assert not any(b.done() for b in busy), [b.result().text for b in busy]
                time.sleep(0.02)
            full = client.post("/execute", json={"code": "1"})
            assert full.status_code == 429 and "session limit" in full.json()["detail"]
            assert all(b.result().status_code == 200 for b in busy)

        # Idle sessions expire: a second without use and the sweeper (every second here)
        # ends them, so the ids are gone and the slots free.
        deadline = time.monotonic() + 30
        while client.get("/health").json()["active_sessions"] != 0:
            assert time.monotonic() < deadline, "idle sessions were not swept within 30s"
            time.sleep(0.1)
        for expired_id in (first.json()["session_id"], second.json()["session_id"]):
            # An id the server issued is never taken up as a client's (it has a '.').
            expired = client.post("/reset", headers={"X-Session-ID": expired_id})
            assert expired.status_code == 400 and expired.json()["detail"] == "Invalid session ID"
            assert "unknown or expired session" in expired.json()["error"]
        assert client.get("/health").json()["active_sessions"] == 0

        # No token needed; py-code-mode's client picks its own ids, accepted when well-formed.
        chosen = uuid.uuid4().hex
        mine = client.post("/execute", json={"code": "'mine'"}, headers={"X-Session-ID": chosen})
        assert mine.status_code == 200, mine.text
        assert mine.json()["value"] == "mine" and mine.json()["session_id"] == chosen
        short = client.post("/execute", json={"code": "1"}, headers={"X-Session-ID": "abc"})
        assert short.status_code == 400 and short.json()["detail"] == "Invalid session ID"

        # DEFAULT_TIMEOUT applies when a run names none; MAX_EXECUTION_TIME caps what it names.
        slow = client.post(
            "/execute",
            json={"code": "import time\ntime.sleep(30)"},
            headers={"X-Session-ID": chosen},
        ).json()
        assert slow["error_type"] == "TimeoutError" and "timeout of 1s" in slow["error"]
        too_long = client.post(
            "/execute", json={"code": "1", "timeout": 3}, headers={"X-Session-ID": chosen}
        )
        assert too_long.status_code == 422
        # Shaped like every other 422 (the OpenAPI document's list of errors).
        [error] = too_long.json()["detail"]
        assert error["loc"] == ["body", "timeout"] and "MAX_EXECUTION_TIME=2" in error["msg"]


REFUSALS: dict[str, tuple[dict[str, str], str]] = {
    "no-auth": (
        {},
        "refusing to start without auth: set CONTAINER_AUTH_TOKEN, or CONTAINER_AUTH_DISABLED=true",
    ),
    "auth-disabled-false": ({"CONTAINER_AUTH_DISABLED": "false"}, "refusing to start without auth"),
    "empty-token": ({"CONTAINER_AUTH_TOKEN": ""}, "refusing to start without auth"),
    "bad-workspace": (
        {"CONTAINER_AUTH_TOKEN": TOKEN, "WORKSPACE_ID": "../x"},
        "invalid workspace_id '../x'",
    ),
    "bad-timeout": (
        {"CONTAINER_AUTH_TOKEN": TOKEN, "DEFAULT_TIMEOUT": "soon"},
        "DEFAULT_TIMEOUT='soon' is not a number",
    ),
    "bad-redis-url": (
        {"CONTAINER_AUTH_TOKEN": TOKEN, "REDIS_URL": "http://127.0.0.1:1"},
        "invalid Redis URL scheme 'http'",
    ),
    "bad-prefix": (
        {"CONTAINER_AUTH_TOKEN": TOKEN, "STORAGE_PREFIX": "bad prefix"},
        "invalid prefix 'bad prefix'",
    ),
    "no-storage": (
        {"CONTAINER_AUTH_TOKEN": TOKEN, "REDIS_URL": ""},
        "no storage configured: set REDIS_URL (or STORAGE_DIR)",
    ),
}


@pytest.fixture(scope="module")
def refusals(redis_server: RedisServer) -> dict[str, tuple[int, str]]:
    """Start `codemode serve` once per bad setting, all at once; (exit code, stderr) each."""
    return serve_refusals(
        {
            name: {"REDIS_URL": redis_server.url, **settings}
            for name, (settings, _) in REFUSALS.items()
        }
    )


@pytest.mark.parametrize("case", sorted(REFUSALS))
def test_server_refuses_to_start(refusals: dict[str, tuple[int, str]], case: str) -> None:
    returncode, stderr = refusals[case]
    assert returncode == 2, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("codemode serve: ")
    assert REFUSALS[case][1] in lines[0]


# ---- sessions ------------------------------------------------------------------------


def test_sessions_are_issued_by_the_server(api: Api) -> None:
    ids = {api.session() for _ in range(3)}
    assert len(ids) == 3
    assert all(len(i) >= 32 for i in ids)
    response = api.http.post("/sessions", json={})
    assert response.status_code == 200
    assert response.json()["workspace_id"] is None


def test_execute_without_a_session_id_starts_one(api: Api) -> None:
    first = api.http.post("/execute", json={"code": "value = 7\nvalue"})
    assert first.status_code == 200 and first.json()["value"] == 7
    issued = first.json()["session_id"]
    assert len(issued) >= 32
    assert api.value(issued, "value * 6") == 42
    other = api.http.post("/execute", json={"code": "'value' in globals()"}).json()
    assert other["session_id"] != issued and other["value"] is False


def test_unknown_session_id_is_400_invalid_session_id(api: Api) -> None:
    """An id that is neither a live session nor one a client may choose (client-chosen
    ids are on by default: 16-128 of A-Z a-z 0-9 _ -) names no session."""
    for method, path, body in [
        ("POST", "/execute", {"code": "1"}),
        ("POST", "/reset", None),
        ("GET", "/info", None),
        ("GET", "/api/workflows", None),
        ("DELETE", "/sessions", None),
    ]:
        response = api.http.request(
            method, path, json=body, headers={"X-Session-ID": "no such session 00000"}
        )
        assert response.status_code == 400, (path, response.text)
        assert response.json()["detail"] == "Invalid session ID"
        assert "unknown or expired session" in response.json()["error"]


def test_sessions_cannot_be_listed(api: Api) -> None:
    session = api.session()
    listing = api.http.get("/sessions")
    assert listing.status_code in (404, 405)
    assert session not in listing.text
    for path in ("/health", "/info", "/metrics"):
        assert session not in api.http.get(path).text


def test_session_can_be_ended(api: Api) -> None:
    session = api.session()
    ended = api.http.delete("/sessions", headers={"X-Session-ID": session})
    assert ended.status_code == 200 and ended.json()["status"] == "ended"
    response = api.http.post("/execute", json={"code": "1"}, headers={"X-Session-ID": session})
    assert response.status_code == 400 and response.json()["detail"] == "Invalid session ID"


@pytest.mark.parametrize("workspace_id", INVALID_WORKSPACE_IDS)
def test_invalid_workspace_ids_are_rejected(api: Api, workspace_id: str) -> None:
    response = api.http.post("/sessions", json={"workspace_id": workspace_id})
    assert response.status_code == 400, response.text
    assert "invalid workspace_id" in response.json()["detail"]


@pytest.mark.parametrize("body", [{"workspace_id": 5}, {"workspace": "a"}, [1]])
def test_malformed_session_requests_are_422(api: Api, body: object) -> None:
    assert api.http.post("/sessions", json=body).status_code == 422
    bad_json = api.http.post(
        "/sessions", content=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert bad_json.status_code == 422


def test_pinned_workspace(redis_server: RedisServer) -> None:
    settings = base_settings(
        redis_server.url, f"pin{uuid.uuid4().hex[:8]}", WORKSPACE_ID="team-a", WORKER_SPARES="0"
    )
    with running_server(settings) as server, server.client() as client:
        assert client.get("/health").json()["workspace_id"] == "team-a"
        other = client.post("/sessions", json={"workspace_id": "team-b"})
        assert other.status_code == 403
        assert "team-a" in other.json()["detail"]
        same = client.post("/sessions", json={"workspace_id": "team-a"})
        assert same.status_code == 200 and same.json()["workspace_id"] == "team-a"
        default = client.post("/sessions")
        assert default.status_code == 200 and default.json()["workspace_id"] == "team-a"
        info = client.get("/info", headers={"X-Session-ID": default.json()["session_id"]})
        assert info.json()["workspace_id"] == "team-a"
        invalid = client.post("/sessions", json={"workspace_id": "../team-a"})
        assert invalid.status_code == 400


# ---- probes, metrics, OpenAPI -------------------------------------------------------------


def test_ready_with_redis_up(anonymous: httpx.Client) -> None:
    response = anonymous.get("/ready")
    assert response.status_code == 200 and response.json() == {"ready": True}


def test_ready_is_503_when_redis_is_down() -> None:
    settings = {
        "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",
        "STORAGE_PREFIX": "down",
        "CONTAINER_AUTH_TOKEN": TOKEN,
        "WORKER_SPARES": "0",
    }
    with running_server(settings) as server, server.client(allow_5xx=True) as client:
        response = client.get("/ready")
        assert response.status_code == 503
        assert response.json()["ready"] is False and response.json()["reason"]
        assert client.get("/health").status_code == 200
        # A request that needs storage says so with a 503, not a crash.
        listing = client.get("/api/workflows")
        assert listing.status_code == 503, listing.text
        assert "detail" in listing.json()
        # Code that does not touch storage still runs.
        session = client.post("/sessions").json()["session_id"]
        result = client.post(
            "/execute", json={"code": "2 + 3"}, headers={"X-Session-ID": session}
        ).json()
        assert result["value"] == 5
        failed = client.post(
            "/execute", json={"code": "artifacts.list()"}, headers={"X-Session-ID": session}
        ).json()
        assert failed["error_type"] == "StorageUnavailableError", failed
        assert server.alive


def test_metrics_count_executions(api: Api) -> None:
    session = api.session()
    api.value(session, "1 + 1")
    api.execute(session, "1 / 0")
    text = api.http.get("/metrics").text
    assert "# TYPE codemode_executions_total counter" in text
    assert 'codemode_executions_total{outcome="ok"}' in text
    assert 'codemode_executions_total{outcome="error"}' in text
    assert "codemode_sessions_active" in text
    assert "codemode_execution_seconds_bucket" in text


def test_openapi_document(anonymous: httpx.Client) -> None:
    response = anonymous.get("/openapi.json")
    assert response.status_code == 200
    paths = response.json()["paths"]
    for path in (
        "/health",
        "/ready",
        "/metrics",
        "/sessions",
        "/execute",
        "/info",
        "/reset",
        "/api/tools",
        "/api/tools/search",
        "/api/workflows",
        "/api/workflows/search",
        "/api/workflows/{name}",
        "/api/artifacts",
        "/api/artifacts/{name}",
        "/api/deps",
        "/api/deps/add",
        "/api/deps/remove",
        "/api/deps/sync",
    ):
        assert path in paths, path
    execute = paths["/execute"]["post"]
    assert "requestBody" in execute
