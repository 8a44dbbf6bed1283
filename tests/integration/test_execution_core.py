"""Executing code in a real server: state, values, output, errors, limits, crashes."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

import pytest
from codemode_session.limits import pids_cgroup_dir

from tests.conftest import RedisServer
from tests.integration.server_fixture import Api, ServerProcess, base_settings, running_server

pytestmark = pytest.mark.redis

T = TypeVar("T")


def user_tasks() -> int:
    """Tasks (threads) this user runs now: what RLIMIT_NPROC counts for a non-root user."""
    uid, total = os.geteuid(), 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            status = Path(f"/proc/{entry}/status").read_text()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        if int(fields.get("Uid", "-1").split()[0]) == uid:
            total += int(fields.get("Threads", "1"))
    return total


# As root a pids cgroup of the worker's own holds 64; as any other user RLIMIT_NPROC
# counts all of the user's tasks, so leave room for what already runs (tests, servers).
MAX_PROCESSES = 64 if os.geteuid() == 0 else user_tasks() + 200
WORKER_CGROUPS = Path("/sys/fs/cgroup/pids/codemode-workers")


def empty_worker_cgroups() -> set[str]:
    if not WORKER_CGROUPS.is_dir():
        return set()
    empty = set()
    for directory in WORKER_CGROUPS.iterdir():
        try:
            if directory.is_dir() and not (directory / "cgroup.procs").read_text().split():
                empty.add(directory.name)
        except OSError:
            continue
    return empty


@pytest.fixture(scope="module")
def server(redis_server: RedisServer) -> Iterator[ServerProcess]:
    settings = base_settings(
        redis_server.url,
        f"exec{uuid.uuid4().hex[:8]}",
        WORKER_MEMORY_MB="256",
        WORKER_MAX_PROCESSES=str(MAX_PROCESSES),
        MAX_SESSIONS="64",
        WORKER_SPARES="2",
    )
    leftovers_before = empty_worker_cgroups()
    with running_server(settings) as srv:
        yield srv
    # Crashes, timeouts, fork bombs and shutdown leave no pids cgroup behind.
    deadline = time.monotonic() + 10
    while (leaked := empty_worker_cgroups() - leftovers_before) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not leaked, f"worker cgroups left behind: {sorted(leaked)}"


@pytest.fixture(scope="module")
def api(server: ServerProcess) -> Iterator[Api]:
    with server.client() as client:
        yield Api(server, client)


@pytest.fixture
def session(api: Api) -> Iterator[str]:
    session_id = api.session()
    yield session_id
    api.http.delete("/sessions", headers={"X-Session-ID": session_id})


def assert_server_fine(api: Api, session: str) -> None:
    assert api.server.alive, api.server.output()
    assert api.http.get("/health").status_code == 200
    assert api.value(session, "sum(range(10))") == 45


def processes_in_session(sid: int) -> list[int]:
    """Pids whose session id is `sid` (a worker and whatever it forked)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2 :].split()
        if fields[0] != "Z" and int(fields[3]) == sid:
            found.append(int(entry))
    return found


# ---- state and values ----------------------------------------------------------------


def test_globals_persist_within_a_session_only(api: Api, session: str) -> None:
    api.value(session, "counter = 41\nimport json")
    assert api.value(session, "counter += 1\ncounter") == 42
    assert api.value(session, "json.dumps({'a': counter})") == '{"a": 42}'
    other = api.session()
    result = api.execute(other, "counter")
    assert result["error_type"] == "NameError"
    assert "name 'counter' is not defined" in result["error"]


def test_response_fields(api: Api, session: str) -> None:
    result = api.execute(session, "print('hi')\n'done'")
    assert result["value"] == "done"
    assert result["stdout"] == "hi\n"
    assert result["error"] is None
    assert result["session_id"] == session
    assert result["worker_restarted"] is False
    assert 0 < result["execution_time_ms"] < 10_000


def test_last_expression_value(api: Api, session: str) -> None:
    assert api.value(session, "x = 3\nx * 14") == 42
    assert api.value(session, "[1, 'a', None, {'k': (1, 2)}]") == [1, "a", None, {"k": [1, 2]}]
    assert api.value(session, "x = 5") is None
    assert api.value(session, "object") == "<class 'object'>"


def test_stdout_and_stderr(api: Api, session: str) -> None:
    result = api.execute(
        session, "import sys\nfor i in range(3):\n    print(i)\nprint('warning', file=sys.stderr)"
    )
    assert result["stdout"] == "0\n1\n2\n"
    assert result["stderr"] == "warning\n"


def test_huge_stdout_is_truncated(api: Api, session: str) -> None:
    result = api.execute(session, "print('x' * 10 * 1024 * 1024)")
    assert result["error"] is None
    stdout = result["stdout"]
    assert stdout.startswith("xxxx")
    assert "[output truncated:" in stdout[-100:]
    assert len(stdout) <= 1024 * 1024 + 200
    assert_server_fine(api, session)


def test_top_level_await(api: Api, session: str) -> None:
    code = (
        "import asyncio\nasync def slow(v):\n    await asyncio.sleep(0.01)\n    return v\n"
        "results = await asyncio.gather(slow(1), slow(2))\nresults"
    )
    assert api.value(session, code) == [1, 2]
    assert api.value(session, "await slow('again')") == "again"


def test_exception_traceback_shows_the_agents_line(api: Api, session: str) -> None:
    code = (
        "def parse(text):\n    return int(text)\n\n"
        "values = ['1', 'two']\n[parse(v) for v in values]"
    )
    result = api.execute(session, code)
    assert result["error_type"] == "ValueError"
    assert result["value"] is None
    error = result["error"]
    assert "Traceback (most recent call last)" in error
    assert "line 5" in error and "line 2, in parse" in error
    assert "invalid literal for int() with base 10: 'two'" in error
    assert "codemode_session" not in error
    # An error does not lose state.
    assert api.value(session, "values") == ["1", "two"]


def test_syntax_error(api: Api, session: str) -> None:
    result = api.execute(session, "def f(:\n    pass")
    assert result["error_type"] == "SyntaxError"
    assert "line 1" in result["error"]


def test_reset_clears_globals(api: Api, session: str) -> None:
    api.value(session, "kept = 1")
    response = api.http.post("/reset", headers={"X-Session-ID": session})
    assert response.status_code == 200 and response.json()["status"] == "reset"
    assert api.execute(session, "kept")["error_type"] == "NameError"
    assert api.value(session, "artifacts.__class__.__name__") == "ArtifactsNamespace"


def test_info_for_a_session(api: Api, session: str) -> None:
    info = api.http.get("/info", headers={"X-Session-ID": session}).json()
    assert info["workspace_id"] is None
    assert info["default_timeout"] == 30 and info["max_execution_time"] == 60
    assert info["allow_runtime_deps"] is False


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({}, 422),
        ({"code": 5}, 422),
        ({"code": "1", "extra": True}, 422),
        ({"code": "1", "timeout": -1}, 422),
        ({"code": "1", "timeout": 0}, 422),
        ({"code": "1", "timeout": 61}, 422),
        ({"code": "1", "timeout": "soon"}, 422),
        ({"code": "#" * (1024 * 1024 + 1)}, 413),
    ],
)
def test_bad_execute_requests(api: Api, session: str, body: dict[str, object], status: int) -> None:
    response = api.http.post("/execute", json=body, headers={"X-Session-ID": session})
    assert response.status_code == status, response.text
    assert response.json()["detail"]


def test_execute_with_malformed_json(api: Api, session: str) -> None:
    response = api.http.post(
        "/execute",
        content=b'{"code": ',
        headers={"X-Session-ID": session, "Content-Type": "application/json"},
    )
    assert response.status_code == 422


# ---- timeouts, crashes, limits ---------------------------------------------------------


def test_infinite_loop_is_killed_and_the_next_run_works(api: Api, session: str) -> None:
    api.value(session, "before = 'set'")
    result = api.execute(session, "while True:\n    pass", timeout=1)
    assert result["worker_restarted"] is True
    assert result["error_type"] == "TimeoutError"
    assert "timeout of 1s" in result["error"]
    # The state saved after the run before comes back in the new worker (snapshots).
    assert "state as of its previous run was restored" in result["error"]
    assert "before" in result["state_restored"]["restored"]
    assert 1000 <= result["execution_time_ms"] < 10_000
    assert api.value(session, "before") == "set"
    assert_server_fine(api, session)


def test_sleeping_past_the_timeout(api: Api, session: str) -> None:
    result = api.execute(session, "import time\ntime.sleep(30)", timeout=0.5)
    assert result["worker_restarted"] is True and result["error_type"] == "TimeoutError"
    assert_server_fine(api, session)


def test_os_exit_restarts_the_worker(api: Api, session: str) -> None:
    result = api.execute(session, "import os\nos._exit(1)")
    assert result["worker_restarted"] is True
    assert result["error_type"] == "WorkerCrashed"
    assert "exited with status 1" in result["error"] and "lost" in result["error"]
    assert_server_fine(api, session)


def test_segfault_restarts_the_worker(api: Api, session: str) -> None:
    result = api.execute(session, "import ctypes\nctypes.string_at(0)")
    assert result["worker_restarted"] is True
    assert result["error_type"] == "WorkerCrashed"
    assert "signal 11" in result["error"]
    assert_server_fine(api, session)


def test_kill_self_restarts_the_worker(api: Api, session: str) -> None:
    result = api.execute(session, "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)")
    assert result["worker_restarted"] is True and "signal 9" in result["error"]
    assert_server_fine(api, session)


def test_failing_repr_does_not_restart_the_worker(api: Api, session: str) -> None:
    api.value(session, "kept = 1")
    result = api.execute(
        session,
        "class Odd:\n    def __repr__(self):\n        raise RuntimeError('cannot show')\nOdd()",
    )
    assert result["worker_restarted"] is False and result["error_type"] == "RuntimeError"
    assert api.value(session, "kept") == 1


def test_exit_does_not_end_the_session(api: Api, session: str) -> None:
    api.value(session, "kept = 1")
    result = api.execute(session, "exit(3)")
    assert result["error_type"] == "SystemExit" and result["worker_restarted"] is False
    assert api.value(session, "kept") == 1


def test_huge_allocation_is_refused(api: Api, session: str) -> None:
    result = api.execute(session, "block = bytearray(8 * 1024 ** 3)")
    assert result["error_type"] == "MemoryError" or result["worker_restarted"], result
    assert_server_fine(api, session)


def test_growing_memory_is_contained(api: Api, session: str) -> None:
    code = (
        "def grow():\n    chunks = []\n    while True:\n"
        "        chunks.append(bytearray(16 * 1024 * 1024))\ngrow()"
    )
    result = api.execute(session, code, timeout=30)
    assert result["error_type"] == "MemoryError" or result["worker_restarted"], result
    # The limit holds: the worker never got near the size asked for.
    assert_server_fine(api, session)
    # Memory is usable again after the bomb.
    assert api.value(session, "len(bytearray(64 * 1024 * 1024))") == 64 * 1024 * 1024


def test_fork_bomb_is_contained(api: Api, session: str) -> None:
    worker_pid = api.value(session, "import os\nos.getpid()")
    cgroup = pids_cgroup_dir(worker_pid)
    if os.geteuid() == 0 and (cgroup is None or not cgroup.exists()):
        pytest.skip("root without a writable pids cgroup: nothing here would bound a fork bomb")
    result = api.execute(session, "import os\nwhile True:\n    os.fork()", timeout=3)
    # Either the fork limit stopped the loop with an error, or the timeout killed it.
    if not result["worker_restarted"]:
        assert result["error_type"] == "BlockingIOError", result
        assert "Resource temporarily unavailable" in result["error"]
    assert_server_fine(api, session)
    if cgroup is not None and cgroup.exists():  # root: the pids cgroup's limit held
        assert cgroup.joinpath("pids.max").read_text().strip() == str(MAX_PROCESSES)
        peak = cgroup / "pids.peak"
        if peak.exists():
            assert int(peak.read_text()) <= MAX_PROCESSES
    # Nothing the bomb forked survives it.
    pid_now = api.value(session, "os.getpid()")
    assert processes_in_session(pid_now) == [pid_now]
    assert processes_in_session(worker_pid) in ([], [worker_pid])


def test_fork_in_a_cell_does_not_answer_for_the_worker(api: Api, session: str) -> None:
    code = "import os\npid = os.fork()\n'child' if pid == 0 else 'parent'"
    assert api.value(session, code) == "parent"
    assert api.value(session, "1 + 1") == 2
    assert api.value(session, "'next'") == "next"


def test_subprocesses_still_work(api: Api, session: str) -> None:
    code = (
        "import subprocess\nsubprocess.run(['echo', 'hi'], capture_output=True, text=True).stdout"
    )
    assert api.value(session, code) == "hi\n"


def test_fork_and_setsid_children_do_not_outlive_the_cell(api: Api, session: str) -> None:
    code = (
        "import os, time\npids = []\nfor detach in (False, True):\n"
        "    pid = os.fork()\n    if pid == 0:\n        if detach:\n            os.setsid()\n"
        "        time.sleep(300)\n        os._exit(0)\n    pids.append(pid)\npids"
    )
    worker_pid = api.value(session, "import os\nos.getpid()")
    children = api.value(session, code)
    assert len(children) == 2
    in_session = Path(f"/proc/{children[0]}").exists()
    assert not in_session, "a forked child outlived its cell"
    if Path(f"/sys/fs/cgroup/pids/codemode-workers/{worker_pid}").exists():
        # Where the pids cgroup exists, a child that left the session is caught too.
        assert not Path(f"/proc/{children[1]}").exists(), "a setsid() child outlived its cell"
    assert_server_fine(api, session)


def test_text_that_is_not_utf8(api: Api, session: str) -> None:
    result = api.execute(session, "print('bad \\udcff')\n{'k\\udcff': 'v\\ud800'}")
    assert result["stdout"] == "bad \\udcff\n"
    assert result["value"] == {"k\\udcff": "v\\ud800"}
    error = api.execute(session, "raise ValueError('\\udcff')")
    assert error["error"].endswith("ValueError: \\udcff")
    assert_server_fine(api, session)


def test_huge_values_and_errors_are_truncated_not_fatal(api: Api, session: str) -> None:
    big = api.execute(session, "big = ['x' * 1_000_000] * 100\nbig")
    assert big["worker_restarted"] is False and big["error"] is None
    assert isinstance(big["value"], str) and big["value"].endswith("...[truncated]")
    assert len(big["value"]) < 2 * 1024 * 1024
    assert api.value(session, "len(big)") == 100
    for code in (
        "[bytes(1_000_000)] * 10_000",
        "bytes(200 * 1024 * 1024)",
        "{str(i): 'v' * 1000 for i in range(100_000)}",
    ):
        result = api.execute(session, code)
        assert result["worker_restarted"] is False and result["error"] is None, result
        assert result["value"].endswith("...[truncated]")
    huge_error = api.execute(session, "raise ValueError('e' * 10_000_000)")
    assert huge_error["worker_restarted"] is False
    assert "...[truncated]..." in huge_error["error"]
    assert huge_error["error"].startswith("Traceback")
    assert api.value(session, "len(big)") == 100


@pytest.mark.parametrize(
    "frame",
    [
        "b'\\x00\\x00\\x00\\x05hello'",  # not JSON
        "len(b'[1]').to_bytes(4, 'big') + b'[1]'",  # not an object
        "len(b'{\"value\": 1}').to_bytes(4, 'big') + b'{\"value\": 1}'",  # a forged reply
        "b'\\xff\\xff\\xff\\xff'",
    ],  # an impossible size
)
def test_writing_to_the_worker_channel(api: Api, session: str, frame: str) -> None:
    code = (
        "import sys, socket\nchannel = socket.socket(fileno=int(sys.argv[1]))\n"
        f"channel.sendall({frame})\n'sent'"
    )
    result = api.execute(session, code)
    assert result["worker_restarted"] is True, result
    assert result["error_type"] == "WorkerCrashed" and "lost" in result["error"]
    # Replies are not shifted: every later run gets its own answer.
    assert api.value(session, "'first'") == "first"
    assert api.value(session, "'second'") == "second"
    assert_server_fine(api, session)


def server_workers(api: Api) -> set[int]:
    """Pids of the server's worker processes (sessions' and spares): its children that
    run the worker, and the copies its worker template forked."""
    parents: dict[int, int] = {}
    commands: dict[int, bytes] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            commands[int(entry)] = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        parents[int(entry)] = int(stat[stat.rfind(")") + 2 :].split()[1])
    server = api.server.proc.pid
    templates = {
        pid
        for pid, parent in parents.items()
        if parent == server and b"codemode_session.template" in commands[pid]
    }
    return {
        pid
        for pid, parent in parents.items()
        if (parent == server and b"codemode_session.worker" in commands[pid]) or parent in templates
    }


def wait_until(
    predicate: Callable[[], T | None], what: str, timeout: float = 30.0, interval: float = 0.05
) -> T:
    """Poll until predicate() is truthy and return its value; fail after `timeout` s."""
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)
    return value


def test_ending_a_running_session_leaves_no_worker(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    """On a server of its own, whose only workers are this session's and the spares, so
    how many there should be is known (the module's server also holds other tests')."""
    spares = 2
    settings = base_settings(
        redis_server.url,
        f"end{uuid.uuid4().hex[:8]}",
        WORKER_SPARES=str(spares),
        WORKER_MAX_PROCESSES=str(MAX_PROCESSES),
    )
    with running_server(settings) as server, server.client() as client:
        api = Api(server, client)
        session = api.session()
        worker_pid = api.value(session, "import os\nos.getpid()")

        def refilled() -> set[int] | None:
            workers = server_workers(api)
            return workers if len(workers) == 1 + spares else None

        def killed_one_gone() -> set[int] | None:
            workers = server_workers(api)
            return workers if worker_pid not in workers else None

        # Taking a spare for the session started a refill.
        before = wait_until(refilled, f"the session's worker and {spares} spares")
        assert worker_pid in before
        started = tmp_path / "started"
        code = (
            f"import pathlib, time\npathlib.Path({str(started)!r}).write_text('1')\n"
            "time.sleep(5)\n'finished'"
        )
        with ThreadPoolExecutor(max_workers=1) as pool:
            running = pool.submit(api.execute, session, code)
            wait_until(lambda: started.exists() or running.done(), "the run to start")
            assert not running.done(), running.result()
            ended = api.http.delete("/sessions", headers={"X-Session-ID": session})
            assert ended.status_code == 200
            result = running.result(timeout=30)
        assert result["value"] is None and result["error_type"] == "WorkerCrashed"
        # Ending a session takes nothing from the pool, so nothing is refilled: the set is
        # final once the killed worker is gone.
        after = wait_until(killed_one_gone, f"worker {worker_pid} gone")
        assert worker_pid not in after
        assert len(after) == len(before) - 1, (before, after)


# ---- concurrency ------------------------------------------------------------------------


def test_fifty_concurrent_executions_over_five_sessions(api: Api) -> None:
    sessions = [api.session() for _ in range(5)]
    for index, session in enumerate(sessions):
        api.value(session, f"counter = 0\nmine = {index}")

    def bump(session: str) -> tuple[str, int, int]:
        value = api.value(session, "import time\ncounter += 1\ntime.sleep(0.005)\n[counter, mine]")
        return session, value[0], value[1]

    with ThreadPoolExecutor(max_workers=50) as pool:
        results = list(pool.map(bump, [s for s in sessions for _ in range(10)]))
    assert len(results) == 50
    for index, session in enumerate(sessions):
        counts = sorted(count for s, count, _ in results if s == session)
        assert counts == list(range(1, 11)), (session, counts)
        assert {mine for s, _, mine in results if s == session} == {index}
        assert api.value(session, "counter") == 10
    for session in sessions:
        api.http.delete("/sessions", headers={"X-Session-ID": session})


def test_a_killed_worker_template_is_started_again(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    """Agent code runs as the template's uid and may kill it: the next session's worker
    still comes (a new template, or a spawned worker meanwhile)."""
    settings = base_settings(redis_server.url, f"tpl{uuid.uuid4().hex[:8]}", WORKER_SPARES="0")
    with running_server(settings) as server, server.client() as client:
        api = Api(server, client)
        session = api.session()
        template = api.value(session, "import os\nos.getppid()")
        assert b"codemode_session.template" in Path(f"/proc/{template}/cmdline").read_bytes()
        api.value(session, f"import signal\nos.kill({template}, signal.SIGKILL)\n1")
        for _ in range(3):
            other = api.session()
            assert api.value(other, "6 * 7") == 42
        assert api.value(session, "'still here'") == "still here"
