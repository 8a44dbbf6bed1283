"""A warm pool pod's server (SESSION_POOL, issue 14 item 1), as a real `codemode serve`
against a real Redis: unbound it runs nothing (409 that says why); POST /bind with its
token makes it one state's for good (the same binding again is answered alike, another
is refused); a bound pool server loads the state saved under that id before it answers,
records history under it and its agent; a restarted container reads its binding from
SESSION_BINDING_DIR; and the document lists every answer of /bind.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from tests.conftest import RedisServer
from tests.integration.server_fixture import Api, base_settings, running_server

pytestmark = pytest.mark.redis

WORKSPACE = "wspool"


@pytest.fixture(scope="module")
def prefix() -> str:
    return f"pool{uuid.uuid4().hex[:8]}"


def settings(redis_server: RedisServer, prefix: str, **extra: str) -> dict[str, str]:
    return base_settings(
        redis_server.url, prefix, WORKSPACE_ID=WORKSPACE, MAX_SESSIONS="1", **extra
    )


def test_an_unbound_pool_server_is_ready_and_runs_nothing(
    redis_server: RedisServer, prefix: str
) -> None:
    with (
        running_server(settings(redis_server, prefix, SESSION_POOL="true")) as srv,
        srv.client() as http,
    ):
        assert http.get("/ready").json() == {"ready": True}
        run = http.post("/execute", json={"code": "1 + 1"})
        assert run.status_code == 409
        assert "not bound to a CodeSession" in run.json()["detail"]
        assert http.post("/sessions", json={}).status_code == 409
        assert "state" not in http.get("/health").json()
        stranger = {"Authorization": "Bearer wrong"}
        assert http.post("/bind", json={"state_id": "cs.x"}, headers=stranger).status_code == 401


def test_bind_loads_the_saved_state_and_is_for_good(redis_server: RedisServer, prefix: str) -> None:
    state = f"cs.{uuid.uuid4().hex}"
    with (
        running_server(settings(redis_server, prefix, SESSION_STATE_ID=state)) as srv,
        srv.client() as http,
    ):
        api = Api(srv, http)
        api.value(api.session(), "saved = 'before the pool'")
    with (
        running_server(settings(redis_server, prefix, SESSION_POOL="true")) as srv,
        srv.client() as http,
    ):
        api = Api(srv, http)
        body = {"state_id": state, "agent_id": "agent-7"}
        bound = http.post("/bind", json=body)
        assert bound.status_code == 200, bound.text
        answer = bound.json()
        assert answer["bound"] is True and answer["state_id"] == state
        assert answer["agent_id"] == "agent-7"
        assert answer["restored"]["restored"] == ["saved"]
        session = api.session()
        assert api.value(session, "saved + ', after'") == "before the pool, after"
        assert http.get("/health").json()["state"]["state_id"] == state
        # an operator retrying the same bind gets the same answer; another is refused
        assert http.post("/bind", json=body).status_code == 200
        other = http.post("/bind", json={"state_id": f"cs.{uuid.uuid4().hex}"})
        assert other.status_code == 409
        assert "never bound twice" in other.json()["detail"]
        history = http.get("/api/history/sessions", params={"agent_id": "agent-7"}).json()
        assert state in [s["session_id"] for s in history["sessions"]]


def test_a_restarted_pool_container_reads_its_binding(
    redis_server: RedisServer, prefix: str, tmp_path: Path
) -> None:
    state = f"cs.{uuid.uuid4().hex}"
    folder = tmp_path / "binding"
    folder.mkdir()
    env = settings(redis_server, prefix, SESSION_POOL="true", SESSION_BINDING_DIR=str(folder))
    with running_server(env) as srv, srv.client() as http:
        assert http.post("/bind", json={"state_id": state}).status_code == 200
        api = Api(srv, http)
        api.value(api.session(), "kept = 42")
    (folder / "state-id").write_text(state)  # what the operator's annotation shows
    (folder / "agent-id").write_text("")
    with running_server(env) as srv, srv.client() as http:
        api = Api(srv, http)
        assert api.value(api.session(), "kept") == 42
        assert http.post("/bind", json={"state_id": "cs.other"}).status_code == 409


def test_a_server_that_is_not_a_pool_pod_refuses_bind(
    redis_server: RedisServer, prefix: str
) -> None:
    with running_server(settings(redis_server, prefix)) as srv, srv.client() as http:
        refused = http.post("/bind", json={"state_id": "cs.any"})
        assert refused.status_code == 409
        assert "not a warm pool pod" in refused.json()["detail"]
        assert http.post("/bind", json={"state_id": "bad:id"}).status_code == 400


def test_the_document_lists_every_answer_of_bind(redis_server: RedisServer, prefix: str) -> None:
    with running_server(settings(redis_server, prefix)) as srv, srv.client() as http:
        document = http.get("/openapi.json").json()
    answers = document["paths"]["/bind"]["post"]["responses"]
    assert set(answers) == {"200", "400", "401", "409", "413", "422", "503"}
    assert "409" in document["paths"]["/execute"]["post"]["responses"]
