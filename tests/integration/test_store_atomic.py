"""A reader polling the workflows hash during a big bootstrap never sees half of it."""

from __future__ import annotations

import hashlib
import json
import threading
from pathlib import Path
from typing import Any

import pytest
import redis
from codemode_session.cli.main import main

from tests.integration.gitserver import GitRepo, workflow_source

pytestmark = [pytest.mark.redis, pytest.mark.git]

N = 2000


def fingerprint(snapshot: Any) -> str:
    h = hashlib.sha256()
    for key in sorted(snapshot):
        h.update(key + b"\0" + hashlib.sha256(snapshot[key]).digest())
    return h.hexdigest()


def test_reader_sees_old_or_new_set_only(
    redis_url: str, prefix: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key = f"{prefix}:ws:ws:workflows:__workflows__"
    client = redis.Redis.from_url(redis_url)
    client.hset(key, "agent_made", json.dumps({"name": "agent_made", "source": "x"}))
    repo = GitRepo(tmp_path / "repo")
    repo.write({f"w{i:04d}.py": workflow_source(i) for i in range(N)})
    repo.commit("v1")
    argv = [
        "store",
        "bootstrap",
        "--library",
        "big",
        "--git",
        repo.url,
        "--redis-url",
        redis_url,
        "--prefix",
        prefix,
        "--workspace-id",
        "ws",
    ]

    # Version 2 changes every file, drops a quarter and adds as many new ones.
    v2: dict[str, str | None] = {f"w{i:04d}.py": workflow_source(i + 10_000) for i in range(N)}
    v2.update({f"w{i:04d}.py": None for i in range(0, N, 4)})
    v2.update({f"n{i:04d}.py": workflow_source(i) for i in range(N // 4)})

    states: list[str] = [fingerprint(client.hgetall(key))]
    seen: list[str] = []
    stop = threading.Event()

    def poll() -> None:
        reader = redis.Redis.from_url(redis_url)
        while not stop.is_set():
            seen.append(fingerprint(reader.hgetall(key)))
        reader.close()

    thread = threading.Thread(target=poll)
    thread.start()
    try:
        assert main(argv) == 0  # cold: empty -> 2,000
        states.append(fingerprint(client.hgetall(key)))
        repo.write(v2)
        repo.commit("v2")
        assert main(argv) == 0  # every workflow changed, 500 pruned, 500 added
        states.append(fingerprint(client.hgetall(key)))
    finally:
        stop.set()
        thread.join()
    results = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["added"] for r in results] == [N, N // 4]
    assert [r["removed"] for r in results] == [0, N // 4]
    assert client.hlen(key) == N + 1
    assert len(seen) > 10
    partial = [s for s in seen if s not in states]
    assert not partial, f"{len(partial)} of {len(seen)} reads saw a partial library"
    client.close()
