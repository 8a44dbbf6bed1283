"""One background writer per kind of record, first in first out (history, snapshots).

Records are queued as a run answers and written just after, so the write is never on
`/execute`'s path, and a session's records land in the order its runs answered. Past
`size` unwritten records a put waits: a slow store slows runs down rather than growing
the server's memory. The writer task starts with the first put (there is a loop then).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class OrderedWriter(Generic[T]):
    def __init__(self, write: Callable[[T], Awaitable[None]], size: int) -> None:
        self._write = write
        self._size = size
        self._queue: asyncio.Queue[T] | None = None
        self._task: asyncio.Task[None] | None = None

    async def put(self, record: T) -> None:
        if self._queue is None:
            self._queue = asyncio.Queue(self._size)
            self._task = asyncio.get_running_loop().create_task(self._write_forever())
        await self._queue.put(record)

    async def flush(self) -> None:
        """Wait until every queued record is written."""
        if self._queue is not None:
            await self._queue.join()

    async def close(self, timeout: float) -> None:
        """Write what is queued (for at most `timeout` seconds), then stop."""
        if self._task is None:
            return
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self.flush(), timeout)
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    async def _write_forever(self) -> None:
        assert self._queue is not None
        while True:
            record = await self._queue.get()
            try:
                await self._write(record)  # never raises: each writer counts its failures
            finally:
                self._queue.task_done()
