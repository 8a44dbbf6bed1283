"""Workspace storage quotas and a workspace's own deps, in both backends (real Redis,
real files): what agent code meets through the server's storage."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis
from codemode_session.errors import ForbiddenError, QuotaExceededError
from codemode_session.storage import ArtifactInfo, FileStorage, RedisStorage
from codemode_session.storage.base import Storage
from codemode_session.storage.keys import KeyLayout
from codemode_session.storage.quota import DEFAULT_MAX_DEPS, Quota
from codemode_session.workflow_model import parse_workflow

pytestmark = pytest.mark.redis

LIMITS = Quota(max_bytes=10_000, max_artifact_bytes=6_000, max_workflows=2, max_deps=3)
SRC = "async def run():\n    return 1\n"


@pytest.fixture(params=["redis", "file"])
async def pair(
    request: pytest.FixtureRequest, redis_url: str, prefix: str, tmp_path: Path
) -> AsyncIterator[tuple[Storage, Storage, Storage]]:
    """(workspace a with LIMITS, workspace b, the unscoped store) of one backend."""
    if request.param == "redis":
        made: list[Storage] = [
            RedisStorage(redis_url, prefix=prefix, workspace_id="a", quota=LIMITS),
            RedisStorage(redis_url, prefix=prefix, workspace_id="b"),
            RedisStorage(redis_url, prefix=prefix),
        ]
    else:
        made = [
            FileStorage(tmp_path, workspace_id="a", quota=LIMITS),
            FileStorage(tmp_path, workspace_id="b"),
            FileStorage(tmp_path),
        ]
    yield made[0], made[1], made[2]
    for store in made:
        await store.close()


def _info(name: str, description: str = "") -> ArtifactInfo:
    return ArtifactInfo(name, description=description, metadata={"_data_type": "bytes"})


async def test_total_bytes_bound_data_and_descriptions(
    pair: tuple[Storage, Storage, Storage],
) -> None:
    a, b, _ = pair
    await a.save_artifact(_info("one"), b"x" * 5_000)
    with pytest.raises(QuotaExceededError, match="maxStorageBytes"):
        await a.save_artifact(_info("two"), b"x" * 5_000)
    # an empty artifact with a large description is stored bytes too
    with pytest.raises(QuotaExceededError, match="maxStorageBytes"):
        await a.save_artifact(_info("described", "d" * 5_500), b"")
    with pytest.raises(QuotaExceededError, match="maxArtifactBytes"):
        await a.save_artifact(_info("huge", "d" * 7_000), b"")
    assert [i.name for i in await a.list_artifacts()] == ["one"]
    used = await a.usage_bytes()  # type: ignore[attr-defined]
    assert 5_000 < used < 5_200
    # overwriting with less, then deleting, gives the space back
    await a.save_artifact(_info("one"), b"x" * 10)
    await a.save_artifact(_info("two", "fits now"), b"x" * 5_000)
    assert await a.delete_artifact("two") and await a.delete_artifact("one")
    assert await a.usage_bytes() <= 2  # type: ignore[attr-defined]  # files: index "{}"
    # another workspace has its own share
    await b.save_artifact(_info("big"), b"y" * 20_000)


async def test_workflow_count(pair: tuple[Storage, Storage, Storage]) -> None:
    a, _, _ = pair
    await a.save_workflow(parse_workflow("w1", SRC))
    await a.save_workflow(parse_workflow("w2", SRC))
    await a.save_workflow(parse_workflow("w2", SRC + "\n"))  # an update adds none
    with pytest.raises(QuotaExceededError, match="maxWorkflows"):
        await a.save_workflow(parse_workflow("w3", SRC))
    assert [w.name for w in await a.list_workflows()] == ["w1", "w2"]


async def test_deps_are_the_workspaces_own_and_bounded(
    pair: tuple[Storage, Storage, Storage],
) -> None:
    a, b, shared = pair
    assert await shared.add_dep("shared-pkg") is True  # the store's view: prefix-wide
    assert await a.add_dep("shared-pkg") is False  # already there for everyone
    for spec in ("p1", "p2", "p3"):
        assert await a.add_dep(spec) is True
    with pytest.raises(QuotaExceededError, match="STORAGE_MAX_DEPS"):
        await a.add_dep("p4")
    assert await a.list_deps() == ["p1", "p2", "p3", "shared-pkg"]
    assert await b.list_deps() == ["shared-pkg"]
    assert await shared.list_deps() == ["shared-pkg"]
    with pytest.raises(ForbiddenError, match="shared by every workspace"):
        await a.remove_dep("shared-pkg")
    assert await b.list_deps() == ["shared-pkg"]
    assert await a.remove_dep("p1") is True and await a.remove_dep("p1") is False
    assert await a.add_dep("p4") is True


def test_deps_limit_defaults_and_can_be_lifted() -> None:
    assert Quota.from_env({}).max_deps == DEFAULT_MAX_DEPS
    assert Quota.from_env({"STORAGE_MAX_DEPS": "0"}).max_deps is None
    assert Quota.from_env({"STORAGE_MAX_DEPS": "7"}).max_deps == 7
    assert Quota.from_env({}).max_bytes is None


async def test_redis_usage_counter_matches_a_fresh_measurement(redis_url: str, prefix: str) -> None:
    store = RedisStorage(redis_url, prefix=prefix, workspace_id="m", quota=LIMITS)
    try:
        await store.save_artifact(_info("x", "about x"), b"1234")
        await store.save_workflow(parse_workflow("w", SRC))
        counted = await store.usage_bytes()
        with redis.Redis.from_url(redis_url) as raw:
            raw.delete(KeyLayout(prefix, "m").usage)
        assert await store.usage_bytes() == counted  # measured from the keys themselves
    finally:
        await store.close()
