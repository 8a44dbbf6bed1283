"""A worker's storage line, served by a thread of the server with blocking reads.

Agent code waits for every `artifacts.save`/`load`, so the line from a worker to Redis
and back is kept short: the thread sleeps in `recv` on the worker's storage socket and
answers artifact calls itself with a blocking Redis client (StorageBroker.answer_blocking);
everything else, and the rare save that needs more, goes to the event loop as before
(StorageBroker.answer). Through the event loop and redis-py's asyncio client a call cost
about twice as much wall time as this way.

What arrives here comes from agent code: a frame that is not one ends the line (the
worker is then marked broken and replaced at its next request); an answer that cannot
be framed becomes an error answer, never a dead thread.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import socket
import threading
from collections.abc import Callable
from typing import Any

from codemode_session import protocol
from codemode_session.server.storage_broker import Answer, StorageBroker
from codemode_session.storage.artifact_redis import SyncArtifacts

log = logging.getLogger(__name__)

FORBIDDEN = {
    "ok": False,
    "error_type": "ForbiddenError",
    "error": "storage is not available to this worker",
}
UNSENDABLE = {
    "ok": False,
    "error_type": "StorageUnavailableError",
    "error": "the stored value cannot be sent to the worker",
}
INTERNAL = {
    "ok": False,
    "error_type": "StorageUnavailableError",
    "error": "the session server could not answer this storage call (see its log)",
}


class StorageThread:
    def __init__(
        self,
        sock: socket.socket,
        broker: StorageBroker | None,
        loop: asyncio.AbstractEventLoop,
        on_broken: Callable[[str], None],
    ) -> None:
        self._sock = sock
        self._broker = broker
        self._loop = loop
        self._on_broken = on_broken
        self._stopping = False
        # Set on the event loop when the worker is bound to a workspace; read here.
        self.workspace_id: str | None = None
        self.bound = False
        self.fast: SyncArtifacts | None = None
        self._thread = threading.Thread(target=self._run, name="worker-storage", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def bind(self, workspace_id: str | None) -> None:
        """On the event loop, once the worker runs for a workspace: calls may come now."""
        self.workspace_id = workspace_id
        if self._broker is not None:
            self.fast = self._broker.blocking_for(workspace_id)
        self.bound = True

    def stop(self) -> None:
        """Wake the thread (shutdown reaches a blocked recv; close alone may not)."""
        self._stopping = True
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        if not self._thread.is_alive() and self._thread.ident is None:
            self._sock.close()  # never started: nobody else will

    def _run(self) -> None:
        reader = protocol.FrameReader(self._sock)
        try:
            while not self._stopping:
                call = reader.read()
                reply, blob = self._answer(call)
                self._send(reply, blob)
        except (protocol.ChannelClosed, OSError):
            pass  # the worker or the server went away
        except protocol.ProtocolError as exc:
            if not self._stopping:
                self._report(f"the worker's storage line broke ({exc})")
        finally:
            reader.close()
            self._sock.close()

    def _report(self, reason: str) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: the server stops
            self._loop.call_soon_threadsafe(self._on_broken, reason)

    def _answer(self, call: dict[str, Any]) -> Answer:
        broker = self._broker
        if broker is None or not self.bound:
            return {**FORBIDDEN, "op": "storage_answer", "id": call.get("id")}, None
        try:
            if self.fast is not None:
                answered = broker.answer_blocking(self.fast, call)
                if answered is not None:
                    return answered
            return self._on_loop(broker, call)
        except Exception:
            log.exception("storage call %r failed", call.get("method"))
            return {**INTERNAL, "op": "storage_answer", "id": call.get("id")}, None

    def _on_loop(self, broker: StorageBroker, call: dict[str, Any]) -> Answer:
        future = asyncio.run_coroutine_threadsafe(
            broker.answer(self.workspace_id, call), self._loop
        )
        while True:
            try:
                return future.result(timeout=1.0)
            except concurrent.futures.TimeoutError:
                if self._stopping or self._loop.is_closed():
                    future.cancel()
                    raise

    def _send(self, reply: dict[str, Any], blob: bytes | None) -> None:
        try:
            parts = protocol.encode_parts(reply, blob)
        except ValueError:  # an answer JSON cannot carry (another client's stored data)
            parts = protocol.encode_parts(
                {**UNSENDABLE, "op": reply.get("op"), "id": reply.get("id")}
            )
        protocol.send_parts(self._sock, parts)
