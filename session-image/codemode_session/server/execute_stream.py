"""A streamed `/execute` (`Accept: text/event-stream`): output as it is printed, then
the result, as server-sent events.

Events: `stdout` and `stderr` (`{"text": ...}`, in the order printed), then one
`result` (the same JSON a plain `/execute` answers) or one `error` (`{"status",
"detail"}`: what a plain call would have answered with that status). A client that
goes away before the result interrupts the run (SessionManager.interrupt).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

from codemode_session.errors import CodemodeError
from codemode_session.server.http_errors import status_of
from codemode_session.server.responses import finite_json
from codemode_session.server.sessions import Session
from codemode_session.server.state import ServerState

MEDIA_TYPE = "text/event-stream"


def wants_stream(accept: str | None) -> bool:
    return accept is not None and MEDIA_TYPE in accept.lower()


def event(name: str, data: Any) -> bytes:
    text = json.dumps(finite_json(data), ensure_ascii=True, allow_nan=False)
    return f"event: {name}\ndata: {text}\n\n".encode()


async def events(
    state: ServerState, session: Session, code: str, timeout: float
) -> AsyncIterator[bytes]:
    queue: asyncio.Queue[tuple[str, str] | None] = asyncio.Queue()

    def on_output(stream: str, text: str) -> None:
        queue.put_nowait((stream if stream in ("stdout", "stderr") else "stdout", text))

    run = asyncio.ensure_future(state.execute(session, code, timeout, on_output))
    run.add_done_callback(lambda _: queue.put_nowait(None))
    try:
        while (item := await queue.get()) is not None:
            yield event(item[0], {"text": item[1]})
        try:
            reply = run.result()
        except CodemodeError as exc:
            yield event("error", {"status": status_of(exc), "detail": str(exc)})
            return
        yield event("result", reply)
    finally:
        if not run.done():  # the client went away mid-run
            state.sessions.interrupt(session)
