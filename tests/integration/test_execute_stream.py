"""A streamed `/execute` (server-sent events) against a real server and Redis: output
arrives as it is printed, the result last, and a client that goes away stops the run."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import httpx
import pytest
from codemode_session.client import Output, SessionClient, SessionError
from codemode_session.results import ExecuteResult

from tests.conftest import RedisServer
from tests.integration.server_fixture import ServerProcess, base_settings, running_server

pytestmark = pytest.mark.redis

LOOP = """
import sys, time
for i in range(5):
    print(f"line {i}")
    time.sleep(0.5)
'done'
"""


@pytest.fixture(scope="module")
def server(redis_server: RedisServer) -> Iterator[ServerProcess]:
    env = base_settings(redis_server.url, f"stream{uuid.uuid4().hex[:8]}", WORKSPACE_ID="wsstream")
    with running_server(env) as srv:
        yield srv


@pytest.fixture
def client(server: ServerProcess) -> Iterator[SessionClient]:
    with SessionClient(server.url, token=server.token) as c:
        c.create_session()
        yield c


def test_output_arrives_line_by_line_as_it_is_printed(
    client: SessionClient, server: ServerProcess
) -> None:
    """The cell prints a line, then waits until the test has received it (the test
    answers with a file in the session's folder): with output held back until the run
    ended, this would never finish."""
    code = (
        "import os, time\n"
        "for i in range(5):\n"
        "    print(f'line {i}')\n"
        "    deadline = time.time() + 30\n"
        "    while not os.path.exists(f'ack{i}') and time.time() < deadline:\n"
        "        time.sleep(0.02)\n"
        "    assert os.path.exists(f'ack{i}'), f'line {i} was not received while running'\n"
        "'done'"
    )
    received: list[str] = []
    result: ExecuteResult | None = None
    with SessionClient(server.url, token=server.token, session_id=client.session_id) as other:
        for item in client.execute_stream(code):
            if isinstance(item, Output):
                received.append(item.text)
                for line in item.text.splitlines():
                    other.upload_file(f"ack{line.split()[-1]}", b"")
            else:
                result = item
    assert result is not None and result.error is None and result.value == "done"
    assert "".join(received) == "".join(f"line {i}\n" for i in range(5)) == result.stdout


def test_a_loop_with_pauses_streams_every_line_then_the_result(client: SessionClient) -> None:
    items = list(client.execute_stream(LOOP))
    outputs = [i for i in items if isinstance(i, Output)]
    assert len(outputs) >= 5  # one piece per line at least: they were printed 0.5 s apart
    last = items[-1]
    assert isinstance(last, ExecuteResult) and last.value == "done"
    assert "".join(o.text for o in outputs) == last.stdout


def test_stdout_and_stderr_keep_their_order(client: SessionClient) -> None:
    code = "import sys\nprint('a')\nprint('b', file=sys.stderr)\nprint('c')\n42"
    items = list(client.execute_stream(code))
    outputs = [(i.stream, i.text) for i in items if isinstance(i, Output)]
    assert outputs == [("stdout", "a\n"), ("stderr", "b\n"), ("stdout", "c\n")]
    last = items[-1]
    assert isinstance(last, ExecuteResult) and last.value == 42
    assert last.stdout == "a\nc\n" and last.stderr == "b\n"


def test_a_stream_closed_early_interrupts_the_run_and_keeps_the_session(
    client: SessionClient,
) -> None:
    client.execute("kept = 'before'\nseen = []")
    code = (
        "import time\nfor i in range(100):\n    seen.append(i)\n    print(i)\n    time.sleep(0.1)"
    )
    started = time.monotonic()
    stream = client.execute_stream(code)
    for item in stream:
        if isinstance(item, Output):
            break
    stream.close()  # the client goes away
    time.sleep(1.0)
    after = client.execute("(kept, len(seen))")
    assert time.monotonic() - started < 5  # not the 10 s the loop would take
    assert after.error is None and after.value[0] == "before"
    assert after.value[1] < 50 and after.worker_restarted is False
    history = client.execute(
        "import sys\nsys.last_type.__name__ if hasattr(sys, 'last_type') else None"
    )
    assert history.error is None


def test_a_cell_that_swallows_the_interrupt_is_stopped_anyway(client: SessionClient) -> None:
    client.execute("kept = 7")
    code = (
        "import time\nprint('start', flush=True)\n"
        "while True:\n"
        "    try:\n"
        "        time.sleep(0.1)\n"
        "    except KeyboardInterrupt:\n"
        "        pass"
    )
    started = time.monotonic()
    stream = client.execute_stream(code, timeout=60)
    next(iter(stream))
    stream.close()
    deadline = time.monotonic() + 20
    while True:  # the worker is killed after the grace; the state comes back from its snapshot
        result = client.execute("kept")
        if result.error is None:
            break
        assert time.monotonic() < deadline, result.error
    assert result.value == 7
    assert time.monotonic() - started < 15  # not the run's 60 s timeout


def test_refusals_come_before_the_stream(server: ServerProcess) -> None:
    headers = {**server.headers("s.unknownsession00000000"), "Accept": "text/event-stream"}
    answer = httpx.post(f"{server.url}/execute", json={"code": "1"}, headers=headers)
    assert answer.status_code == 400 and answer.headers["content-type"].startswith(
        "application/json"
    )
    with SessionClient(server.url, token=server.token, session_id="s.unknownsession00000000") as c:
        with pytest.raises(SessionError) as raised:
            list(c.execute_stream("1"))
        assert raised.value.status == 400


def test_streamed_output_keeps_to_the_output_limit(client: SessionClient) -> None:
    items = list(client.execute_stream("print('x' * 5_000_000)"))
    streamed = sum(len(i.text) for i in items if isinstance(i, Output))
    last = items[-1]
    assert isinstance(last, ExecuteResult) and "output truncated" in last.stdout
    assert streamed <= len(last.stdout)
