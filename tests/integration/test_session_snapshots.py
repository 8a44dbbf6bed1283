"""Session state that outlives its worker and its server (issue 13, item 2), against a
real Redis and a real `codemode serve`: a worker killed by a timeout, from outside, or
released while idle comes back with the session's variables; a restarted server gives a
client-chosen session its state back (to the token that made it, no other); names that
cannot be saved are reported, never dropped silently; `/reset` forgets; snapshots count
toward the workspace's storage quota; FileStorage keeps the same.
"""

from __future__ import annotations

import json
import os
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from tests.conftest import RedisServer
from tests.integration.server_fixture import (
    TOKEN,
    Api,
    ServerProcess,
    base_settings,
    running_server,
)

pytestmark = pytest.mark.redis

WORKSPACE = "wssnap"


@pytest.fixture(scope="module")
def prefix() -> str:
    return f"snap{uuid.uuid4().hex[:8]}"


def settings(redis_server: RedisServer, prefix: str, **extra: str) -> dict[str, str]:
    return base_settings(redis_server.url, prefix, WORKSPACE_ID=WORKSPACE, **extra)


@pytest.fixture(scope="module")
def server(redis_server: RedisServer, prefix: str) -> Iterator[ServerProcess]:
    with running_server(settings(redis_server, prefix, WORKER_IDLE_TIMEOUT="2")) as srv:
        yield srv


@pytest.fixture(scope="module")
def api(server: ServerProcess) -> Iterator[Api]:
    with server.client() as client:
        yield Api(server, client)


def kill_worker(api: Api, session_id: str) -> None:
    pid = api.value(session_id, "import os; os.getpid()")
    os.kill(int(pid), signal.SIGKILL)
    deadline = time.monotonic() + 10
    while Path(f"/proc/{pid}").exists():
        assert time.monotonic() < deadline, "the worker did not die"
        time.sleep(0.02)


SETUP = """
import json as js
x = 41
data = {"rows": [1, 2, 3]}
alias = data
def bump(n):
    return n + x
class Counter:
    def __init__(self):
        self.n = 0
    def hit(self):
        self.n += 1
        return self.n + x
c = Counter()
c.hit()
"""


def test_a_worker_killed_from_outside_comes_back_with_the_state(api: Api) -> None:
    session = api.session()
    first = api.execute(session, SETUP)
    assert first["error"] is None
    assert first["snapshot"]["unsaved"] == {}
    assert {"x", "data", "alias", "bump", "Counter", "c", "js"} <= set(first["snapshot"]["saved"])
    kill_worker(api, session)
    after = api.execute(session, "x = x + 1\n(bump(1), c.hit(), alias is data, js.dumps([1]))")
    assert after["error"] is None, after["error"]
    # bump sees the x of this run (its globals are the session's), c kept its count,
    # two names for one object are still one object, the module came back by name.
    assert after["value"] == [43, 44, True, "[1]"]
    assert after["worker_restarted"] is True
    assert "x" in after["state_restored"]["restored"]
    assert after["state_restored"]["lost"] == {}


def test_a_timeout_kill_restores_the_state_of_the_run_before(api: Api) -> None:
    session = api.session()
    api.value(session, "y = 'kept'")
    result = api.execute(session, "y = 'changed'\nimport time\ntime.sleep(30)", timeout=1)
    assert result["error_type"] == "TimeoutError"
    assert "restored" in result["error"]
    assert result["state_restored"]["restored"] == ["y"]
    # The run that timed out never finished, so its change is not in the snapshot.
    assert api.value(session, "y") == "kept"


def test_a_name_that_cannot_be_saved_is_reported_and_the_rest_restored(api: Api) -> None:
    session = api.session()
    result = api.execute(session, "import threading\nlock = threading.Lock()\nz = 7")
    assert "lock" in result["snapshot"]["unsaved"]
    assert "cannot pickle" in result["snapshot"]["unsaved"]["lock"]
    deadline = time.monotonic() + 10  # /info shows the stored snapshot (written after the reply)
    while (info := api.http.get("/info", headers={"X-Session-ID": session}).json())["session"][
        "snapshot"
    ] is None:
        assert time.monotonic() < deadline, "/info did not show the snapshot"
        time.sleep(0.05)
    assert "lock" in info["session"]["snapshot"]["unsaved"]
    assert info["session"]["snapshot"]["saved"] == ["z", "threading"]  # modules by name
    kill_worker(api, session)
    after = api.execute(session, "z")
    assert after["value"] == 7
    assert "lock" in after["state_restored"]["lost"]
    assert "z" in after["state_restored"]["restored"]
    assert api.execute(session, "lock")["error_type"] == "NameError"


def test_an_idle_release_keeps_the_state(api: Api) -> None:
    session = api.session()
    api.value(session, "w = [1, 2]")
    deadline = time.monotonic() + 30
    while True:  # WORKER_IDLE_TIMEOUT=2: the sweeper (each second) releases the worker
        time.sleep(3)
        result = api.execute(session, "w + [3]")
        assert result["value"] == [1, 2, 3]
        if result["state_released"] is not None:
            break
        assert time.monotonic() < deadline, "the idle worker was not released within 30s"
    assert result["state_released"] is not None
    assert "restored" in result["state_released"]


def test_reset_forgets_the_state(api: Api) -> None:
    session = api.session()
    api.value(session, "v = 1")
    assert api.http.post("/reset", headers={"X-Session-ID": session}).status_code == 200
    assert api.execute(session, "v")["error_type"] == "NameError"
    kill_worker(api, session)
    assert api.execute(session, "v")["error_type"] == "NameError"


def test_snapshots_are_kept_in_the_workspace_and_counted(
    api: Api, redis_server: RedisServer, prefix: str
) -> None:
    session = api.session()
    api.value(session, "blob = b'x' * 200_000")
    client = redis.Redis.from_url(redis_server.url)
    scope = f"{prefix}:ws:{WORKSPACE}"
    deadline = time.monotonic() + 10
    while True:
        keys = [k.decode() for k in client.hkeys(f"{scope}:snapshots")]
        sizes = {k: int(client.hget(f"{scope}:snapshots", k) or 0) for k in keys}
        if any(size > 200_000 for size in sizes.values()):
            break
        assert time.monotonic() < deadline, "the snapshot was not written"
        time.sleep(0.05)
    big = next(k for k, size in sizes.items() if size > 200_000)
    record = client.hgetall(f"{scope}:snapshot:{big}")
    meta = json.loads(record[b"meta"])
    assert meta["saved"] == ["blob"] and meta["bytes"] == len(record[b"data"])
    assert session not in big  # a server-issued id is never stored as such
    assert int(client.hget(f"{scope}:usage", "bytes") or 0) >= sizes[big]
    # Ending the session deletes its snapshot and gives the bytes back.
    used = int(client.hget(f"{scope}:usage", "bytes") or 0)
    assert api.http.delete("/sessions", headers={"X-Session-ID": session}).status_code == 200
    deadline = time.monotonic() + 10
    while client.exists(f"{scope}:snapshot:{big}"):
        assert time.monotonic() < deadline, "the snapshot was not deleted"
        time.sleep(0.05)
    assert int(client.hget(f"{scope}:usage", "bytes") or 0) == used - sizes[big]


def test_a_restarted_server_gives_a_client_chosen_session_its_state(
    redis_server: RedisServer, prefix: str
) -> None:
    session = f"client-{uuid.uuid4().hex}"
    env = settings(redis_server, prefix)
    with running_server(env) as first, first.client() as http:
        api = Api(first, http)
        api.value(session, "kept = {'a': 1}")
    with running_server(env) as second:
        with second.client() as http:
            assert Api(second, http).value(session, "kept") == {"a": 1}
        # Another token under the same id gets a session of its own, not this state.
        other = {**env, "CONTAINER_AUTH_TOKEN": TOKEN + "-other"}
    with running_server(other) as third, third.client() as http:
        result = Api(third, http).execute(session, "kept")
        assert result["error_type"] == "NameError"


def test_a_shared_state_id_is_one_state_for_every_server_session(
    redis_server: RedisServer, prefix: str
) -> None:
    env = settings(redis_server, prefix, SESSION_STATE_ID="cs-one", MAX_SESSIONS="1")
    with running_server(env) as srv, srv.client() as http:
        api = Api(srv, http)
        first = api.session()
        api.value(first, "counter = 1")
        assert http.delete("/sessions", headers={"X-Session-ID": first}).status_code == 200
        second = api.session()
        assert api.value(second, "counter += 1\ncounter") == 2


def test_a_snapshot_over_the_quota_is_reported(redis_server: RedisServer) -> None:
    env = base_settings(
        redis_server.url,
        f"snapq{uuid.uuid4().hex[:8]}",
        WORKSPACE_ID="wsq",
        STORAGE_MAX_BYTES="100000",
    )
    with running_server(env) as srv, srv.client() as http:
        api = Api(srv, http)
        session = api.session()
        api.value(session, "big = b'x' * 300_000")
        deadline = time.monotonic() + 10
        while True:
            snapshot: dict[str, Any] = api.execute(session, "1")["snapshot"]
            if "previous_error" in snapshot:
                break
            assert time.monotonic() < deadline, "the quota error was not reported"
            time.sleep(0.05)
        assert "maxStorageBytes" in snapshot["previous_error"]


def test_file_storage_keeps_snapshots_too(tmp_path: Path) -> None:
    env = {
        "STORAGE_DIR": str(tmp_path / "store"),
        "WORKSPACE_ID": WORKSPACE,
        "CONTAINER_AUTH_TOKEN": TOKEN,
        "WORKER_SPARES": "1",
    }
    with running_server(env) as srv, srv.client() as http:
        api = Api(srv, http)
        session = api.session()
        api.value(session, "q = 'on disk'")
        kill_worker(api, session)
        assert api.value(session, "q") == "on disk"
    stored = list((tmp_path / "store").rglob("snapshots/*.bin"))
    assert len(stored) == 1


def test_a_forked_state_starts_from_the_source_and_then_diverges(
    redis_server: RedisServer, prefix: str
) -> None:
    source, fork = f"src-{uuid.uuid4().hex[:8]}", f"dst-{uuid.uuid4().hex[:8]}"
    base = settings(redis_server, prefix, MAX_SESSIONS="1")
    with running_server({**base, "SESSION_STATE_ID": source}) as srv, srv.client() as http:
        api = Api(srv, http)
        api.value(api.session(), "x = 'source'")
        health = http.get("/health").json()
        assert health["state"]["state_id"] == source
    forked_env = {**base, "SESSION_STATE_ID": fork, "SESSION_FORK_FROM": source}
    with running_server(forked_env) as srv, srv.client() as http:
        api = Api(srv, http)
        session = api.session()
        first = api.execute(session, "x")
        assert first["value"] == "source"
        assert first["state_restored"]["forked_from"] == source
        api.value(session, "x = 'fork'")
        page = http.get(f"/api/history/sessions/{fork}").json()
        contents = [m["content"] for m in page["messages"]]
        assert contents[0] == "x = 'source'" and contents[-2] == "x = 'fork'"
        deadline = time.monotonic() + 10
        while (http.get("/health").json()["state"]["snapshot"] or {}).get("saved") != ["x"]:
            assert time.monotonic() < deadline, "/health did not report the snapshot"
            time.sleep(0.05)
        assert http.get("/health").json()["state"]["restore"]["restored"] == ["x"]
        deadline = time.monotonic() + 10
        while http.get("/health").json()["state"]["history_messages"] != len(page["messages"]):
            assert time.monotonic() < deadline, "/health did not count the history"
            time.sleep(0.05)
    # A restart of the fork keeps its own state (the fork happens once).
    with running_server(forked_env) as srv, srv.client() as http:
        api = Api(srv, http)
        assert api.value(api.session(), "x") == "fork"
    with running_server({**base, "SESSION_STATE_ID": source}) as srv, srv.client() as http:
        api = Api(srv, http)
        assert api.value(api.session(), "x") == "source"


def test_a_shared_state_keeps_its_worker_between_sessions_and_loads_before_ready(
    redis_server: RedisServer, prefix: str
) -> None:
    env = settings(redis_server, prefix, SESSION_STATE_ID=f"kept-{uuid.uuid4().hex[:8]}")
    with running_server(env) as srv, srv.client() as http:
        api = Api(srv, http)
        first = api.session()
        pid = api.value(first, "import os\nk = 'v'\nos.getpid()")
        assert http.delete("/sessions", headers={"X-Session-ID": first}).status_code == 200
        second = api.session()
        # The next session of the same state takes the worker as it was: no restore.
        result = api.execute(second, "(os.getpid(), k)")
        assert result["value"] == [pid, "v"] and result["state_restored"] is None
    with running_server(env) as srv, srv.client() as http:
        # /ready answers 503 until the state is loaded into a worker, then 200.
        deadline = time.monotonic() + 30
        while httpx.get(f"{srv.url}/ready", timeout=5).status_code != 200:
            assert time.monotonic() < deadline, "the state was not loaded within 30s"
            time.sleep(0.05)
        health = http.get("/health").json()
        assert health["state"]["restore"]["restored"] == ["k", "os"]  # loaded at start
        api = Api(srv, http)
        result = api.execute(api.session(), "k")
        assert result["value"] == "v" and result["state_restored"]["restored"] == ["k", "os"]


def test_a_shared_state_stays_unready_while_its_storage_refuses_and_loses_nothing(
    redis_server: RedisServer, prefix: str
) -> None:
    """After a Redis restart the workspace's ACL user is gone until the operator provisions
    it again: the server must wait (not ready, runs refused with 503) rather than start
    empty and store that empty state over the saved one."""
    admin = redis.Redis.from_url(redis_server.url)
    user, password = f"snapu{uuid.uuid4().hex[:6]}", uuid.uuid4().hex

    def provision() -> None:
        admin.execute_command(
            "ACL", "SETUSER", user, "reset", "on", f">{password}", f"~{prefix}:*", "+@all"
        )

    provision()
    url = f"redis://{user}:{password}@127.0.0.1:{redis_server.port}/0"
    env = base_settings(url, prefix, WORKSPACE_ID=WORKSPACE, SESSION_STATE_ID="unready")
    try:
        with running_server(env) as srv, srv.client() as http:
            api = Api(srv, http)
            api.value(api.session(), "saved = 41")
            assert http.get("/ready").status_code == 200
        admin.execute_command("ACL", "DELUSER", user)
        with running_server(env) as srv, srv.client() as http:
            # Unready from the start; once a load has been tried, the reason says why.
            deadline = time.monotonic() + 60
            while True:
                ready = httpx.get(f"{srv.url}/ready", timeout=5)
                assert ready.status_code == 503
                assert "saved state" in ready.json()["reason"]
                if "authentication" in ready.json()["reason"].lower():
                    break
                assert time.monotonic() < deadline, ready.json()["reason"]
                time.sleep(0.1)
            session = http.post("/sessions").json()["session_id"]
            refused = httpx.post(  # the suite's client fails on any 5xx: this one is meant
                f"{srv.url}/execute",
                json={"code": "saved = 0"},
                headers=srv.headers(session),
                timeout=30,
            )
            assert refused.status_code == 503, refused.text
            assert "not loaded yet" in refused.json()["detail"]
            provision()
            deadline = time.monotonic() + 30
            while httpx.get(f"{srv.url}/ready", timeout=5).status_code != 200:
                assert time.monotonic() < deadline, "the server did not become ready"
                time.sleep(0.1)
            assert Api(srv, http).value(session, "saved + 1") == 42
    finally:
        admin.execute_command("ACL", "DELUSER", user)
        admin.close()
