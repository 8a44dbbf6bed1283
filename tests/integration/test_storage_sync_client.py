"""Issue 12 case 10: `RedisStorage(redis=Redis.from_url(...))` with a synchronous redis-py
client, as py-code-mode's documents build it, against a real redis-server."""

from __future__ import annotations

import asyncio

import pytest
import redis
import redis.asyncio as aioredis
from codemode_session.errors import StorageUnavailableError
from codemode_session.storage import ArtifactInfo, RedisStorage
from codemode_session.storage.sync_client import async_client_from_sync

pytestmark = pytest.mark.redis


def test_a_sync_client_is_made_asyncio_and_reaches_the_same_server(
    redis_url: str, prefix: str
) -> None:
    sync = redis.Redis.from_url(redis_url)

    async def scenario() -> None:
        storage = RedisStorage(redis=sync, prefix=prefix, workspace_id="w1")
        assert isinstance(storage.redis, aioredis.Redis)
        try:
            await storage.ping()
            await storage.save_artifact(ArtifactInfo(name="a"), b"x")
            assert (await storage.list_artifacts())[0].name == "a"
        finally:
            await storage.close()

    asyncio.run(scenario())
    assert sync.exists(f"{prefix}:ws:w1:artifacts:__index__")
    assert sync.ping()  # the caller's client is neither used up nor closed
    sync.close()


def test_connection_parameters_carry_over() -> None:
    client = redis.Redis.from_url("rediss://alice:s3cret@example.invalid:6380/3")
    built = async_client_from_sync(client, socket_timeout=2.0)
    kwargs = built.connection_pool.connection_kwargs
    assert (kwargs["host"], kwargs["port"], kwargs["db"]) == ("example.invalid", 6380, 3)
    assert (kwargs["username"], kwargs["password"]) == ("alice", "s3cret")
    assert built.connection_pool.connection_class.__name__ == "SSLConnection"
    unix = async_client_from_sync(redis.Redis(unix_socket_path="/tmp/r.sock", db=2), 2.0)
    assert unix.connection_pool.connection_kwargs["path"] == "/tmp/r.sock"
    assert unix.connection_pool.connection_kwargs["db"] == 2


def test_wrong_credentials_fail_as_with_a_url(redis_url: str, prefix: str) -> None:
    sync = redis.Redis.from_url(redis_url, username="nobody", password="wrong")

    async def scenario() -> None:
        storage = RedisStorage(redis=sync, prefix=prefix)
        try:
            with pytest.raises(StorageUnavailableError):
                await storage.ping()
        finally:
            await storage.close()

    asyncio.run(scenario())
