"""Run async storage calls from synchronous user code.

User code and workflows call `artifacts.save(...)` synchronously, from plain code
or from inside a running `async def run`. Storage is async (redis-py asyncio),
so it lives on its own event loop in a daemon thread and sync callers block on
the result. That works from any thread, whether or not that thread runs a loop.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


class SyncBridge:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="storage", daemon=True)
        self._thread.start()

    def call(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)


def run_coroutine_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to completion from sync code, even inside a running loop.

    Inside a running loop (a workflow invoking another workflow) the coroutine
    runs on a fresh loop in a helper thread; the caller blocks, as sync code does.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
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
