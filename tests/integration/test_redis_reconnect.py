"""A Redis restart is invisible to callers (issue 10, case 13).

Before, every pooled connection failed the first command sent on it after Redis
restarted: a 503 (StorageUnavailableError) for the caller, and the second try
worked. Now a dropped connection is replaced and the command sent again. Here a
real redis-server is killed and started again on the same port, and a proxy
drops the connection after Redis ran a MULTI/EXEC but before its answer arrived,
to show that the re-sent transaction neither loses nor doubles anything.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import signal
import subprocess
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from codemode_session.storage import ArtifactInfo, LibraryRecord, RedisStorage
from codemode_session.workflow_model import parse_workflow

from tests.conftest import free_port, wait_for_port
from tests.integration.server_fixture import ServerProcess, base_settings, running_server

pytestmark = pytest.mark.redis

SRC = "async def run(n: int = 1):\n    return n\n"


class RestartableRedis:
    """A redis-server on a fixed port that a test can kill (-9) and start again."""

    def __init__(self, workdir: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
        self.binary = binary
        self.workdir = workdir
        self.port = free_port()
        self.proc = self._start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def _start(self) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.workdir),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
        )
        wait_for_port(self.port)
        return proc

    def restart(self) -> None:
        """Crash and come back: every client connection is cut, the data is gone."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self.proc = self._start()

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()


@pytest.fixture
def redis_srv(tmp_path: Path) -> Iterator[RestartableRedis]:
    srv = RestartableRedis(tmp_path)
    yield srv
    srv.stop()


# ---- what an API caller sees ---------------------------------------------------------------


def _reads(http: httpx.Client) -> list[tuple[str, int]]:
    return [
        ("ready", http.get("/ready").status_code),
        ("list workflows", http.get("/api/workflows").status_code),
        ("list artifacts", http.get("/api/artifacts").status_code),
        ("list deps", http.get("/api/deps").status_code),
    ]


def _writes(http: httpx.Client, n: int) -> list[tuple[str, int]]:
    # One at a time: concurrent writers of one workspace contend for its usage counter.
    artifact = http.post("/api/artifacts", json={"name": f"a{n}.txt", "data": "x"})
    workflow = http.post("/api/workflows", json={"name": f"w{n}", "source": SRC})
    return [("save artifact", artifact.status_code), ("save workflow", workflow.status_code)]


def _failed(rounds: list[list[tuple[str, int]]]) -> list[tuple[str, int]]:
    return [(what, status) for round_ in rounds for what, status in round_ if status >= 300]


def test_requests_after_a_redis_restart_succeed(redis_srv: RestartableRedis, prefix: str) -> None:
    with (
        running_server(base_settings(redis_srv.url, prefix)) as server,
        server.client(allow_5xx=True) as http,
        ThreadPoolExecutor(8) as pool,
    ):
        # Several pooled connections: concurrent requests each take one.
        warm = [*pool.map(lambda _: _reads(http), range(16)), _writes(http, 0)]
        assert _failed(warm) == []

        redis_srv.restart()
        # Concurrent first requests meet the stale connections at once...
        after = list(pool.map(lambda _: _reads(http), range(16)))
        # ...and so do sequential ones, writes too.
        for n in range(1, 9):
            after += [_writes(http, n), _reads(http)]
        assert _failed(after) == [], _log(server)


def _log(server: ServerProcess) -> str:
    return server.output()[-2000:]


async def test_every_pooled_connection_survives_a_restart(
    redis_srv: RestartableRedis, prefix: str
) -> None:
    store = RedisStorage(redis_srv.url, prefix=prefix, workspace_id="ws")
    try:
        await asyncio.gather(*(store.list_deps() for _ in range(6)))
        pooled = len(store.redis.connection_pool._available_connections)
        assert pooled >= 2  # the gather really opened several

        redis_srv.restart()
        for n in range(pooled + 2):  # each stale connection is met once, then fresh ones
            assert await store.add_dep(f"pkg{n}") is True
        assert await store.list_deps() == sorted(f"pkg{n}" for n in range(pooled + 2))
    finally:
        await store.close()


# ---- a transaction whose answer is lost ------------------------------------------------------


class ExecReplyDropper:
    """A TCP proxy to Redis that, once armed, lets the next MULTI/EXEC through and cuts
    the client's connection when Redis answers: the writes happened, the caller saw a
    dropped connection. `execs` counts the transactions sent (commands ending in MARK)."""

    MARK = b"EXEC\r\n"

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.armed = False
        self.execs = 0
        self.port = 0
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()

    async def _relay(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        redis_r, redis_w = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        cut = asyncio.Event()

        async def to_redis() -> None:
            while data := await client_r.read(65536):
                if self.MARK in data:
                    self.execs += 1
                    if self.armed:
                        self.armed = False
                        cut.set()
                redis_w.write(data)
                await redis_w.drain()
            redis_w.close()

        async def to_client() -> None:
            while data := await redis_r.read(65536):
                if cut.is_set():  # Redis has run the transaction: its answer is lost
                    client_w.transport.abort()
                    redis_w.close()
                    return
                client_w.write(data)
                await client_w.drain()
            client_w.close()

        with contextlib.suppress(OSError):
            await asyncio.gather(to_redis(), to_client())


@pytest.fixture
async def dropper(redis_srv: RestartableRedis) -> AsyncIterator[ExecReplyDropper]:
    proxy = ExecReplyDropper(redis_srv.port)
    await proxy.start()
    yield proxy
    await proxy.close()


async def test_a_watched_write_whose_answer_is_lost_is_counted_once(
    dropper: ExecReplyDropper, prefix: str
) -> None:
    store = RedisStorage(f"redis://127.0.0.1:{dropper.port}/0", prefix=prefix, workspace_id="ws")
    try:
        await store.save_artifact(ArtifactInfo("first.bin"), b"x" * 10)
        first = await store.usage_bytes()
        assert first > 10  # the data and its index entry
        dropper.armed, sent = True, dropper.execs

        await store.save_artifact(ArtifactInfo("second.bin"), b"y" * 20)  # no error

        assert dropper.execs == sent + 2  # the transaction ran, was cut, and ran again
        found = await store.load_artifact("second.bin")
        assert found is not None and found[1] == b"y" * 20
        # Re-run from fresh reads, the second run adds nothing: counted once, not twice
        # (the counter equals a fresh measurement of what is stored).
        counted = await store.usage_bytes()
        assert counted > first + 20
        await store.redis.delete(store.keys.usage)
        assert await store.usage_bytes() == counted
        assert [i.name for i in await store.list_artifacts()] == ["first.bin", "second.bin"]
    finally:
        await store.close()


async def test_a_library_publish_whose_answer_is_lost_is_applied_once(
    dropper: ExecReplyDropper, prefix: str
) -> None:
    store = RedisStorage(f"redis://127.0.0.1:{dropper.port}/0", prefix=prefix, workspace_id="ws")
    try:
        await store.save_workflow(parse_workflow("agent_made", SRC))
        dropper.armed, sent = True, dropper.execs
        record = LibraryRecord(revision="r1", digest="d1", count=2, synced_at=1700000000.0)
        flows = [parse_workflow("one", SRC), parse_workflow("two", SRC)]

        await store.apply_library("lib", flows, [], record)  # no error

        assert dropper.execs == sent + 2
        assert [w.name for w in await store.list_workflows()] == ["agent_made", "one", "two"]
        assert await store.workflow_owners() == {"one": "lib", "two": "lib"}
        assert await store.get_library("lib") == record
    finally:
        await store.close()
