"""A worker's storage line (its own socket, served by a thread of the server) in a real
server with Redis: agent code's threads share it, a cancelled run in the middle of a
storage call leaves it working, and garbage written to it replaces the worker instead of
hurting the server or other sessions."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest
from codemode_session.client import Output, SessionClient, SessionError

from tests.conftest import RedisServer
from tests.integration.server_fixture import ServerProcess, base_settings, running_server

pytestmark = pytest.mark.redis


@pytest.fixture(scope="module")
def server(redis_server: RedisServer) -> Iterator[ServerProcess]:
    env = base_settings(redis_server.url, f"line{uuid.uuid4().hex[:8]}", WORKSPACE_ID="wsline")
    with running_server(env) as srv:
        yield srv


@pytest.fixture
def client(server: ServerProcess) -> Iterator[SessionClient]:
    with SessionClient(server.url, token=server.token) as c:
        c.create_session()
        yield c


THREADS = """
import threading
errors = []
def work(n):
    try:
        for i in range(40):
            data = f"{n}:{i}".encode() * (n + 1)
            artifacts.save(f"t{n}", data)
            if artifacts.load(f"t{n}") != data:
                errors.append((n, i))
    except Exception as exc:
        errors.append(repr(exc))
threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
for t in threads: t.start()
for t in threads: t.join()
errors
"""


def test_the_threads_of_a_cell_share_the_line(client: SessionClient) -> None:
    result = client.execute(THREADS, timeout=60)
    assert result.error is None and result.value == []


BUSY = """
import time
n = 0
while True:
    artifacts.save("busy", b"x" * 2048)
    artifacts.load("busy")
    n += 1
    if n % 50 == 0:
        print(n, flush=True)
"""


def test_a_run_cancelled_inside_storage_calls_keeps_the_line(client: SessionClient) -> None:
    """The run spends nearly all its time in storage calls, so each cancel lands in one;
    the interrupt waits for the call's answer, and the next run's calls work."""
    for attempt in range(5):
        stream = client.execute_stream(BUSY, timeout=60)
        for item in stream:
            if isinstance(item, Output):
                break
        stream.close()
        deadline = time.monotonic() + 20
        while True:  # the cancelled run ends, then the session answers again
            try:
                code = f"artifacts.save('after', b'{attempt}')\nartifacts.load('after')"
                after = client.execute(f"{code} == b'{attempt}'")
                break
            except SessionError:
                assert time.monotonic() < deadline
                time.sleep(0.1)
        assert after.error is None, after.error
        assert after.value is True and after.worker_restarted is False


GARBAGE = """
line = artifacts._storage._line.sock
line.sendall(b"\\x00\\x00\\x00\\x05not{}")
"""


def test_garbage_on_the_line_replaces_the_worker(client: SessionClient) -> None:
    client.execute("kept = 41")
    client.execute(GARBAGE)
    after = client.execute("kept + 1")
    assert after.worker_restarted is True
    assert after.value == 42  # state comes back from the snapshot
    saved = client.execute("artifacts.save('fresh', b'ok')\nartifacts.load('fresh')")
    assert saved.error is None and saved.worker_restarted is False


def test_other_sessions_are_unaffected_by_garbage(server: ServerProcess) -> None:
    with (
        SessionClient(server.url, token=server.token) as hostile,
        SessionClient(server.url, token=server.token) as other,
    ):
        hostile.create_session()
        other.create_session()
        assert other.execute("artifacts.save('o', b'1')").error is None
        hostile.execute(GARBAGE)
        result = other.execute("artifacts.load('o')")
        assert result.error is None and result.worker_restarted is False
