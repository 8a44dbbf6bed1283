"""Hostile inputs a reviewer found answered with 5xx, wrong objects or lost state.

Each test pins what a user sees now: a 4xx with a `detail` that says what is wrong, the
value they stored, or a session that keeps its variables. Every client here fails the
test on any 5xx answer (see server_fixture).
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import redis
from codemode_session.client import AsyncSessionClient, SessionClient, SessionError
from codemode_session.errors import ValidationError
from codemode_session.server.sessions import SessionManager
from codemode_session.tools import parse_tool_yaml, tool_specs

from tests.conftest import RedisServer
from tests.integration.server_fixture import (
    TOKEN,
    Api,
    ServerProcess,
    base_settings,
    running_server,
)

pytestmark = pytest.mark.redis


@pytest.fixture(scope="module")
def prefix() -> str:
    return f"hostile{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def redis_srv(redis_server: RedisServer, prefix: str) -> Iterator[ServerProcess]:
    with running_server(base_settings(redis_server.url, prefix)) as srv:
        yield srv


@pytest.fixture(scope="module")
def file_srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    settings = {
        k: v
        for k, v in base_settings("", "unused").items()
        if k not in ("REDIS_URL", "STORAGE_PREFIX")
    }
    settings["STORAGE_DIR"] = str(tmp_path_factory.mktemp("files"))
    with running_server(settings) as srv:
        yield srv


@pytest.fixture(scope="module")
def rapi(redis_srv: ServerProcess) -> Iterator[Api]:
    with redis_srv.client() as client:
        yield Api(redis_srv, client)


@pytest.fixture(scope="module")
def fapi(file_srv: ServerProcess) -> Iterator[Api]:
    with file_srv.client() as client:
        yield Api(file_srv, client)


def raw_post(api: Api, path: str, body: str, session: str | None = None) -> httpx.Response:
    headers = {"Content-Type": "application/json"}
    if session:
        headers["X-Session-ID"] = session
    return api.http.post(path, content=body.encode(), headers=headers)


def detail_text(response: httpx.Response) -> str:
    return json.dumps(response.json()["detail"])


# ---- timeouts ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("timeout", "message"),
    [
        ("NaN", "finite number"),  # was 500: the 422 quoting NaN was not valid JSON
        ("-Infinity", "finite number"),  # was 500
        ("Infinity", "finite number"),  # was a 422 saying "timeout infs exceeds ..."
        ('"5"', "valid number"),  # was accepted as 5 seconds
        ("true", "valid number"),  # was accepted as 1 second
    ],
)
def test_timeouts_that_are_not_finite_numbers_are_422(
    rapi: Api, timeout: str, message: str
) -> None:
    response = raw_post(rapi, "/execute", f'{{"code": "1", "timeout": {timeout}}}')
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert detail[0]["loc"] == ["body", "timeout"]
    assert message in detail[0]["msg"]


def test_numeric_timeouts_still_work(rapi: Api) -> None:
    session = rapi.session()
    assert rapi.value(session, "2 + 2", timeout=5) == 4
    assert rapi.value(session, "3", timeout=5.5) == 3


# ---- artifacts: NaN, Infinity and odd metadata ------------------------------------------------


@pytest.mark.parametrize("api_name", ["rapi", "fapi"])
def test_non_finite_artifact_data_and_metadata_are_400(
    api_name: str, request: pytest.FixtureRequest
) -> None:
    api: Api = request.getfixturevalue(api_name)
    data = raw_post(api, "/api/artifacts", '{"name": "nan.json", "data": NaN}')
    assert data.status_code == 400, data.text
    assert "JSON" in data.json()["detail"]
    meta = raw_post(
        api, "/api/artifacts", '{"name": "inf.txt", "data": "x", "metadata": {"a": Infinity}}'
    )
    assert meta.status_code == 400, meta.text
    assert "metadata" in meta.json()["detail"]
    # Before, the NaN was stored and every later GET of it answered 500.
    assert api.http.get("/api/artifacts/nan.json").status_code == 404
    assert api.http.get("/api/artifacts").status_code == 200


def test_non_json_artifacts_from_code_are_refused_clearly(rapi: Api) -> None:
    session = rapi.session()
    nan = rapi.execute(session, "artifacts.save('code-nan.json', float('nan'))")
    assert nan["error_type"] == "ValidationError"
    assert "JSON-serializable" in nan["error"]
    dated = rapi.execute(
        session,
        "import datetime\n"
        "artifacts.save('dated.txt', 'x', "
        "metadata={'when': datetime.datetime.now()})",
    )
    assert dated["error_type"] == "ValidationError"
    assert "metadata must be JSON-serializable" in dated["error"]
    # A storage error in code is not chained to the bridge's internal RuntimeError.
    assert "no running event loop" not in dated["error"]
    described = rapi.execute(session, "artifacts.save('d.txt', 'x', description=5)")
    assert described["error_type"] == "ValidationError"
    assert "description must be a str" in described["error"]
    assert rapi.http.get("/api/artifacts/code-nan.json").status_code == 404
    # Odd but valid metadata round-trips.
    rapi.value(
        session,
        "artifacts.save('meta.txt', 'x', metadata={'n': None, 'l': [1, {'a': 2}],"
        " 'f': 1.5, 'b': True})",
    )
    listed = {a["name"]: a for a in rapi.http.get("/api/artifacts").json()}
    assert listed["meta.txt"]["metadata"] == {
        "n": None,
        "l": [1, {"a": 2}],
        "f": 1.5,
        "b": True,
        "_data_type": "text",
    }


# ---- FileStorage: the index file and file/folder clashes ---------------------------------------


def test_file_storage_index_name_is_reserved(fapi: Api) -> None:
    assert (
        fapi.http.post("/api/artifacts", json={"name": "kept.txt", "data": "kept"}).status_code
        == 200
    )
    # Before: this overwrote the artifacts index, and every artifact call answered 500.
    response = fapi.http.post("/api/artifacts", json={"name": "__index__.json", "data": "x"})
    assert response.status_code == 400
    assert "reserved" in response.json()["detail"]
    assert fapi.http.get("/api/artifacts/__index__.json").status_code == 400
    assert fapi.http.delete("/api/artifacts/__index__.json").status_code == 400
    session = fapi.session()
    from_code = fapi.execute(session, "artifacts.save('__index__.json', 'x')")
    assert from_code["error_type"] == "ValidationError" and "reserved" in from_code["error"]
    assert fapi.http.get("/api/artifacts/kept.txt").json() == "kept"
    assert "kept.txt" in [a["name"] for a in fapi.http.get("/api/artifacts").json()]


def test_file_storage_file_and_folder_clashes_are_409(fapi: Api) -> None:
    assert fapi.http.post("/api/artifacts", json={"name": "leaf", "data": "x"}).status_code == 200
    under_file = fapi.http.post("/api/artifacts", json={"name": "leaf/child", "data": "x"})
    assert under_file.status_code == 409, under_file.text  # was 500
    assert "'leaf/child'" in under_file.json()["detail"]

    assert fapi.http.post("/api/artifacts", json={"name": "tree/a", "data": "x"}).status_code == 200
    over_folder = fapi.http.post("/api/artifacts", json={"name": "tree", "data": "x"})
    assert over_folder.status_code == 409, over_folder.text  # was 500
    assert "folder" in over_folder.json()["detail"]
    # Deleting the last artifact in a folder frees the folder's name.
    assert fapi.http.delete("/api/artifacts/tree/a").status_code == 200
    assert (
        fapi.http.post("/api/artifacts", json={"name": "tree", "data": "now a file"}).status_code
        == 200
    )
    assert fapi.http.get("/api/artifacts/tree").json() == "now a file"


def test_code_cannot_escape_the_file_storage_directory(fapi: Api) -> None:
    session = fapi.session()
    for name in ["../../etc/x", "/etc/x", "a/../../x", "..", "a\\..\\x"]:
        result = fapi.execute(session, f"artifacts.save({name!r}, 'x')")
        assert result["error_type"] == "ValidationError", (name, result)
        assert "invalid artifact name" in result["error"]


# ---- results too big for JSON ---------------------------------------------------------------


def test_huge_int_result_keeps_the_session(rapi: Api) -> None:
    session = rapi.session()
    rapi.value(session, "kept = 41")
    # Before: the worker could not encode the reply, exited, and the state was lost.
    big = rapi.execute(session, "10 ** 5000")
    assert big["error"] is None and big["worker_restarted"] is False
    assert "too many digits" in big["value"]
    nested = rapi.value(session, "[2 ** 5000, 7]")
    assert nested[1] == 7 and isinstance(nested[0], str)
    # Digits beyond the server's JSON limit broke the channel before.
    unlimited = rapi.execute(session, "import sys\nsys.set_int_max_str_digits(0)\n10 ** 5000")
    assert unlimited["error"] is None and unlimited["value"] == "1" + "0" * 5000
    assert rapi.value(session, "kept + 1") == 42


# ---- records other clients stored ----------------------------------------------------------


def test_records_of_other_clients_do_not_break_listings(
    rapi: Api, rdb: redis.Redis, prefix: str
) -> None:
    rdb.hset(
        f"{prefix}:workflows:__workflows__",
        mapping={
            "junk": "not json",
            "alist": "[1, 2]",
            "noname": json.dumps({"source": "x"}),
            "fine": json.dumps(
                {
                    "name": "fine",
                    "source": "async def run():\n    return 1\n",
                    "parameters": "not a list",
                }
            ),
        },
    )
    rdb.hset(
        f"{prefix}:artifacts:__index__",
        mapping={
            "junk": "not json",
            "alist": "[1]",
            "odd": json.dumps({"created_at": "yesterday", "metadata": [1], "description": {}}),
            "badjson": json.dumps({"metadata": {"_data_type": "json"}}),
            "badtext": json.dumps({"metadata": {"_data_type": "text"}}),
        },
    )
    rdb.set(f"{prefix}:artifacts:badjson", b"{not json")
    rdb.set(f"{prefix}:artifacts:badtext", b"\xff\xfe")

    flows = rapi.http.get("/api/workflows")
    assert flows.status_code == 200
    assert [w["name"] for w in flows.json()] == ["fine"]
    assert rapi.http.get("/api/workflows/junk").status_code == 400

    listed = rapi.http.get("/api/artifacts")
    assert listed.status_code == 200
    odd = next(a for a in listed.json() if a["name"] == "odd")
    assert odd["created_at"] == 0.0 and odd["metadata"] == {} and odd["description"] == ""
    # Data that does not match its recorded type is served as bytes, not a 500.
    badjson = rapi.http.get("/api/artifacts/badjson")
    assert badjson.status_code == 200 and badjson.content == b"{not json"
    badtext = rapi.http.get("/api/artifacts/badtext")
    assert badtext.status_code == 200 and badtext.content == b"\xff\xfe"
    assert rapi.http.get("/info").status_code == 200

    session = rapi.session()
    assert rapi.value(session, "[w['name'] for w in workflows.list()]") == ["fine"]
    assert rapi.value(session, "workflows.fine()") == 1
    assert rapi.value(session, "artifacts.load('badjson')") == repr(b"{not json")


BROKEN_TOOLS = {
    "optlist": "name: optlist\ncommand: echo\nschema:\n  options: [1, 2]\n",
    "recipelist": "name: recipelist\ncommand: echo\nrecipes: [x]\n",
    "presetlist": "name: presetlist\ncommand: echo\nrecipes:\n  r:\n    preset: [1]\n",
    "posint": "name: posint\ncommand: echo\nschema:\n  positional: 5\n",
    "nan": "name: nan\ncommand: echo\ntimeout: .nan\n",
    "bigint": "name: bigint\ncommand: echo\ntimeout: 1" + "0" * 5000 + "\n",
    "lol": (
        "a: &a [x,x,x,x,x,x,x,x,x]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\n"
        "c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\nd: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]\n"
        "e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]\nf: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]\n"
        "g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]\nname: lol\ncommand: echo\ndescription: *g\n"
    ),
}


@pytest.mark.parametrize("name", sorted(BROKEN_TOOLS))
def test_broken_tool_yaml_is_a_validation_error(name: str) -> None:
    with pytest.raises(ValidationError, match=f"tool '?{name}'?"):
        parse_tool_yaml(BROKEN_TOOLS[name], default_name=name)


def test_broken_tools_in_redis_do_not_hide_the_others(
    rapi: Api, rdb: redis.Redis, prefix: str
) -> None:
    rdb.hset(
        f"{prefix}:tools:__tools__",
        mapping={
            **BROKEN_TOOLS,
            "notutf8": b"\xff\xfe",
            "say": "name: say\ncommand: echo\ndescription: 2024-01-01\n",
        },
    )
    assert set(tool_specs({k: v for k, v in BROKEN_TOOLS.items()})) == set()
    tools = rapi.http.get("/api/tools")
    assert tools.status_code == 200, tools.text  # was 500 for the first four
    assert [t["name"] for t in tools.json()] == ["say"]
    assert tools.json()[0]["description"] == "2024-01-01"
    assert rapi.http.get("/info").status_code == 200
    session = rapi.session()
    assert rapi.value(session, "[t['name'] for t in tools.list()]") == ["say"]


# ---- workflows -------------------------------------------------------------------------------


def test_workflow_defaults_that_are_not_json_keep_their_source(rapi: Api) -> None:
    source = "async def run(a=1e999, b={1, 2}, c=b'x', d=-1e999):\n    return a\n"
    created = rapi.http.post("/api/workflows", json={"name": "odd_defaults", "source": source})
    assert created.status_code == 200, created.text
    defaults = [p["default"] for p in created.json()["parameters"]]
    # 1e999 was stored as Infinity: shown as null by the API and "inf" to code.
    assert defaults == ["1e309", "{1, 2}", "b'x'", "-1e309"]
    fetched = rapi.http.get("/api/workflows/odd_defaults").json()
    assert [p["default"] for p in fetched["parameters"]] == defaults


# ---- the Python clients ---------------------------------------------------------------------


def test_client_names_are_url_quoted(fapi: Api, file_srv: ServerProcess) -> None:
    with SessionClient(file_srv.url, token=TOKEN) as client:
        client.save_artifact("report", "keep me")
        # Before: "report?x" reached the server as "report" and deleted it.
        for name in ["report?x", "report#x", "a/../report", "report%", "re port"]:
            with pytest.raises(SessionError) as refused:
                client.delete_artifact(name)
            assert refused.value.status == 400 and "invalid artifact name" in refused.value.detail
        assert client.load_artifact("report") == "keep me"
        with pytest.raises(SessionError) as bad_flow:
            client.get_workflow("x?y")
        assert bad_flow.value.status == 400


def test_client_does_not_ignore_an_empty_workspace_id(rapi: Api, redis_srv: ServerProcess) -> None:
    with SessionClient(redis_srv.url, token=TOKEN) as client:
        # Before: "" was dropped and a session of the server's default workspace made.
        for workspace in ["", "..", "a/b"]:
            with pytest.raises(SessionError) as refused:
                client.create_session(workspace)
            assert refused.value.status == 400
            assert "invalid workspace_id" in refused.value.detail


async def test_async_client_has_the_sync_clients_methods(redis_srv: ServerProcess) -> None:
    sync_methods = {m for m in vars(SessionClient) if not m.startswith("_")}
    async_methods = {m for m in vars(AsyncSessionClient) if not m.startswith("_")}
    assert sync_methods <= async_methods, sorted(sync_methods - async_methods)
    async with AsyncSessionClient(redis_srv.url, token=TOKEN) as client:
        assert (await client.execute("6 * 7")).value == 42
        assert await client.get_workflow("not_there") is None
        assert await client.delete_workflow("not_there") is False
        assert isinstance(await client.list_tools(), list)
        assert isinstance(await client.search_workflows("x"), list)
        await client.save_artifact("async.bin", b"\x00\x01")
        assert await client.load_artifact("async.bin") == b"\x00\x01"
        await client.delete_artifact("async.bin")
        with pytest.raises(SessionError) as gone:
            await client.load_artifact("async.bin")
        assert gone.value.status == 404
        assert isinstance(await client.list_deps(), list)
        with pytest.raises(SessionError) as off:
            await client.add_dep("requests")
        assert off.value.status == 403 and "ALLOW_RUNTIME_DEPS" in off.value.detail


# ---- sessions ---------------------------------------------------------------------------------


class _FakeWorker:
    def __init__(self) -> None:
        self.killed = False
        self.alive = True
        self.sole = False

    async def kill(self) -> None:
        self.killed = True
        self.alive = False


class _FakePool:
    def __init__(self) -> None:
        self.workers: list[_FakeWorker] = []

    def refill(self) -> None:
        return None

    async def acquire(self, workspace_id: str | None, snapshots: bool = False) -> _FakeWorker:
        self.workers.append(_FakeWorker())
        return self.workers[-1]

    async def close(self) -> None:
        return None


async def test_reused_client_session_id_does_not_orphan_its_worker() -> None:
    pool: Any = _FakePool()
    manager = SessionManager(pool, idle_timeout=0.05, max_sessions=4)
    client_id = "client-chosen-id-0001"
    first = await manager.create(None, session_id=client_id)
    await manager._ensure_worker(first)
    # No sweeper runs here (the manager is not started): the session only ages past 0.05 s.
    deadline = time.monotonic() + 10
    while manager.get(client_id) is not None:
        assert time.monotonic() < deadline, "the session did not expire within 10s"
        await asyncio.sleep(0.01)
    assert manager.get(client_id) is None  # expired, not yet swept
    second = await manager.create(None, session_id=client_id)
    # Before: the expired session's worker was dropped without being killed.
    assert pool.workers[0].killed
    assert manager.get(client_id) is second and manager.count == 1
    await manager.end(client_id)


def test_server_survives_the_whole_hostile_tour(rapi: Api, fapi: Api) -> None:
    """After everything above, both servers still answer normally."""
    for api in (rapi, fapi):
        session = api.session()
        assert api.value(session, "sum(range(10))") == 45
        assert api.server.alive
