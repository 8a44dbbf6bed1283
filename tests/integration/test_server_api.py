"""The /api/* endpoints (py-code-mode's SessionServer API) and their 4xx answers.

Every client here fails the test on any 5xx answer (see server_fixture).
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterator

import pytest
import redis

from tests.conftest import RedisServer
from tests.integration.server_fixture import Api, ServerProcess, base_settings, running_server

pytestmark = pytest.mark.redis

WORKSPACE = "wsapi"
SOURCE = '''"""Add two numbers."""


async def run(a: int, b: int = 1) -> int:
    return a + b
'''
TOOL = """
name: say
description: Echo words back
command: echo
schema:
  positional:
    - name: words
recipes:
  hello:
    description: say hello
    preset:
      words: hello
"""


@pytest.fixture(scope="module")
def prefix() -> str:
    return f"api{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def server(
    redis_server: RedisServer, prefix: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    tools_dir = tmp_path_factory.mktemp("tools")
    (tools_dir / "say.yaml").write_text(TOOL)
    (tools_dir / "broken.yaml").write_text("name: [")
    settings = base_settings(
        redis_server.url, prefix, WORKSPACE_ID=WORKSPACE, TOOLS_PATH=str(tools_dir)
    )
    with running_server(settings) as srv:
        yield srv


@pytest.fixture(scope="module")
def api(server: ServerProcess) -> Iterator[Api]:
    with server.client() as client:
        yield Api(server, client)


def bad_json(api: Api, path: str) -> int:
    response = api.http.post(path, content=b"{oops", headers={"Content-Type": "application/json"})
    return response.status_code


# ---- tools --------------------------------------------------------------------------------


def test_tools_list_and_search(api: Api) -> None:
    tools = api.http.get("/api/tools")
    assert tools.status_code == 200
    assert [t["name"] for t in tools.json()] == ["say"]  # broken YAML is skipped
    assert tools.json()[0]["recipes"] == [
        {"name": "hello", "description": "say hello", "params": None}
    ]
    found = api.http.get("/api/tools/search", params={"query": "echo words"})
    assert [t["name"] for t in found.json()] == ["say"]
    assert api.http.get("/api/tools/search", params={"query": "zzz"}).json() == []
    assert api.http.get("/api/tools/search", params={"query": "say", "limit": 0}).json() == []
    assert api.http.get("/api/tools/search").status_code == 422
    assert (
        api.http.get("/api/tools/search", params={"query": "x", "limit": "many"}).status_code == 422
    )


# ---- workflows ----------------------------------------------------------------------------


def test_workflow_endpoints(api: Api, rdb: redis.Redis, prefix: str) -> None:
    created = api.http.post("/api/workflows", json={"name": "add", "source": SOURCE})
    assert created.status_code == 200, created.text
    assert created.json()["description"] == "Add two numbers."
    assert [p["name"] for p in created.json()["parameters"]] == ["a", "b"]
    assert rdb.hexists(f"{prefix}:ws:{WORKSPACE}:workflows:__workflows__", "add")

    listed = api.http.get("/api/workflows").json()
    assert [w["name"] for w in listed] == ["add"] and "source" not in listed[0]
    got = api.http.get("/api/workflows/add").json()
    assert got["source"] == SOURCE
    hits = api.http.get("/api/workflows/search", params={"query": "numbers"}).json()
    assert [w["name"] for w in hits] == ["add"]
    assert api.http.get("/api/workflows/search", params={"query": "qqq"}).json() == []

    # Code in a session sees what the API created.
    session = api.session()
    assert api.value(session, "workflows.add(a=40, b=2)") == 42

    described = api.http.post(
        "/api/workflows", json={"name": "add", "source": SOURCE, "description": "custom words"}
    )
    assert described.json()["description"] == "custom words"
    deleted = api.http.delete("/api/workflows/add")
    assert deleted.status_code == 200 and deleted.json() is True
    # Missing: null and false, as py-code-mode's server answers (its client reads them).
    gone = api.http.get("/api/workflows/add")
    assert gone.status_code == 200 and gone.json() is None
    again = api.http.delete("/api/workflows/add")
    assert again.status_code == 200 and again.json() is False


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({"name": "list", "source": SOURCE}, 400, "reserved"),
        ({"name": "my-flow", "source": SOURCE}, 400, "Python identifier"),
        ({"name": "x", "source": "def run():\n    pass\n"}, 400, "async def run"),
        ({"name": "x", "source": "async def run(:"}, 400, "syntax error"),
        ({"name": "x", "source": ""}, 400, "source is empty"),
        ({"name": "x"}, 422, "source"),
        ({"name": "x", "source": SOURCE, "owner": "me"}, 422, "owner"),
        ({"name": 5, "source": SOURCE}, 422, "name"),
    ],
)
def test_workflow_create_errors(
    api: Api, body: dict[str, object], status: int, message: str
) -> None:
    response = api.http.post("/api/workflows", json=body)
    assert response.status_code == status, response.text
    assert message in json.dumps(response.json()["detail"])


def test_workflow_bad_json_and_names(api: Api) -> None:
    assert bad_json(api, "/api/workflows") == 422
    assert api.http.get("/api/workflows/not-valid").status_code == 400
    assert api.http.get("/api/workflows/search").status_code == 422
    assert api.http.delete("/api/workflows/class").status_code == 400
    assert api.http.get("/api/workflows/nothing_here").json() is None


def test_library_owned_workflow_is_409(api: Api, rdb: redis.Redis, prefix: str) -> None:
    assert (
        api.http.post("/api/workflows", json={"name": "owned", "source": SOURCE}).status_code == 200
    )
    rdb.hset(f"{prefix}:ws:{WORKSPACE}:workflows:__owners__", "owned", "shared-lib")
    overwrite = api.http.post("/api/workflows", json={"name": "owned", "source": SOURCE})
    assert overwrite.status_code == 409
    assert "shared-lib" in overwrite.json()["detail"]
    delete = api.http.delete("/api/workflows/owned")
    assert delete.status_code == 409
    assert api.http.get("/api/workflows/owned").status_code == 200


# ---- artifacts ----------------------------------------------------------------------------


def test_artifact_endpoints(api: Api, rdb: redis.Redis, prefix: str) -> None:
    as_json = api.http.post(
        "/api/artifacts",
        json={
            "name": "data/result.json",
            "data": {"a": [1, 2]},
            "description": "json data",
            "metadata": {"run": 7},
        },
    )
    assert as_json.status_code == 200, as_json.text
    assert as_json.json()["metadata"] == {"run": 7, "_data_type": "json"}
    assert (
        api.http.post("/api/artifacts", json={"name": "note.txt", "data": "plain"}).status_code
        == 200
    )
    raw = b"\x00\xffbinary"
    as_bytes = api.http.post(
        "/api/artifacts", json={"name": "blob.bin", "data_base64": base64.b64encode(raw).decode()}
    )
    assert as_bytes.status_code == 200 and as_bytes.json()["data_type"] == "bytes"

    listed = api.http.get("/api/artifacts").json()
    assert [a["name"] for a in listed] == ["blob.bin", "data/result.json", "note.txt"]
    assert api.http.get("/api/artifacts/data/result.json").json() == {"a": [1, 2]}
    assert api.http.get("/api/artifacts/note.txt").json() == "plain"
    blob = api.http.get("/api/artifacts/blob.bin")
    assert blob.content == raw and blob.headers["content-type"] == "application/octet-stream"
    assert rdb.get(f"{prefix}:ws:{WORKSPACE}:artifacts:blob.bin") == raw

    # Code sees what the API saved, and the other way round.
    session = api.session()
    assert api.value(session, "artifacts.load('data/result.json')") == {"a": [1, 2]}
    api.value(session, "artifacts.save('from-code.txt', 'written by code')")
    assert api.http.get("/api/artifacts/from-code.txt").json() == "written by code"

    deleted = api.http.delete("/api/artifacts/blob.bin")
    assert deleted.status_code == 200 and deleted.json() == {"deleted": "blob.bin"}
    assert api.http.get("/api/artifacts/blob.bin").status_code == 404
    assert api.http.delete("/api/artifacts/blob.bin").status_code == 404


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"name": ".hidden", "data": "x"}, 400),
        ({"name": "a b", "data": "x"}, 400),
        ({"name": "__index__", "data": "x"}, 400),
        ({"name": "a/../b", "data": "x"}, 400),
        ({"name": "ok.bin", "data_base64": "not base64!!"}, 400),
        ({"data": "x"}, 422),
        ({"name": "ok.txt", "data": "x", "colour": "red"}, 422),
        ({"name": "ok.txt", "data": "x", "metadata": [1]}, 422),
    ],
)
def test_artifact_create_errors(api: Api, body: dict[str, object], status: int) -> None:
    response = api.http.post("/api/artifacts", json=body)
    assert response.status_code == status, response.text
    assert response.json()["detail"]


def test_artifact_lookup_errors(api: Api) -> None:
    assert bad_json(api, "/api/artifacts") == 422
    assert api.http.get("/api/artifacts/never-saved").status_code == 404
    assert api.http.get("/api/artifacts/.hidden").status_code == 400
    assert api.http.get("/api/artifacts/a%20b").status_code == 400
    assert api.http.delete("/api/artifacts/-rf").status_code == 400
    assert api.http.get("/api/artifacts/x%3Ay").status_code == 400


# ---- deps (off on this server) ----------------------------------------------------------------


def test_deps_endpoints_refused_when_off(api: Api) -> None:
    assert api.http.get("/api/deps").json() == []
    for path, body in [
        ("/api/deps/add", {"package": "requests"}),
        ("/api/deps/remove", {"package": "requests"}),
        ("/api/deps/sync", None),
    ]:
        response = api.http.post(path, json=body)
        assert response.status_code == 403, (path, response.text)
        assert "ALLOW_RUNTIME_DEPS" in response.json()["detail"]
    assert api.http.post("/api/deps/add", json={"pkg": "requests"}).status_code == 422
    assert bad_json(api, "/api/deps/add") == 422


# ---- sessions, info and the pinned workspace --------------------------------------------------


def test_info(api: Api) -> None:
    api.http.post("/api/workflows", json={"name": "info_flow", "source": SOURCE})
    info = api.http.get("/info").json()
    assert info["workspace_id"] == WORKSPACE
    assert {"name": "say", "description": "Echo words back"} in info["tools"]
    assert "info_flow" in [w["name"] for w in info["workflows"]]
    assert info["skills"] == info["workflows"]
    assert WORKSPACE in info["artifacts_path"]


def test_pinned_server_refuses_other_workspaces(api: Api) -> None:
    assert api.http.post("/sessions", json={"workspace_id": "someone-else"}).status_code == 403
    created = api.http.post("/sessions", json={"workspace_id": WORKSPACE})
    assert created.status_code == 200 and created.json()["workspace_id"] == WORKSPACE


def test_unknown_routes_and_methods(api: Api) -> None:
    assert api.http.get("/api/nothing").status_code == 404
    assert api.http.put("/api/workflows").status_code == 405
    assert api.http.get("/execute").status_code == 405


@pytest.mark.parametrize(
    ("path", "body", "status"),
    [
        ("/execute", {"code": "'\udcff'"}, 400),
        ("/execute", {"code": "1", "timeout": "\udcff"}, 422),
        ("/sessions", {"workspace_id": "\udcff"}, 400),
        ("/api/workflows", {"name": "w", "source": "async def run():\n    return '\udcff'\n"}, 400),
        ("/api/workflows", {"name": "\udcff", "source": "x"}, 400),
        ("/api/artifacts", {"name": "a.txt", "data": "\udcff"}, 400),
        ("/api/artifacts", {"name": "a.txt", "data": "x", "metadata": {"k": "\udcff"}}, 200),
        ("/api/deps/add", {"package": "\udcff"}, 403),
    ],
)
def test_text_that_is_not_unicode_is_a_4xx(
    api: Api, path: str, body: dict[str, object], status: int
) -> None:
    """JSON can carry lone surrogates ("\\udcff") that UTF-8 cannot: a 4xx, not a crash."""
    session = api.session()
    response = api.http.post(
        path,
        content=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", "X-Session-ID": session},
    )
    assert response.status_code == status, response.text
    if status >= 400:
        assert response.json()["detail"]


def test_stored_text_that_is_not_unicode_is_served(api: Api) -> None:
    session = api.session()
    api.value(
        session,
        "artifacts.save('odd.txt', 'x', description='d\\udcff', "
        "metadata={'k': 'v\\udcff'})\n"
        "workflows.create('odd_flow', 'async def run():\\n    return 1\\n', "
        "description='w\\udcff')",
    )
    listed = api.http.get("/api/artifacts")
    assert listed.status_code == 200
    odd = next(a for a in listed.json() if a["name"] == "odd.txt")
    assert odd["description"] == "d\udcff" and odd["metadata"]["k"] == "v\udcff"
    flows = api.http.get("/api/workflows")
    assert flows.status_code == 200
    assert {"odd_flow"} <= {w["name"] for w in flows.json()}
    assert api.http.get("/info").status_code == 200
