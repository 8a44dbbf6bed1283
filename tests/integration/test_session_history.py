"""Session history in Agentix's layout (issue 13, item 1), against a real Redis and a real
`codemode serve`: the exact records, bounds and truncation marks, list order, fork, delete,
the FileStorage twin, and that agent code cannot write history.

Every client here fails the test on any 5xx answer (see server_fixture).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.conftest import RedisServer
from tests.integration.server_fixture import Api, ServerProcess, base_settings, running_server

pytestmark = pytest.mark.redis

WORKSPACE = "wshist"
MAX_MESSAGES = 6
MAX_OUTPUT = 200


@pytest.fixture(scope="module")
def prefix() -> str:
    return f"hist{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def server(redis_server: RedisServer, prefix: str) -> Iterator[ServerProcess]:
    settings = base_settings(
        redis_server.url,
        prefix,
        WORKSPACE_ID=WORKSPACE,
        AGENT_ID="pod-agent",
        HISTORY_ENABLED="true",
        HISTORY_MAX_MESSAGES=str(MAX_MESSAGES),
        HISTORY_MAX_OUTPUT_BYTES=str(MAX_OUTPUT),
    )
    with running_server(settings) as srv:
        yield srv


@pytest.fixture(scope="module")
def api(server: ServerProcess) -> Iterator[Api]:
    with server.client() as client:
        yield Api(server, client)


def eventually(predicate: Any, what: str, timeout: float = 10.0) -> None:
    """History is written just after the run answers (off /execute's path): wait for it."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"{what} within {timeout}s"
        time.sleep(0.02)


def scope(prefix: str) -> str:
    return f"{prefix}:ws:{WORKSPACE}"


def new_session(api: Api, agent: str | None = None) -> str:
    body = {} if agent is None else {"agent_id": agent}
    response = api.http.post("/sessions", json=body)
    assert response.status_code == 200, response.text
    session_id: str = response.json()["session_id"]
    return session_id


def history(api: Api, session_id: str, **params: Any) -> dict[str, Any]:
    response = api.http.get(f"/api/history/sessions/{session_id}", params=params)
    assert response.status_code == 200, response.text
    found: dict[str, Any] = response.json()
    return found


def test_a_run_is_recorded_in_agentixs_layout(api: Api, rdb: redis.Redis, prefix: str) -> None:
    agent = f"agent-{uuid.uuid4().hex[:6]}"
    session = new_session(api, agent)
    before = time.time()
    assert api.value(session, "print('hi'); 40 + 2") == 42
    after = time.time()
    hid = history(api, session)["session_id"]
    assert hid.startswith("h.") and hid != session  # a capability is never stored or listed
    P = scope(prefix)
    record = {k.decode(): v.decode() for k, v in rdb.hgetall(f"{P}:session:{hid}").items()}
    assert set(record) == {"session_id", "agent_id", "created_at", "updated_at", "metadata"}
    assert record["session_id"] == hid and record["agent_id"] == agent
    for field in ("created_at", "updated_at"):
        assert before - 1 <= datetime.fromisoformat(record[field]).timestamp() <= after + 1
    assert json.loads(record["metadata"]) == {"workspace_id": WORKSPACE}
    assert rdb.type(f"{P}:messages:{hid}") == b"list"
    user, assistant = (json.loads(m) for m in rdb.lrange(f"{P}:messages:{hid}", 0, -1))
    assert set(user) == set(assistant) == {"role", "content", "timestamp"}
    assert user["role"] == "user" and user["content"] == "print('hi'); 40 + 2"
    assert assistant["role"] == "assistant" and isinstance(assistant["content"], str)
    result = json.loads(assistant["content"])
    assert result["value"] == 42 and result["stdout"] == "hi\n" and result["error"] is None
    assert result["truncated"] == [] and result["execution_time_ms"] > 0
    datetime.fromisoformat(user["timestamp"])
    assert datetime.fromisoformat(assistant["timestamp"]) >= datetime.fromisoformat(
        user["timestamp"]
    )
    score = rdb.zscore(f"{P}:index:{agent}", hid)
    assert score == pytest.approx(datetime.fromisoformat(record["updated_at"]).timestamp())
    assert rdb.get(f"{P}:messages:{hid}:count") == b"2"


def test_errors_are_recorded_and_the_default_agent_is_agent_id(
    api: Api, rdb: redis.Redis, prefix: str
) -> None:
    session = new_session(api)
    assert api.execute(session, "1/0")["error_type"] == "ZeroDivisionError"
    page = history(api, session)
    assert page["agent_id"] == "pod-agent"
    result = json.loads(page["messages"][1]["content"])
    assert result["error_type"] == "ZeroDivisionError" and "ZeroDivisionError" in result["error"]
    assert rdb.zscore(f"{scope(prefix)}:index:pod-agent", page["session_id"]) is not None


def test_x_agent_id_and_client_chosen_ids(api: Api, rdb: redis.Redis, prefix: str) -> None:
    chosen = f"client-{uuid.uuid4().hex}"
    agent = f"hdr-{uuid.uuid4().hex[:6]}"
    response = api.http.post(
        "/execute", json={"code": "1"}, headers={"X-Session-ID": chosen, "X-Agent-ID": agent}
    )
    assert response.status_code == 200, response.text
    session_key = f"{scope(prefix)}:session:{chosen}"
    eventually(lambda: rdb.exists(session_key), "the run's session record is written")
    assert rdb.hget(session_key, "agent_id") == agent.encode()
    bad = api.http.post("/execute", json={"code": "1"}, headers={"X-Agent-ID": "a:b"})
    assert bad.status_code == 400 and "agent id" in bad.json()["detail"]
    assert api.http.post("/sessions", json={"agent_id": "*"}).status_code == 400


def test_bounds_keep_the_newest_and_mark_truncation(
    api: Api, rdb: redis.Redis, prefix: str
) -> None:
    session = new_session(api)
    for i in range(5):
        api.value(session, f"{i}")
    api.execute(session, "print('x' * 1000); 'y' * 1000")
    page = history(api, session)
    hid = page["session_id"]
    assert rdb.llen(f"{scope(prefix)}:messages:{hid}") == MAX_MESSAGES
    assert page["total_messages"] == MAX_MESSAGES and page["messages_dropped"] == 12 - MAX_MESSAGES
    assert [m["content"] for m in page["messages"][:4:2]] == ["3", "4"]  # the newest kept
    last = json.loads(page["messages"][-1]["content"])
    assert sorted(last["truncated"]) == ["stdout", "value"]
    assert "[truncated: " in last["stdout"] and len(last["stdout"]) < 300
    assert isinstance(last["value"], str) and "[truncated: " in last["value"]
    api.value(session, "'z' * 500 and None")
    code = history(api, session)["messages"][-2]["content"]
    assert code == "'z' * 500 and None"
    long_code = "x = 1  # " + "c" * 500
    api.value(session, long_code)
    assert "[truncated: " in history(api, session)["messages"][-2]["content"]
    # Pagination over what is kept.
    second = history(api, session, offset=2, limit=2)["messages"]
    assert second == history(api, session)["messages"][2:4]


def test_list_is_newest_first_and_fork_and_delete(api: Api, rdb: redis.Redis, prefix: str) -> None:
    agent = f"lister-{uuid.uuid4().hex[:6]}"
    ids = []
    for n in range(3):
        session = new_session(api, agent)
        api.value(session, f"{n}")
        ids.append(history(api, session)["session_id"])
        time.sleep(0.01)
    api.value(session, "'again'")  # the last session, again
    listed = api.http.get("/api/history/sessions", params={"agent_id": agent}).json()
    assert [s["session_id"] for s in listed["sessions"]] == ids[::-1]
    assert listed["total"] == 3
    first = api.http.get("/api/history/sessions", params={"agent_id": agent, "limit": 1}).json()
    assert [s["session_id"] for s in first["sessions"]] == [ids[2]]
    # Fork: the record and every message, under a new id indexed under the same agent.
    forked = api.http.post(f"/api/history/sessions/{ids[0]}/fork")
    assert forked.status_code == 200, forked.text
    fid = forked.json()["session_id"]
    P = scope(prefix)
    assert fid != ids[0] and forked.json()["agent_id"] == agent
    assert forked.json()["metadata"]["forked_from"] == ids[0]
    assert rdb.lrange(f"{P}:messages:{fid}", 0, -1) == rdb.lrange(f"{P}:messages:{ids[0]}", 0, -1)
    assert rdb.zscore(f"{P}:index:{agent}", fid) is not None
    listed = api.http.get("/api/history/sessions", params={"agent_id": agent}).json()
    assert listed["sessions"][0]["session_id"] == fid
    # Delete: all three keys and the index entry.
    assert api.http.delete(f"/api/history/sessions/{ids[0]}").status_code == 200
    for key in (f"{P}:session:{ids[0]}", f"{P}:messages:{ids[0]}", f"{P}:messages:{ids[0]}:count"):
        assert not rdb.exists(key)
    assert rdb.zscore(f"{P}:index:{agent}", ids[0]) is None
    assert history(api, fid)["total_messages"] == 2  # the fork is independent
    assert api.http.delete(f"/api/history/sessions/{ids[0]}").status_code == 404
    assert api.http.post(f"/api/history/sessions/{ids[0]}/fork").status_code == 404
    assert api.http.get("/api/history/sessions/no-such").status_code == 404
    assert api.http.get("/api/history/sessions/a:b").status_code == 400


def test_agent_code_cannot_write_history(api: Api, rdb: redis.Redis, prefix: str) -> None:
    """The worker has no credentials, and its storage broker has no history call."""
    session = new_session(api)
    hostile = """
import gc, os
found = [o for o in gc.get_objects() if type(o).__name__ == 'BrokeredStorage']
answers = []
for storage in found[:1]:
    for op in ('record_run', 'append_history', 'history', 'hset'):
        try:
            storage._call(op, session_id='forged', agent_id='evil')
            answers.append('accepted')
        except Exception as exc:
            answers.append(type(exc).__name__ + ': ' + str(exc))
(len(found), answers, sorted(k for k in os.environ if 'REDIS' in k))
"""
    count, answers, env = api.value(session, hostile)
    assert count == 1 and env == []
    assert len(answers) == 4 and all("unknown storage call" in a for a in answers), answers
    P = scope(prefix)
    assert not rdb.exists(f"{P}:session:forged")
    assert rdb.zscore(f"{P}:index:evil", "forged") is None


def test_a_redis_failure_does_not_fail_the_run(redis_server: RedisServer) -> None:
    """History on a Redis that refuses it: the run answers, the failure is counted."""
    prefix = f"histfail{uuid.uuid4().hex[:6]}"
    admin = redis.Redis.from_url(redis_server.url)
    user = f"histfail-{uuid.uuid4().hex[:6]}"
    # A user that may do everything but touch the index: the history write fails.
    admin.execute_command("ACL", "SETUSER", user, "on", ">pw", "~*", "+@all", "-zadd")
    try:
        url = redis_server.url.replace("redis://", f"redis://{user}:pw@")
        settings = base_settings(url, prefix, HISTORY_ENABLED="true")
        with running_server(settings) as server, server.client() as http:
            api = Api(server, http)
            session = api.session()
            assert api.value(session, "6 * 7") == 42
            eventually(
                lambda: "codemode_history_write_failures_total 1.0" in http.get("/metrics").text,
                "the failed write is counted",
            )
            assert "session history not written" in server.output()
    finally:
        admin.execute_command("ACL", "DELUSER", user)
        for key in admin.scan_iter(f"{prefix}:*"):
            admin.delete(key)


def test_file_storage_keeps_the_same_records(tmp_path: Path) -> None:
    settings = {
        "STORAGE_DIR": str(tmp_path),
        "CONTAINER_AUTH_DISABLED": "true",
        "WORKSPACE_ID": "files",
        "HISTORY_ENABLED": "true",
        "HISTORY_MAX_MESSAGES": "4",
    }
    with running_server(settings) as server, server.client() as http:
        api = Api(server, http)
        session = new_session(api, "fileagent")
        for n in range(3):
            api.value(session, f"{n}")
        page = history(api, session)
        hid = page["session_id"]
        assert page["messages_dropped"] == 2 and page["total_messages"] == 4
        folder = tmp_path / "workspaces" / "files" / "history"
        record = json.loads((folder / "sessions" / hid / "session.json").read_text())
        assert set(record) == {"session_id", "agent_id", "created_at", "updated_at", "metadata"}
        assert record["agent_id"] == "fileagent" and isinstance(record["metadata"], str)
        messages = json.loads((folder / "sessions" / hid / "messages.json").read_text())
        assert [m["role"] for m in messages] == ["user", "assistant"] * 2
        assert messages[0]["content"] == "1"
        index = json.loads((folder / "index" / "fileagent.json").read_text())
        assert index[hid] == pytest.approx(datetime.fromisoformat(record["updated_at"]).timestamp())
        forked = http.post(f"/api/history/sessions/{hid}/fork").json()["session_id"]
        listed = http.get("/api/history/sessions", params={"agent_id": "fileagent"}).json()
        assert [s["session_id"] for s in listed["sessions"]] == [forked, hid]
        assert http.delete(f"/api/history/sessions/{hid}").status_code == 200
        assert not (folder / "sessions" / hid).exists()
        assert hid not in json.loads((folder / "index" / "fileagent.json").read_text())


def test_history_is_on_by_default_and_counted_in_the_quota(redis_server: RedisServer) -> None:
    """History is on unless HISTORY_ENABLED=false, and its messages count toward the
    workspace's storage limit: each run adds its bytes to P:usage, the bound gives the
    dropped ones back, a run whose history would not fit is not recorded (the run itself
    still answers), a fork past the limit is a 413, a delete frees its bytes."""
    prefix = f"histq{uuid.uuid4().hex[:6]}"
    admin = redis.Redis.from_url(redis_server.url)
    usage_key = f"{prefix}:ws:{WORKSPACE}:usage"
    settings = base_settings(
        redis_server.url,
        prefix,
        WORKSPACE_ID=WORKSPACE,
        HISTORY_MAX_MESSAGES="4",
        STORAGE_MAX_BYTES="6000",
        SNAPSHOTS_ENABLED="false",
    )

    def used() -> int:
        return int(admin.hget(usage_key, "bytes") or 0)

    def stored(hid: str) -> int:
        return sum(len(m) for m in admin.lrange(f"{prefix}:ws:{WORKSPACE}:messages:{hid}", 0, -1))

    try:
        with running_server(settings) as server, server.client() as http:
            api = Api(server, http)
            session = api.session()
            assert api.value(session, "6 * 7") == 42
            hid = history(api, session)["session_id"]
            assert used() == stored(hid) > 0
            for i in range(3):  # the bound (4 messages) drops the oldest: usage follows
                api.value(session, f"'{i}' * 300")
            assert history(api, session)["total_messages"] == 4
            assert used() == stored(hid)
            # A fork copies the messages, so it needs room for them: 2 copies fit, 4 do not.
            first = http.post(f"/api/history/sessions/{hid}/fork")
            assert first.status_code == 200, first.text
            assert used() == 2 * stored(hid)
            refused = [http.post(f"/api/history/sessions/{hid}/fork") for _ in range(3)]
            assert refused[-1].status_code == 413
            assert "maxStorageBytes" in refused[-1].json()["detail"]
            assert used() <= 6000
            # A run whose history would not fit still answers; its messages are not kept.
            before = history(api, session)["messages"]
            assert api.value(session, "print('b' * 4000)") is None
            assert history(api, session)["messages"] == before
            forked = first.json()["session_id"]
            gone = used() - stored(forked)
            assert http.delete(f"/api/history/sessions/{forked}").status_code == 200
            assert used() == gone
        off = {**settings, "HISTORY_ENABLED": "false"}
        with running_server(off) as server, server.client() as http:
            api = Api(server, http)
            session = api.session()
            assert api.value(session, "1") == 1
            listed = http.get("/api/history/sessions", headers={"X-Session-ID": session})
            assert listed.status_code == 200
            assert all(s["session_id"] != history_id_of(session) for s in listed.json()["sessions"])
            forked_off = http.post(f"/api/history/sessions/{session}/fork")
            assert forked_off.status_code == 403
            assert "HISTORY_ENABLED" in forked_off.json()["detail"]
    finally:
        for key in admin.scan_iter(f"{prefix}:*"):
            admin.delete(key)


def history_id_of(session_id: str) -> str:
    from codemode_session.storage.history import history_id

    return history_id(session_id)


def test_python_client_reads_forks_and_deletes(server: ServerProcess) -> None:
    from codemode_session.client import SessionClient

    with SessionClient(server.url, token=server.token) as client:
        client.create_session()
        assert client.execute("2 + 3").value == 5
        page = client.history()
        assert [m["role"] for m in page["messages"]] == ["user", "assistant"]
        listed = client.list_history("pod-agent")["sessions"]
        assert page["session_id"] in [s["session_id"] for s in listed]
        fork = client.fork_history()
        assert client.history(fork["session_id"])["messages"] == page["messages"]
        client.delete_history(fork["session_id"])
        assert fork["session_id"] not in [
            s["session_id"] for s in client.list_history("pod-agent", limit=1000)["sessions"]
        ]
