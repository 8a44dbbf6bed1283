"""`codemode exec`'s fast path against a real `codemode serve` with a state id (as in a
CodeSession pod): a remembered address runs the code with the standard library only and
the state carries over; another session's server there, a dead address or a wrong token
fall back (None) and forget the entry; the file is the user's alone; port-forwards and
servers without a state id are never remembered."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from codemode_operator import exec_cache

from tests.conftest import RedisServer, free_port
from tests.integration.server_fixture import TOKEN, ServerProcess, base_settings, running_server

pytestmark = pytest.mark.redis


@pytest.fixture(autouse=True)
def cache_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "kubeconfig"))
    return tmp_path / "cache"


@pytest.fixture(scope="module")
def server(redis_server: RedisServer) -> Iterator[ServerProcess]:
    env = base_settings(
        redis_server.url, f"ec{uuid.uuid4().hex[:6]}", WORKSPACE_ID="w", SESSION_STATE_ID="cs.one"
    )
    with running_server(env) as srv:
        yield srv


def test_what_is_remembered() -> None:
    assert exec_cache.cacheable("http://10.1.2.3:8080", "cs.x")
    assert not exec_cache.cacheable("http://127.0.0.1:41234", "cs.x")  # a port-forward
    assert not exec_cache.cacheable("http://10.1.2.3:8080", None)


def test_a_remembered_session_runs_code_and_keeps_its_state(
    server: ServerProcess, cache_home: Path
) -> None:
    exec_cache.write_entry("team", "agent-1", server.url, TOKEN, "cs.one")
    (entry,) = cache_home.rglob("*.json")
    assert stat.S_IMODE(entry.stat().st_mode) == 0o600
    first = exec_cache.try_execute("team", "agent-1", "y = 20\ny + 1", None)
    assert first is not None and first["value"] == 21
    second = exec_cache.try_execute("team", "agent-1", "y * 2", None)
    assert second is not None and second["value"] == 40 and second["error"] is None
    failed = exec_cache.try_execute("team", "agent-1", "1/0", None)
    assert failed is not None and failed["error_type"] == "ZeroDivisionError"
    # Another namespace or kubeconfig is another entry.
    assert exec_cache.try_execute("other-ns", "agent-1", "1", None) is None


def test_calls_to_one_session_share_its_live_interpreter(server: ServerProcess) -> None:
    """The same server session every call: what cannot be saved (a lock) is still there,
    because the worker the last call left is used again rather than a new one loading
    the saved state."""
    exec_cache.write_entry("team", "live", server.url, TOKEN, "cs.one")
    first = exec_cache.try_execute(
        "team", "live", "import threading\nlock = threading.Lock()", None
    )
    assert first is not None and first["error"] is None
    second = exec_cache.try_execute("team", "live", "type(lock).__name__", None)
    assert second is not None and second["value"] == "lock", second
    assert second["worker_restarted"] is False and second["state_restored"] is None
    assert first["session_id"] == second["session_id"]


def test_the_fast_path_streams_output_as_the_code_runs(server: ServerProcess) -> None:
    """`codemode exec` prints as the code runs: the fast path hands each piece over as it
    arrives, and the result after the last of them."""
    exec_cache.write_entry("team", "agent-1", server.url, TOKEN, "cs.one")
    pieces: list[tuple[str, str]] = []
    code = "import sys\nprint('out')\nprint('err', file=sys.stderr)\n'v'"
    result = exec_cache.try_execute(
        "team", "agent-1", code, None, lambda stream, text: pieces.append((stream, text))
    )
    assert pieces == [("stdout", "out\n"), ("stderr", "err\n")]
    assert result is not None and result["value"] == "v" and result["stdout"] == "out\n"


def test_codemode_exec_prints_as_the_code_runs(server: ServerProcess, cache_home: Path) -> None:
    """The CLI prints a line before the code goes on: the code waits until the test has
    read that line from the CLI's stdout (the test answers with a file in the state's
    working folder, which every server session of a CodeSession pod shares)."""
    from codemode_session.client import SessionClient

    exec_cache.write_entry("team", "agent-1", server.url, TOKEN, "cs.one")
    code = (
        "import os, time\nprint('first', flush=True)\ndeadline = time.time() + 30\n"
        "while not os.path.exists('ack') and time.time() < deadline:\n    time.sleep(0.02)\n"
        "os.remove('ack') if os.path.exists('ack') else None\n"
        "'acknowledged' if time.time() < deadline else 'never read'"
    )
    env = {**os.environ, "XDG_CACHE_HOME": str(cache_home)}
    cli = [sys.executable, "-m", "codemode_session", "exec", "agent-1", code, "-n", "team"]
    with subprocess.Popen(cli, stdout=subprocess.PIPE, text=True, env=env) as proc:
        assert proc.stdout is not None
        assert proc.stdout.readline() == "first\n"
        with SessionClient(server.url, token=TOKEN) as other:
            other.create_session()
            other.upload_file("ack", b"")
        rest = proc.stdout.read()
    assert proc.returncode == 0 and rest == "acknowledged\n"


def test_another_sessions_server_a_dead_address_or_a_bad_token_fall_back(
    server: ServerProcess, cache_home: Path
) -> None:
    exec_cache.write_entry("team", "other", server.url, TOKEN, "cs.someone-else")
    assert exec_cache.try_execute("team", "other", "1", None) is None
    assert not list(cache_home.rglob("*.json"))  # forgotten
    exec_cache.write_entry("team", "gone", f"http://127.0.0.1:{free_port()}", TOKEN, "cs.one")
    assert exec_cache.try_execute("team", "gone", "1", None) is None
    exec_cache.write_entry("team", "badtoken", server.url, "not-the-token", "cs.one")
    assert exec_cache.try_execute("team", "badtoken", "1", None) is None
    assert not list(cache_home.rglob("*.json"))
