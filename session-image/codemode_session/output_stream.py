"""What a run prints, sent to the server while the run goes on (a streamed `/execute`).

A thread of the worker's own sends the text in batches, at most every INTERVAL: a
print in a tight loop is not one frame per call, and a line printed before a long
sleep still leaves at once. `finish` sends the rest before the run's reply, so the
server sees every piece of output before the result, in the order it was printed.
"""

from __future__ import annotations

import os
import threading
from typing import Any

from codemode_session.channel import WorkerChannel
from codemode_session.protocol import OUTPUT_OP
from codemode_session.runner import clean_text

INTERVAL = 0.05  # seconds a batch may wait for more text


class OutputStreamer:
    def __init__(self, channel: WorkerChannel) -> None:
        self._channel = channel
        self._thread: threading.Thread | None = None
        self._reset()
        # A copy made by os.fork() in a cell has no sending thread, and may have been
        # made while a lock below was held: it gets fresh ones and streams nothing.
        os.register_at_fork(after_in_child=self._reset)

    def _reset(self) -> None:
        self._changed = threading.Condition()
        self._sending = threading.Lock()  # held from taking a batch until it is sent
        self._pending: list[list[str]] = []  # [stream, text], consecutive same-stream merged
        self._active = False
        self._thread = None

    def start(self) -> None:
        with self._changed:
            self._active = True
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="output", daemon=True)
            self._thread.start()

    def write(self, stream: str, text: str) -> None:
        if not text:
            return
        with self._changed:
            if not self._active:
                return
            if self._pending and self._pending[-1][0] == stream:
                self._pending[-1][1] += text
            else:
                self._pending.append([stream, text])
            self._changed.notify()

    def finish(self) -> None:
        """Send what is left, then stream nothing until the next `start`."""
        with self._sending:
            with self._changed:
                self._active = False
                batch, self._pending = self._pending, []
            self._send(batch)

    def _run(self) -> None:
        while True:
            with self._changed:
                while not self._pending:
                    self._changed.wait()
            threading.Event().wait(INTERVAL)  # let more text join this batch
            with self._sending:
                with self._changed:
                    batch, self._pending = self._pending, []
                self._send(batch)

    def _send(self, batch: list[list[str]]) -> None:
        for stream, text in batch:
            message: dict[str, Any] = {"op": OUTPUT_OP, "stream": stream, "text": clean_text(text)}
            try:
                self._channel.send(message)
            except (OSError, ValueError):
                return  # the server is gone; the serve loop finds out on its own
