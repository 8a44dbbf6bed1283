"""The worker's two sockets to the server.

`WorkerChannel` carries the server's requests (`init`, `exec`, ...) and the worker's
replies and streamed output. `StorageLine` carries the worker's storage calls and their
answers, on a socket of its own that a thread of the server serves with blocking reads
(server/storage_thread.py): a call then costs two wake-ups instead of a trip through the
server's event loop. Any thread of the worker may make a storage call (a cell's own
threads too, even after the cell returned): one call is on the line at a time.
"""

from __future__ import annotations

import itertools
import socket
import threading
from typing import Any

from codemode_session import protocol


class WorkerChannel:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._reader = protocol.FrameReader(sock)
        self._send_lock = threading.Lock()

    def send(self, message: dict[str, Any], blob: bytes | None = None) -> None:
        parts = protocol.encode_parts(message, blob)
        with self._send_lock:
            protocol.send_parts(self.sock, parts)

    def sending(self) -> threading.Lock:
        """Hold while writing a frame by other means (the reply of a request)."""
        return self._send_lock

    def next_request(self) -> dict[str, Any]:
        """The server's next request (blocks); ProtocolError/OSError when it is gone."""
        return self._reader.read()


class StorageLine:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._reader = protocol.FrameReader(sock)
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._broken: BaseException | None = None
        self._main_in_call = False
        self._interrupt_due = False

    def defer_interrupt(self) -> bool:
        """For the worker's SIGINT handler (it runs in the main thread): True when the main
        thread is inside a call, which then raises KeyboardInterrupt once its answer is
        read. A frame cut in half would leave the line out of step for good."""
        if self._main_in_call:
            self._interrupt_due = True
            return True
        return False

    def call(self, message: dict[str, Any], blob: bytes | None = None) -> dict[str, Any]:
        """Send a storage call and wait for its answer; ProtocolError once the line broke
        (a call cut short leaves the stream out of step, so it is never used again)."""
        main = threading.current_thread() is threading.main_thread()
        with self._lock:
            if self._broken is not None:
                raise protocol.ProtocolError(f"storage line closed ({self._broken})")
            call_id = next(self._ids)
            if main:
                self._main_in_call = True
            try:
                protocol.send_parts(
                    self.sock, protocol.encode_parts({**message, "id": call_id}, blob)
                )
                answer = self._reader.read()
            except BaseException as exc:
                self._broken = exc
                raise
            finally:
                if main:
                    self._main_in_call = False
            if answer.get("id") != call_id:
                self._broken = protocol.ProtocolError("answer out of order")
                raise self._broken
        if main and self._interrupt_due:
            self._interrupt_due = False
            raise KeyboardInterrupt
        return answer
