"""py-code-mode's clients and storage work against codemode unchanged (issue 12).

Written from py-code-mode's documented and observed behaviour, not its code: its
`SessionClient` (both releases) sends its own `X-Session-ID` (a uuid) on every
request, before the first run too, or opens one with `POST /sessions`; it takes only
200 as success for what it creates; it reads `null`/`false` for a missing workflow;
it calls `/install_deps` and `/uninstall_deps` with `{"packages": [...]}`; it never
ends its session. Its Redis readers parse an artifact's `created_at` with
`datetime.fromisoformat`. Its server answers values as pydantic renders them: dict keys
as JSON strings, NaN as null, frozensets as lists, anything else as its str().
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import yaml
from codemode_session.server.sessions import SessionManager

from tests.conftest import RedisServer
from tests.integration.server_fixture import ServerProcess, base_settings, running_server

pytestmark = pytest.mark.redis

SRC = "async def run(x: int) -> int:\n    return x + 1\n"
MAX_SESSIONS = 2


@pytest.fixture(scope="module")
def prefix() -> str:
    return f"pcm{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def server(redis_server: RedisServer, prefix: str) -> Iterator[ServerProcess]:
    # Default settings but for a short worker idle time and few workers, to see both.
    settings = base_settings(
        redis_server.url, prefix, WORKER_IDLE_TIMEOUT="2", MAX_SESSIONS=str(MAX_SESSIONS)
    )
    with running_server(settings) as srv:
        yield srv


@pytest.fixture(scope="module")
def http(server: ServerProcess) -> Iterator[httpx.Client]:
    with server.client() as client:
        yield client


@pytest.fixture(scope="module")
def rdb(redis_server: RedisServer) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_server.url, decode_responses=True)
    yield client
    client.close()


def own(session_id: str) -> dict[str, str]:
    return {"X-Session-ID": session_id}


def run(http: httpx.Client, session_id: str, code: str) -> dict[str, Any]:
    response = http.post("/execute", json={"code": code}, headers=own(session_id))
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


# ---- case 1: the client's own session id, before the first run too -------------------


def test_a_client_chosen_id_works_before_and_from_the_first_run(http: httpx.Client) -> None:
    chosen = str(uuid.uuid4())
    for method, path in [
        ("POST", "/reset"),
        ("GET", "/info"),
        ("GET", "/api/tools"),
        ("GET", "/api/workflows"),
        ("GET", "/api/artifacts"),
        ("GET", "/api/deps"),
    ]:
        response = http.request(method, path, headers=own(chosen))
        assert response.status_code == 200, (path, response.text)
    assert http.post("/reset", headers=own(chosen)).json() == {
        "status": "reset",
        "session_id": chosen,
    }
    first = run(http, chosen, "x = 41\nx + 1")
    assert first["value"] == 42 and first["session_id"] == chosen and first["error"] is None
    assert run(http, chosen, "x")["value"] == 41
    info = http.get("/info", headers=own(chosen)).json()
    assert {"tools", "workflows", "skills", "artifacts_path"} <= set(info)


def test_ids_the_server_issues_are_never_taken_up_as_a_clients(http: httpx.Client) -> None:
    issued = http.post("/sessions", json={}).json()["session_id"]
    assert len(issued) >= 32
    assert http.request("DELETE", "/sessions", headers=own(issued)).status_code == 200
    again = http.post("/execute", json={"code": "1"}, headers=own(issued))
    assert again.status_code == 400 and again.json()["detail"] == "Invalid session ID"


# An X-Session-ID that names no session of the caller (ended, expired, another token's, or
# not an id a client may choose) is answered 400 with `detail` exactly "Invalid session
# ID" on every route that takes the header: the one answer on which py-code-mode's newer
# client opens a new session (POST /sessions) and goes on. Its older client never sees
# it: the ids it picks are always taken up. codemode's reason is in `error`.
UNKNOWN_SESSION_ROUTES = [
    ("POST", "/execute", {"code": "1"}),
    ("POST", "/reset", None),
    ("GET", "/info", None),
    ("GET", "/api/tools", None),
    ("GET", "/api/workflows", None),
    ("GET", "/api/skills", None),
    ("GET", "/api/workflows/plus", None),
    ("POST", "/api/workflows", {"name": "plus", "source": SRC, "description": ""}),
    ("DELETE", "/api/workflows/plus", None),
    ("GET", "/api/artifacts", None),
    ("GET", "/api/artifacts/a.json", None),
    ("POST", "/api/artifacts", {"name": "a.json", "data": 1}),
    ("GET", "/api/deps", None),
    ("DELETE", "/sessions", None),
]


@pytest.mark.parametrize(("method", "path", "body"), UNKNOWN_SESSION_ROUTES)
def test_an_unknown_session_is_400_invalid_session_id(
    http: httpx.Client, method: str, path: str, body: dict[str, Any] | None
) -> None:
    issued = http.post("/sessions", json={}).json()["session_id"]
    assert http.delete("/sessions", headers=own(issued)).status_code == 200
    for gone in (issued, "not a session id"):
        answer = http.request(method, path, json=body, headers=own(gone))
        assert answer.status_code == 400, (path, answer.text)
        assert answer.json()["detail"] == "Invalid session ID"
        assert "unknown or expired session" in answer.json()["error"]


def test_a_client_that_reopens_on_invalid_session_id_goes_on(http: httpx.Client) -> None:
    """What py-code-mode's newer client does: on 400 "Invalid session ID", POST /sessions
    and send the request again under the new id."""
    session_id = http.post("/sessions", json={}).json()["session_id"]
    assert run(http, session_id, "y = 1\ny")["value"] == 1
    http.delete("/sessions", headers=own(session_id))  # as the idle sweep would end it
    answer = http.post("/execute", json={"code": "2"}, headers=own(session_id))
    if answer.status_code == 400 and answer.json().get("detail") == "Invalid session ID":
        session_id = http.post("/sessions", json={}).json()["session_id"]
        answer = http.post("/execute", json={"code": "2"}, headers=own(session_id))
    assert answer.status_code == 200 and answer.json()["value"] == 2


def test_codemode_clients_know_the_answer_too(server: ServerProcess) -> None:
    from codemode_session.client import SessionClient, SessionError

    with SessionClient(server.url, token=server.token) as client:
        assert client.execute("1").value == 1
        ended = client.session_id
        client.end_session()
        client.session_id = ended
        with pytest.raises(SessionError) as gone:
            client.execute("1")
    assert gone.value.unknown_session and gone.value.status == 400
    assert "unknown or expired session" in gone.value.detail  # the reason stays in the text
    assert SessionError(404, "unknown or expired session; ...").unknown_session  # older servers
    assert not SessionError(404, "no artifact named 'x'").unknown_session
    assert not SessionError(400, "invalid workflow name").unknown_session


async def test_a_client_chosen_id_is_bound_to_the_token_that_chose_it() -> None:
    class Pool:
        def refill(self) -> None:
            return None

    manager = SessionManager(Pool(), idle_timeout=60, max_sessions=1)  # type: ignore[arg-type]
    chosen = str(uuid.uuid4())
    session = await manager.create(None, session_id=chosen, owner="digest-of-token-a")
    assert manager.get(chosen, "digest-of-token-a") is session
    assert manager.get(chosen, "digest-of-token-b") is None
    assert manager.get(chosen, None) is None
    assert manager.taken(chosen)  # so nobody else creates a session under it
    issued = await manager.create(None)
    assert manager.get(issued.id, "anyone") is issued  # knowing a server's id is the capability
    assert "." in issued.id


# ---- cases 2 and 3: statuses and bodies its client requires ---------------------------


def test_creating_answers_200(http: httpx.Client) -> None:
    created = http.post("/sessions", json={})
    assert created.status_code == 200 and created.json()["session_id"]
    workflow = http.post(
        "/api/workflows", json={"name": "plus_one", "source": SRC, "description": "adds one"}
    )
    assert workflow.status_code == 200, workflow.text
    assert workflow.json()["name"] == "plus_one"
    artifact = http.post("/api/artifacts", json={"name": "c2.json", "data": {"a": 1}})
    assert artifact.status_code == 200, artifact.text
    assert http.get("/api/artifacts/c2.json").json() == {"a": 1}


def test_missing_workflow_is_null_and_its_delete_false(http: httpx.Client) -> None:
    missing = http.get("/api/workflows/never_saved")
    assert missing.status_code == 200 and missing.json() is None
    deleted = http.delete("/api/workflows/never_saved")
    assert deleted.status_code == 200 and deleted.json() is False
    http.post("/api/workflows", json={"name": "short_lived", "source": SRC})
    assert http.get("/api/workflows/short_lived").json()["name"] == "short_lived"
    assert http.delete("/api/workflows/short_lived").json() is True
    # A missing artifact stays a 404: its client turns that into its own error.
    assert http.get("/api/artifacts/never_saved.txt").status_code == 404
    assert http.delete("/api/artifacts/never_saved.txt").status_code == 404


def test_the_newer_client_flow(http: httpx.Client) -> None:
    """Its newer client opens a session with POST /sessions, sends the id it got, and after
    a reset opens another."""
    session = http.post("/sessions", json={}).json()["session_id"]
    assert run(http, session, "y = 2\ny")["value"] == 2
    assert http.get("/api/workflows", headers=own(session)).status_code == 200
    reset = http.post("/reset", headers=own(session))
    assert reset.status_code == 200 and reset.json()["status"] == "reset"
    fresh = http.post("/sessions", json={}).json()["session_id"]
    assert run(http, fresh, "'y' in globals()")["value"] is False


# ---- case 4: /install_deps and /uninstall_deps ---------------------------------------


def test_install_deps_reports_what_is_there_and_refuses_the_rest(http: httpx.Client) -> None:
    present = http.post("/install_deps", json={"packages": ["httpx"]})
    assert present.status_code == 200, present.text
    assert present.json() == {
        "installed": [],
        "already_present": ["httpx"],
        "removed": [],
        "not_found": [],
        "failed": [],
    }
    assert http.post("/install_deps", json={"packages": []}).status_code == 200
    # Runtime deps are off by default: a clear 403 its older client reads as `error`.
    missing = http.post("/install_deps", json={"packages": ["surely-not-installed-pkg"]})
    assert missing.status_code == 403
    body = missing.json()
    assert "ALLOW_RUNTIME_DEPS" in body["detail"] and body["error"] == body["detail"]
    assert "surely-not-installed-pkg" in body["detail"]
    uninstall = http.post("/uninstall_deps", json={"packages": ["httpx"]})
    assert uninstall.status_code == 403 and "ALLOW_RUNTIME_DEPS" in uninstall.json()["error"]
    bad = http.post("/install_deps", json={"packages": ["--index-url=http://x"]})
    assert bad.status_code == 400


def test_install_and_uninstall_deps_with_runtime_deps_on(
    redis_server: RedisServer, rdb: redis.Redis
) -> None:
    prefix = f"pcmdeps{uuid.uuid4().hex[:6]}"
    settings = base_settings(redis_server.url, prefix, ALLOW_RUNTIME_DEPS="true")
    with running_server(settings) as srv, srv.client() as http:
        # Present packages are not installed again, so this needs no index.
        assert http.post("/install_deps", json={"packages": ["httpx"]}).json()[
            "already_present"
        ] == ["httpx"]
        assert http.post("/api/deps/add", json={"package": "httpx"}).status_code == 200
        gone = http.post("/uninstall_deps", json={"packages": ["httpx", "not-listed"]})
        assert gone.status_code == 200, gone.text
        assert gone.json()["removed"] == ["httpx"] and gone.json()["not_found"] == ["not-listed"]
        assert http.get("/api/deps").json() == []


# ---- case 5: sessions nobody ends ------------------------------------------------------


def test_an_idle_session_gives_its_worker_back_and_says_so(http: httpx.Client) -> None:
    chosen = str(uuid.uuid4())
    assert run(http, chosen, "kept = 1\nkept")["value"] == 1
    deadline = time.monotonic() + 30
    result = run(http, chosen, "kept")
    while result["state_released"] is None:  # WORKER_IDLE_TIMEOUT=2; the sweeper: each second
        assert time.monotonic() < deadline, "the idle worker was not released within 30s"
        time.sleep(3)
        result = run(http, chosen, "kept")
    assert result["worker_restarted"] is True and result["session_id"] == chosen
    # The worker went back, the state did not: the new one loaded the session's snapshot.
    assert "released" in result["state_released"] and "restored" in result["state_released"]
    assert result["value"] == 1 and result["state_restored"]["restored"] == ["kept"]
    after = run(http, chosen, "1")
    assert after["worker_restarted"] is False and after["state_released"] is None


def test_clients_that_never_end_their_sessions_never_meet_429(http: httpx.Client) -> None:
    for _ in range(MAX_SESSIONS * 3):
        result = run(http, str(uuid.uuid4()), "sum(range(4))")
        assert result["value"] == 6 and result["error"] is None
    for _ in range(MAX_SESSIONS * 3):
        session = http.post("/sessions", json={}).json()["session_id"]
        assert run(http, session, "2")["value"] == 2


# ---- case 6: the Redis layout, both ways -----------------------------------------------


def test_artifact_index_is_what_pcm_readers_parse(
    http: httpx.Client, rdb: redis.Redis, prefix: str
) -> None:
    http.post("/api/artifacts", json={"name": "ours.json", "data": [1, 2], "description": "d"})
    entry = json.loads(rdb.hget(f"{prefix}:artifacts:__index__", "ours.json"))
    created = datetime.fromisoformat(entry["created_at"])  # what py-code-mode's reader does
    assert abs(created.timestamp() - time.time()) < 120
    assert entry["description"] == "d" and entry["metadata"]["_data_type"] == "json"
    assert json.loads(rdb.get(f"{prefix}:artifacts:ours.json")) == [1, 2]


def test_artifacts_pcm_wrote_and_older_float_entries_are_read(
    http: httpx.Client, rdb: redis.Redis, prefix: str
) -> None:
    index = f"{prefix}:artifacts:__index__"
    written = {
        "pcm.json": ("2025-01-02T03:04:05.678901+00:00", {"from": "py-code-mode"}),
        "naive.json": ("2025-01-02T03:04:05", [3]),
        "old.json": (1700000000.5, "older codemode"),
    }
    for name, (created, data) in written.items():
        rdb.set(f"{prefix}:artifacts:{name}", json.dumps(data))
        entry = {"description": name, "created_at": created, "metadata": {"_data_type": "json"}}
        rdb.hset(index, name, json.dumps(entry))
    listed = {a["name"]: a for a in http.get("/api/artifacts").json()}
    assert (
        listed["pcm.json"]["created_at"]
        == datetime.fromisoformat("2025-01-02T03:04:05.678901+00:00").timestamp()
    )
    assert listed["old.json"]["created_at"] == 1700000000.5
    assert listed["naive.json"]["created_at"] > 0
    for name, (_, data) in written.items():
        assert http.get(f"/api/artifacts/{name}").json() == data


# ---- case 7: values as py-code-mode renders them ----------------------------------------


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("{1: 'a'}", {"1": "a"}),
        ("{1: {2: [3]}}", {"1": {"2": [3]}}),
        ("float('nan')", None),
        ("[float('inf'), 1.5]", [None, 1.5]),
        ("frozenset({7})", [7]),
        ("{8}", "{8}"),
        ("(1, 'two')", [1, "two"]),
        ("import datetime\ndatetime.date(2025, 1, 2)", "2025-01-02"),
        ("None", None),
    ],
)
def test_values_are_rendered_as_pcm_renders_them(
    http: httpx.Client, code: str, expected: Any
) -> None:
    assert run(http, str(uuid.uuid4()), code)["value"] == expected


# ---- case 6: tools ---------------------------------------------------------------------

TOOL_YAML = "name: greet\ndescription: say hello\ncommand: echo\n"


def test_tools_are_stored_as_json_and_both_forms_are_read(
    http: httpx.Client, rdb: redis.Redis, prefix: str, tmp_path: Path
) -> None:
    key = f"{prefix}:tools:__tools__"
    folder = tmp_path / "tools"
    folder.mkdir()
    (folder / "greet.yaml").write_text(TOOL_YAML)
    store = [sys.executable, "-m", "codemode_session", "store"]
    target = ["--redis-url", rdb_url(rdb), "--prefix", prefix]
    subprocess.run(
        [*store, "bootstrap", "--type", "tools", "--folder", str(folder), *target],
        check=True,
        capture_output=True,
    )
    # What py-code-mode's tool store reads back with json.loads.
    assert json.loads(rdb.hget(key, "greet")) == yaml.safe_load(TOOL_YAML)
    # Written by py-code-mode (JSON) and by older codemode (YAML): both listed.
    rdb.hset(
        key,
        "pcm_tool",
        json.dumps({"name": "pcm_tool", "description": "from pcm", "command": "echo"}),
    )
    rdb.hset(key, "old_tool", "name: old_tool\ndescription: older yaml\ncommand: echo\n")
    tools = {t["name"]: t for t in http.get("/api/tools").json()}
    assert {"greet", "pcm_tool", "old_tool"} <= set(tools)
    assert tools["pcm_tool"]["description"] == "from pcm"
    # A second bootstrap of the same folder changes nothing; diff agrees.
    again = subprocess.run(
        [*store, "bootstrap", "--type", "tools", "--folder", str(folder), *target],
        check=True,
        capture_output=True,
        text=True,
    )
    assert json.loads(again.stdout)["unchanged"] == 1


def rdb_url(rdb: redis.Redis) -> str:
    kwargs = rdb.connection_pool.connection_kwargs
    return f"redis://{kwargs['host']}:{kwargs['port']}/{kwargs.get('db', 0)}"


# ---- case 8 (in part): the skills-era names --------------------------------------------


def test_skills_era_routes_and_name_are_the_workflows(http: httpx.Client) -> None:
    created = http.post(
        "/api/skills", json={"name": "skill_plus", "source": SRC, "description": "plus one"}
    )
    assert created.status_code == 200, created.text
    assert "skill_plus" in {w["name"] for w in http.get("/api/skills").json()}
    assert http.get("/api/workflows/skill_plus").json()["name"] == "skill_plus"
    found = http.get("/api/skills/search", params={"query": "plus", "limit": 5}).json()
    assert "skill_plus" in {w["name"] for w in found}
    assert http.get("/api/skills/skill_plus").json()["source"] == SRC
    session = str(uuid.uuid4())
    assert run(http, session, "skills.skill_plus(x=1)")["value"] == 2
    assert run(http, session, "skills.invoke('skill_plus', x=2)")["value"] == 3
    assert http.delete("/api/skills/skill_plus").json() is True
    assert http.get("/api/skills/skill_plus").json() is None
    assert http.delete("/api/skills/skill_plus").json() is False


# ---- the skills-era key, both ways, with and without a workspace -----------------------
#
# py-code-mode keeps workflows in one Redis hash per storage prefix P, the name as field
# and a JSON record {"name", "description", "source", "parameters"} as value: the
# workflows era under `P:workflows:__workflows__`, the skills era under
# `P:skills:__skills__`. Its readers skip a record without name, source or description,
# and its last skills-era release (0.10) also one whose `run` is not `async def`. With a
# workspace, P is `{prefix}:ws:{workspace}`.

ERA_KEYS = {"workflows": "workflows:__workflows__", "skills": "skills:__skills__"}


def scope(prefix: str, workspace: str | None) -> str:
    return prefix if workspace is None else f"{prefix}:ws:{workspace}"


def read_like_pcm(rdb: redis.Redis, key: str, era: str) -> dict[str, dict[str, Any]]:
    """What a py-code-mode reader of `era` takes from its hash, as its documents say."""
    taken: dict[str, dict[str, Any]] = {}
    for name, value in rdb.hgetall(key).items():
        record = json.loads(value)
        if not {"name", "source", "description"} <= set(record):
            continue
        if era == "skills" and "async def run(" not in record["source"]:
            continue
        taken[name] = record
    return taken


def workspace_session(http: httpx.Client, workspace: str | None) -> dict[str, str]:
    if workspace is None:
        return {}
    created = http.post("/sessions", json={"workspace_id": workspace})
    assert created.status_code == 200, created.text
    return own(created.json()["session_id"])


@pytest.mark.parametrize("workspace", [None, "client-a"])
def test_what_codemode_writes_both_eras_readers_take(
    http: httpx.Client, rdb: redis.Redis, prefix: str, workspace: str | None
) -> None:
    headers = workspace_session(http, workspace)
    name = f"both_{uuid.uuid4().hex[:6]}"
    body = {"name": name, "source": SRC, "description": "plus one"}
    assert http.post("/api/workflows", json=body, headers=headers).status_code == 200
    for era, key in ERA_KEYS.items():
        taken = read_like_pcm(rdb, f"{scope(prefix, workspace)}:{key}", era)
        assert taken[name]["source"] == SRC and taken[name]["description"] == "plus one", era
        assert taken[name]["parameters"][0]["name"] == "x"
    # Deleted through codemode: gone for both eras.
    assert http.delete(f"/api/workflows/{name}", headers=headers).json() is True
    for era, key in ERA_KEYS.items():
        assert name not in read_like_pcm(rdb, f"{scope(prefix, workspace)}:{key}", era)


@pytest.mark.parametrize("era", ["workflows", "skills"])
@pytest.mark.parametrize("workspace", [None, "client-a"])
def test_what_either_eras_writer_stores_codemode_reads(
    http: httpx.Client, rdb: redis.Redis, prefix: str, workspace: str | None, era: str
) -> None:
    headers = workspace_session(http, workspace)
    name = f"{era}_{uuid.uuid4().hex[:6]}"
    record = {"name": name, "description": f"from {era}", "source": SRC, "parameters": []}
    rdb.hset(f"{scope(prefix, workspace)}:{ERA_KEYS[era]}", name, json.dumps(record))
    listed = {w["name"]: w for w in http.get("/api/workflows", headers=headers).json()}
    assert listed[name]["description"] == f"from {era}"
    assert http.get(f"/api/skills/{name}", headers=headers).json()["source"] == SRC
    session = headers.get("X-Session-ID") or str(uuid.uuid4())
    assert run(http, session, f"workflows.invoke({name!r}, x=4)")["value"] == 5
    # A delete through codemode removes it from the hash its writer used.
    assert http.delete(f"/api/workflows/{name}", headers=headers).json() is True
    assert rdb.hget(f"{scope(prefix, workspace)}:{ERA_KEYS[era]}", name) is None
    assert http.get(f"/api/workflows/{name}", headers=headers).json() is None


def test_a_workflows_era_delete_is_not_undone_by_the_skills_era_copy(
    http: httpx.Client, rdb: redis.Redis, prefix: str
) -> None:
    name = f"gone_{uuid.uuid4().hex[:6]}"
    body = {"name": name, "source": SRC, "description": "d"}
    assert http.post("/api/workflows", json=body).status_code == 200
    rdb.hdel(f"{prefix}:{ERA_KEYS['workflows']}", name)  # a workflows-era client deletes it
    assert http.get(f"/api/workflows/{name}").json() is None
    assert name not in {w["name"] for w in http.get("/api/workflows").json()}
    # The workflows era's record wins over the skills era's for the same name.
    theirs = {"name": name, "description": "skills era", "source": SRC, "parameters": []}
    rdb.hset(f"{prefix}:{ERA_KEYS['skills']}", name, json.dumps(theirs))
    assert http.get(f"/api/workflows/{name}").json()["description"] == "skills era"
    ours = {**theirs, "description": "workflows era"}
    rdb.hset(f"{prefix}:{ERA_KEYS['workflows']}", name, json.dumps(ours))
    assert http.get(f"/api/workflows/{name}").json()["description"] == "workflows era"
    assert http.delete(f"/api/workflows/{name}").json() is True
