"""The operator's deletion of a CodeSession's saved state (operator/session_state.py)
against a real Redis holding what a session server wrote: the snapshot always, the
history only for a session past its suspended retention, and the workspace's usage
counter given back what they held."""

from __future__ import annotations

import time
import uuid

import pytest
import redis
from codemode_operator.session_state import forget_state
from codemode_session.storage.history import HistoryLimits, RedisHistory, run_messages
from codemode_session.storage.redis_storage import RedisStorage
from codemode_session.storage.snapshots import RedisSnapshots

from tests.conftest import RedisServer

pytestmark = pytest.mark.redis

WS = "forget"


async def test_forget_state_deletes_the_snapshot_and_with_history_the_history(
    redis_server: RedisServer,
) -> None:
    prefix = f"fg{uuid.uuid4().hex[:6]}"
    storage = RedisStorage(redis_server.url, prefix=prefix, workspace_id=WS)
    admin = redis.Redis.from_url(redis_server.url)
    scope = f"{prefix}:ws:{WS}"
    try:
        limits = HistoryLimits()
        history = RedisHistory(storage, limits)
        snapshots = RedisSnapshots(storage)
        for sid in ("cs.a", "cs.b"):
            reply = {"value": 2, "stdout": "", "stderr": "", "error": None}
            now = time.time()
            await history.record_run(
                sid, "agent", {}, run_messages("1+1", reply, now, now, limits), now
            )
            await snapshots.save(sid, b"state-bytes" * 100, {"saved": ["x"]})
        used = int(admin.hget(f"{scope}:usage", "bytes") or 0)
        assert used > 2 * 1100

        assert forget_state(redis_server.url, prefix, WS, "cs.a") is True
        assert not admin.exists(f"{scope}:snapshot:cs.a")
        assert admin.exists(f"{scope}:session:cs.a")  # a Terminated session keeps its record
        after_a = int(admin.hget(f"{scope}:usage", "bytes") or 0)
        assert used - after_a == len(admin.hget(f"{scope}:snapshot:cs.b", "data") or b"") + len(
            admin.hget(f"{scope}:snapshot:cs.b", "meta") or b""
        )

        assert forget_state(redis_server.url, prefix, WS, "cs.b", history=True) is True
        for key in ("snapshot:cs.b", "session:cs.b", "messages:cs.b", "messages:cs.b:bytes"):
            assert not admin.exists(f"{scope}:{key}"), key
        assert admin.zscore(f"{scope}:index:agent", "cs.b") is None
        assert admin.hget(f"{scope}:snapshots", "cs.b") is None
        # What is left is cs.a's history alone.
        left = sum(len(m) for m in admin.lrange(f"{scope}:messages:cs.a", 0, -1))
        assert int(admin.hget(f"{scope}:usage", "bytes") or 0) == left
        assert forget_state(redis_server.url, prefix, WS, "cs.b", history=True) is False
    finally:
        await storage.close()
        for key in admin.scan_iter(f"{prefix}:*"):
            admin.delete(key)
