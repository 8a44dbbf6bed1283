"""Run async storage calls from synchronous user code.

User code and workflows call `artifacts.save(...)` synchronously, from plain code
or from inside a running `async def run`. Storage is async (redis-py asyncio), and
its connections belong to one event loop, so every storage call runs on the
bridge's own loop, one call at a time. A caller with no running loop in its
thread (plain agent code: the common case) runs that loop itself, which costs no
thread hand-off; a caller inside a running loop (top-level `await`, a workflow's
`async def run`) has a helper thread run it and blocks on the result.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")


class SyncBridge:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._lock = threading.Lock()
        self._helper: ThreadPoolExecutor | None = None

    def _run(self, coro: Coroutine[Any, Any, T], timeout: float | None) -> T:
        with self._lock:
            if timeout is None:
                return self.loop.run_until_complete(coro)
            return self.loop.run_until_complete(asyncio.wait_for(coro, timeout))

    def call(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            in_loop = False
        else:
            in_loop = True
        if not in_loop:
            # Outside the `except` block: a storage error must not show the agent a
            # chained "RuntimeError: no running event loop" it has nothing to do with.
            return self._run(coro, timeout)
        if self._helper is None:
            self._helper = ThreadPoolExecutor(max_workers=1, thread_name_prefix="storage")
        return self._helper.submit(self._run, coro, timeout).result()


def _idle_current_loop() -> asyncio.AbstractEventLoop | None:
    """This thread's current event loop (the cell runner's), if it is set and idle."""
    try:
        loop = asyncio.get_event_loop_policy().get_event_loop()
    except RuntimeError:
        return None
    return None if loop.is_closed() or loop.is_running() else loop


def run_coroutine_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to completion from sync code, even inside a running loop.

    From plain code it runs on the thread's current loop when there is one (the
    cell runner's, so a workflow can use what top-level `await` code created),
    else on a fresh loop. Inside a running loop (a workflow invoking another
    workflow) it runs on a fresh loop in a helper thread; the caller blocks.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        loop = _idle_current_loop()
        return asyncio.run(coro) if loop is None else loop.run_until_complete(coro)
    result: list[T] = []
    error: list[BaseException] = []

    def target() -> None:
        try:
            result.append(asyncio.run(coro))
        except BaseException as exc:
            error.append(exc)

    thread = threading.Thread(target=target, name="nested-workflow")
    thread.start()
    thread.join()
    if error:
        raise error[0]
    return result[0]
