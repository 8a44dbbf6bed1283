"""The blocking artifact client the workers' storage threads use (issue 10: the brokered
save+load within 1.25x of direct Redis access), against a real redis-server.

It must be the asyncio RedisStorage's twin: the same keys, index entries, usage counter
and quota errors, so either may read what the other wrote; and the same recovery when
Redis restarts or an EXEC's answer is lost.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from codemode_session.errors import QuotaExceededError, ValidationError
from codemode_session.storage import ArtifactInfo, RedisStorage
from codemode_session.storage.artifact_redis import SyncArtifacts
from codemode_session.storage.quota import Quota

from tests.integration.test_redis_reconnect import (  # noqa: F401  (a fixture)
    ExecReplyDropper,
    RestartableRedis,
    redis_srv,
)

pytestmark = pytest.mark.redis


@pytest.fixture
def prefix(request: pytest.FixtureRequest) -> str:
    return f"sync{abs(hash(request.node.name)) % 10**8}"


@pytest.fixture
async def store(redis_srv: RestartableRedis, prefix: str) -> AsyncIterator[RedisStorage]:  # noqa: F811
    storage = RedisStorage(
        redis_srv.url, prefix=prefix, workspace_id="ws", quota=Quota(max_bytes=10_000)
    )
    yield storage
    await storage.close()


def blocking(store: RedisStorage) -> SyncArtifacts:
    found = store.sync_artifacts()
    assert found is not None
    return found


async def test_each_client_reads_what_the_other_wrote(store: RedisStorage) -> None:
    fast = blocking(store)
    await store.save_artifact(ArtifactInfo("from-async.txt", "one"), b"async")
    assert await asyncio.to_thread(
        fast.save_artifact, ArtifactInfo("from-sync.txt", "two"), b"sync"
    )

    loaded = await asyncio.to_thread(fast.load_artifact, "from-async.txt")
    assert loaded is not None and loaded[1] == b"async" and loaded[0].description == "one"
    back = await store.load_artifact("from-sync.txt")
    assert back is not None and back[1] == b"sync" and back[0].description == "two"
    assert await asyncio.to_thread(fast.load_artifact, "missing.txt") is None


async def test_the_usage_counter_matches_a_fresh_measurement(store: RedisStorage) -> None:
    fast = blocking(store)
    await store.save_artifact(ArtifactInfo("start.bin"), b"s")  # starts the counter
    for n, size in enumerate((10, 300, 5, 300)):  # new names, then overwrites
        info = ArtifactInfo(f"a{n % 2}.bin", metadata={"n": n})
        assert await asyncio.to_thread(fast.save_artifact, info, b"x" * size)
    counted = await store.usage_bytes()
    await store.redis.delete(store.keys.usage)
    assert await store.usage_bytes() == counted


async def test_quota_errors_are_the_storage_layers_own(store: RedisStorage) -> None:
    fast = blocking(store)
    await store.save_artifact(ArtifactInfo("start.bin"), b"s")
    with pytest.raises(QuotaExceededError, match="maxStorageBytes"):
        await asyncio.to_thread(fast.save_artifact, ArtifactInfo("big.bin"), b"x" * 20_000)
    assert await store.load_artifact("big.bin") is None
    with pytest.raises(ValidationError):
        await asyncio.to_thread(fast.save_artifact, ArtifactInfo("../escape"), b"x")


async def test_a_workspace_whose_counter_never_started_is_left_to_the_async_path(
    store: RedisStorage,
) -> None:
    """Data written by another client and no counter yet: only RedisStorage measures."""
    fast = blocking(store)
    await store.redis.set(store.keys.artifact("other.bin"), b"o" * 50)
    assert await asyncio.to_thread(fast.save_artifact, ArtifactInfo("a.bin"), b"x") is False
    assert await store.load_artifact("a.bin") is None  # nothing written
    await store.save_artifact(ArtifactInfo("a.bin"), b"x")  # measures, starts the counter
    assert await asyncio.to_thread(fast.save_artifact, ArtifactInfo("b.bin"), b"y") is True


async def test_every_pooled_connection_survives_a_redis_restart(
    store: RedisStorage,
    redis_srv: RestartableRedis,  # noqa: F811
) -> None:
    fast = blocking(store)
    await store.save_artifact(ArtifactInfo("start.bin"), b"s")
    await asyncio.gather(  # several connections in the pool
        *(asyncio.to_thread(fast.load_artifact, "start.bin") for _ in range(6))
    )
    redis_srv.restart()  # the data is gone too: the counter starts again
    await store.save_artifact(ArtifactInfo("again.bin"), b"s")
    for n in range(8):
        assert await asyncio.to_thread(fast.save_artifact, ArtifactInfo(f"r{n}.bin"), b"r")
        found = await asyncio.to_thread(fast.load_artifact, f"r{n}.bin")
        assert found is not None and found[1] == b"r"


class ScriptReplyDropper(ExecReplyDropper):
    MARK = b"EVALSHA\r\n"


@pytest.fixture(params=["transaction", "script"])
async def lossy(
    request: pytest.FixtureRequest,
    redis_srv: RestartableRedis,  # noqa: F811
) -> AsyncIterator[ExecReplyDropper]:
    proxy = (
        ExecReplyDropper(redis_srv.port)
        if request.param == "transaction"
        else ScriptReplyDropper(redis_srv.port)
    )
    await proxy.start()
    yield proxy
    await proxy.close()


async def test_a_save_whose_answer_is_lost_is_counted_once(
    lossy: ExecReplyDropper,
    prefix: str,
) -> None:
    """Both ways a save is sent: the two-round-trip transaction (the script turned off)
    and the script; either is sent again from fresh reads and adds nothing twice."""
    store = RedisStorage(f"redis://127.0.0.1:{lossy.port}/0", prefix=prefix, workspace_id="ws")
    try:
        fast = blocking(store)
        if isinstance(lossy, ScriptReplyDropper):
            await asyncio.to_thread(fast.save_artifact, ArtifactInfo("warm.bin"), b"w")
        else:
            fast._script_off_until = float("inf")
        await store.save_artifact(ArtifactInfo("first.bin"), b"x" * 10)
        first = await store.usage_bytes()
        lossy.armed, sent = True, lossy.execs

        assert await asyncio.to_thread(fast.save_artifact, ArtifactInfo("second.bin"), b"y" * 20)

        assert lossy.execs == sent + 2  # it ran, its answer was cut, and it ran again
        found = await asyncio.to_thread(fast.load_artifact, "second.bin")
        assert found is not None and found[1] == b"y" * 20
        counted = await store.usage_bytes()
        assert counted > first + 20
        await store.redis.delete(store.keys.usage)
        assert await store.usage_bytes() == counted
    finally:
        await store.close()


async def test_the_script_answers_like_the_transaction(store: RedisStorage) -> None:
    """Quota, the never-started counter and usage: the same outcomes both ways."""
    fast = blocking(store)
    outcomes = []
    for scripted in (True, False):
        fast._script_off_until = 0.0 if scripted else float("inf")
        names = ("a.bin", "b.bin", "c.bin")
        await store.redis.delete(
            store.keys.usage, store.keys.artifact_index, *map(store.keys.artifact, names)
        )
        await store.redis.set(store.keys.artifact("other.bin"), b"o" * 50)
        measured = await asyncio.to_thread(fast.save_artifact, ArtifactInfo("a.bin"), b"x")
        await store.save_artifact(ArtifactInfo("a.bin"), b"x")  # starts the counter
        saved = await asyncio.to_thread(fast.save_artifact, ArtifactInfo("b.bin"), b"y" * 100)
        with pytest.raises(QuotaExceededError) as refused:
            await asyncio.to_thread(fast.save_artifact, ArtifactInfo("c.bin"), b"z" * 9_900)
        outcomes.append((measured, saved, await store.usage_bytes(), str(refused.value)))
    assert outcomes[0] == outcomes[1]
    assert outcomes[0][:2] == (False, True)


def test_a_storage_given_a_client_has_no_blocking_twin() -> None:
    """py-code-mode's `RedisStorage(redis=client)` form: its credentials are not ours."""
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url("redis://127.0.0.1:1/0")
    assert RedisStorage(redis=client, prefix="p").sync_artifacts() is None
