"""The OpenAPI document lists every answer the server gives (issue 10, case 16).

Before, /openapi.json showed only 200 and 422: not the 400/401/403/404/409/413/429
(and 503) the server answers; `{"name": ""}` was valid by the schema but refused;
and the 422 for a too long `timeout` had a string `detail` where the document
says a list. Here each of those answers is produced for real and checked: its
status is documented for its operation, and its body matches the documented schema
(schemathesis' `validate_response`).
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
import redis
import schemathesis

from tests.conftest import RedisServer, free_port
from tests.integration.server_fixture import ServerProcess, base_settings, running_server

pytestmark = pytest.mark.redis

WS = "ws"
SRC = "async def run():\n    return 1\n"
TOO_BIG = 4096


@pytest.fixture(scope="module")
def prefix() -> str:
    return f"doc{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def server(redis_server: RedisServer, prefix: str) -> Iterator[ServerProcess]:
    settings = base_settings(
        redis_server.url,
        prefix,
        WORKSPACE_ID=WS,
        MAX_SESSIONS="1",
        MAX_REQUEST_BYTES=str(TOO_BIG),
        MAX_CODE_BYTES="100",
        STORAGE_MAX_ARTIFACT_BYTES="10",
        MAX_EXECUTION_TIME="5",
        DEFAULT_TIMEOUT="5",
    )
    with running_server(settings) as srv:
        yield srv


@pytest.fixture(scope="module")
def document(server: ServerProcess) -> dict[str, Any]:
    doc: dict[str, Any] = httpx.get(f"{server.url}/openapi.json", trust_env=False).json()
    return doc


@pytest.fixture(scope="module")
def http(server: ServerProcess) -> Iterator[httpx.Client]:
    with server.client() as client:  # any 5xx fails the test
        yield client


def conforms(document: dict[str, Any], path: str, method: str, response: httpx.Response) -> None:
    """`response` is documented for the operation, and its body has the documented shape."""
    documented = document["paths"][path][method.lower()]["responses"]
    assert str(response.status_code) in documented, (
        f"{method} {path} answered {response.status_code}, the document lists {sorted(documented)}"
        f": {response.text}"
    )
    operation = schemathesis.openapi.from_dict(document)[path][method.upper()]
    operation.validate_response(response)  # raises, saying what differs


def while_running(server: ServerProcess, session: str, http: httpx.Client) -> httpx.Response:
    """POST /sessions while the one worker (MAX_SESSIONS=1) runs the session's code: 429."""
    with ThreadPoolExecutor(1) as running, server.client() as other:
        busy = running.submit(
            other.post,
            "/execute",
            json={"code": "import time\ntime.sleep(2)"},
            headers={"X-Session-ID": session},
        )
        deadline = time.monotonic() + 20
        while (answer := http.post("/sessions", json={})).status_code != 429:
            assert time.monotonic() < deadline, answer.text
            time.sleep(0.05)
        assert busy.result().status_code == 200
    return answer


def test_every_error_the_server_gives_is_documented(
    server: ServerProcess,
    http: httpx.Client,
    document: dict[str, Any],
    prefix: str,
    redis_server: RedisServer,
) -> None:
    store = redis.Redis.from_url(redis_server.url)
    store.hset(f"{prefix}:ws:{WS}:workflows:__owners__", "owned", "some-library")
    store.close()
    session = http.post("/sessions", json={}).json()["session_id"]
    unknown = {"X-Session-ID": "no-such-session"}
    too_long = http.post(
        "/execute", json={"code": "1", "timeout": 6}, headers={"X-Session-ID": session}
    )
    cases: list[tuple[int, str, str, httpx.Response]] = [
        (
            400,
            "/api/workflows",
            "POST",
            http.post("/api/workflows", json={"name": "", "source": SRC}),
        ),
        (400, "/api/artifacts/{name}", "GET", http.get("/api/artifacts/.hidden")),
        (400, "/sessions", "POST", http.post("/sessions", json={"workspace_id": "../x"})),
        (401, "/api/workflows", "GET", httpx.get(f"{server.url}/api/workflows", trust_env=False)),
        (403, "/sessions", "POST", http.post("/sessions", json={"workspace_id": "other"})),
        (403, "/api/deps/add", "POST", http.post("/api/deps/add", json={"package": "requests"})),
        (
            400,
            "/api/workflows/{name}",
            "GET",
            http.get("/api/workflows/nothing_here", headers=unknown),
        ),
        (400, "/sessions", "DELETE", http.delete("/sessions", headers=unknown)),
        (400, "/info", "GET", http.get("/info", headers=unknown)),
        (400, "/execute", "POST", http.post("/execute", json={"code": "1"}, headers=unknown)),
        (404, "/api/artifacts/{name}", "GET", http.get("/api/artifacts/nothing_here.txt")),
        (
            409,
            "/api/workflows",
            "POST",
            http.post("/api/workflows", json={"name": "owned", "source": SRC}),
        ),
        (409, "/api/workflows/{name}", "DELETE", http.delete("/api/workflows/owned")),
        (
            413,
            "/api/artifacts",
            "POST",
            http.post("/api/artifacts", json={"name": "big.txt", "data": "x" * TOO_BIG}),
        ),
        (
            413,
            "/api/artifacts",
            "POST",
            http.post("/api/artifacts", json={"name": "quota.txt", "data": "more than ten bytes"}),
        ),
        (
            413,
            "/execute",
            "POST",
            http.post("/execute", json={"code": "#" * 200}, headers={"X-Session-ID": session}),
        ),
        (422, "/execute", "POST", too_long),
        (422, "/execute", "POST", http.post("/execute", json={"code": 1})),
        (422, "/sessions", "DELETE", http.delete("/sessions")),
        (429, "/sessions", "POST", while_running(server, session, http)),
    ]
    for status, path, method, response in cases:
        assert response.status_code == status, (path, method, response.text)
        conforms(document, path, method, response)
    [error] = too_long.json()["detail"]  # a list like every 422, no longer a string
    assert error["loc"] == ["body", "timeout"] and "MAX_EXECUTION_TIME=5" in error["msg"]


def test_the_schema_says_what_is_refused(http: httpx.Client, document: dict[str, Any]) -> None:
    schemas = document["components"]["schemas"]
    name = schemas["WorkflowCreate"]["properties"]["name"]
    assert name["minLength"] == 1 and not re.search(name["pattern"], "")
    assert re.search(name["pattern"], "fetch_page") and not re.search(name["pattern"], "a-b")
    artifact = schemas["ArtifactCreate"]["properties"]["name"]
    assert not re.search(artifact["pattern"], "") and re.search(artifact["pattern"], "a/b.txt")
    assert not re.search(artifact["pattern"], "a/../b")
    package = schemas["PackageRequest"]["properties"]["package"]
    assert re.search(package["pattern"], " pandas[excel]>=2,<3 ")
    assert not re.search(package["pattern"], "pkg; rm -rf /")
    timeout = schemas["ExecuteRequest"]["properties"]["timeout"]["anyOf"][0]
    assert timeout == {"type": "number", "exclusiveMinimum": 0.0, "maximum": 5.0}
    workspace = schemas["CreateSessionRequest"]["properties"]["workspace_id"]
    assert not re.search(workspace["pattern"], "") and not re.search(workspace["pattern"], "../x")
    # What the document refuses, the server refuses.
    for body in (
        {"name": "", "source": SRC},
        {"name": "a-b", "source": SRC},
        {"name": "ok", "source": "  "},
    ):
        assert http.post("/api/workflows", json=body).status_code == 400


def test_every_authenticated_operation_documents_its_errors(document: dict[str, Any]) -> None:
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            statuses = set(operation["responses"])
            if path in ("/health", "/ready", "/metrics"):
                assert "401" not in statuses
                continue
            assert {"400", "401", "413", "422"} <= statuses, (method, path, statuses)
            if any(p["name"] == "X-Session-ID" for p in operation.get("parameters", [])):
                # an unknown session's answer: 400 with detail "Invalid session ID"
                assert "Invalid session ID" in operation["responses"]["400"]["description"]
            for status in statuses - {"422"}:
                if status.startswith("4"):
                    ref = operation["responses"][status]["content"]["application/json"]["schema"]
                    model = "InvalidRequestResponse" if status == "400" else "ErrorResponse"
                    assert ref == {"$ref": f"#/components/schemas/{model}"}, (path, status)


def test_storage_outage_is_a_documented_503(redis_server: RedisServer) -> None:
    settings = base_settings(f"redis://127.0.0.1:{free_port()}/0", "down")
    with running_server(settings) as server, server.client(allow_5xx=True) as http:
        document = http.get("/openapi.json").json()
        for path, response in [
            ("/ready", http.get("/ready")),
            ("/api/workflows", http.get("/api/workflows")),
        ]:
            assert response.status_code == 503, response.text
            conforms(document, path, "GET", response)
