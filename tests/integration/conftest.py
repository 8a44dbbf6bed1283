"""Fixtures shared by the integration tests (real redis-server, real git)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from tests.conftest import RedisServer

STORE_ENV = ("REDIS_URL", "STORAGE_PREFIX", "WORKSPACE_ID", "CODEMODE_DEBUG")


@pytest.fixture
def clean_store_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI's targets default from these variables: a test names its own."""
    for name in STORE_ENV:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def r(redis_url: str) -> Iterator[redis.Redis]:
    """A text client of this test's Redis database."""
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    yield client
    client.close()


@pytest.fixture(scope="module")
def rdb(redis_server: RedisServer) -> Iterator[redis.Redis]:
    """A bytes client of the module's redis-server."""
    client = redis.Redis.from_url(redis_server.url)
    yield client
    client.close()
