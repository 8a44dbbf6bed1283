"""The worker's end of its socket to the server, shared by requests and storage calls.

The server sends requests (`init`, `exec`, ...) and answers the worker's storage
calls on the same socket. Any thread of the worker may make a storage call (a
cell's own threads too, even after the cell returned), so one thread at a time
reads, and every frame it reads goes to whoever waits for it: a request to the
serve loop, an answer to the call with its id.
"""

from __future__ import annotations

import itertools
import socket
import threading
from collections import deque
from collections.abc import Callable
from typing import Any, TypeVar

from codemode_session import protocol

T = TypeVar("T")
ANSWER = "storage_answer"


class WorkerChannel:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._send_lock = threading.Lock()
        self._read_lock = threading.Lock()
        self._changed = threading.Condition()
        self._requests: deque[dict[str, Any]] = deque()
        self._answers: dict[int, dict[str, Any]] = {}
        self._ids = itertools.count(1)
        self._broken: BaseException | None = None

    def send(self, message: dict[str, Any], blob: bytes | None = None) -> None:
        parts = protocol.encode_parts(message, blob)
        with self._send_lock:
            protocol.send_parts(self.sock, parts)

    def sending(self) -> threading.Lock:
        """Hold while writing a frame by other means (the reply of a request)."""
        return self._send_lock

    def next_request(self) -> dict[str, Any]:
        """The server's next request (blocks); ProtocolError/OSError when it is gone."""
        return self._wait(lambda: self._requests.popleft() if self._requests else None)

    def call(self, message: dict[str, Any], blob: bytes | None = None) -> dict[str, Any]:
        """Send a storage call and wait for its answer."""
        call_id = next(self._ids)
        self.send({**message, "op": "storage", "id": call_id}, blob)
        return self._wait(lambda: self._answers.pop(call_id, None))

    def _wait(self, take: Callable[[], T | None]) -> T:
        while True:
            with self._changed:
                found = take()
                if found is not None:
                    return found
                if self._broken is not None:
                    raise protocol.ProtocolError(f"channel closed ({self._broken})")
            if not self._read_lock.acquire(blocking=False):
                with self._changed:  # another thread reads; it notifies what it got
                    self._changed.wait(0.05)
                continue
            try:
                with self._changed:
                    found = take()
                if found is not None:
                    return found
                self._read_one()
            finally:
                self._read_lock.release()

    def _read_one(self) -> None:
        try:
            message = protocol.recv_blocking(self.sock)
        except (protocol.ProtocolError, OSError) as exc:
            with self._changed:
                self._broken = exc
                self._changed.notify_all()
            raise
        with self._changed:
            if message.get("op") == ANSWER and isinstance(message.get("id"), int):
                self._answers[message["id"]] = message
            else:
                self._requests.append(message)
            self._changed.notify_all()
