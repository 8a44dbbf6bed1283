"""Run a workflow's `async def run` to completion from synchronous agent code.

`workflows.name(...)` is a plain call, from plain code or from inside a running
`async def run` (a workflow invoking another), so the coroutine it gets back is
driven here. (Storage calls need none of this: they are synchronous frames to the
server, see storage/brokered.py.)
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


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
