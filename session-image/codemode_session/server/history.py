"""Each workspace's session history, and the hook that records every `/execute` run.

The server is the only writer (storage/history.py): a worker has no credentials and
its storage broker has no history call, so agent code cannot forge a record. A
failed write never fails the run: it is counted (`codemode_history_write_failures_total`)
and logged.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from codemode_session.server import metrics
from codemode_session.server.config import ServerConfig
from codemode_session.server.ordered_writer import OrderedWriter
from codemode_session.server.sessions import Session
from codemode_session.server.state import StorageRegistry
from codemode_session.storage.history import (
    HistoryLimits,
    HistoryStore,
    history_for,
    history_id,
    run_messages,
)

log = logging.getLogger("codemode.history")

# Runs answered but not yet written; past this many, /execute waits for the writer
# (a slow Redis slows runs down rather than growing the server's memory).
QUEUE_SIZE = 1000
Pending = tuple[Session, str, dict[str, Any], float, float]


class History:
    def __init__(self, storages: StorageRegistry, config: ServerConfig) -> None:
        self._storages = storages
        self.default_agent = config.agent_id
        self.limits = HistoryLimits(
            max_messages=config.history_max_messages,
            max_output_bytes=config.history_max_output_bytes,
        )
        # A CodeSession pod's server sessions are one session: one history under its id.
        self.state_id = config.state_id
        self.state_messages: int | None = None  # the shared state's kept messages (/health)
        self._by_ws: dict[str | None, HistoryStore] = {}
        self._writer: OrderedWriter[Pending] = OrderedWriter(self._write_one, QUEUE_SIZE)

    def store(self, workspace_id: str | None) -> HistoryStore:
        if workspace_id not in self._by_ws:
            self._by_ws[workspace_id] = history_for(self._storages.get(workspace_id), self.limits)
        return self._by_ws[workspace_id]

    async def record(
        self, session: Session, code: str, reply: dict[str, Any], started_at: float
    ) -> None:
        """SessionManager's recorder: queues the run for the writer and returns, so the
        history write (a Redis round trip and the messages' JSON) is never on /execute's
        path. One writer, first in first out: a session's runs are written in order."""
        await self._writer.put((session, code, reply, started_at, time.time()))

    async def fork_once(self, workspace_id: str | None, source: str, target: str) -> None:
        """Copy `source`'s history to `target` unless `target` has one (a forked
        CodeSession's first start; a restart must not overwrite what it recorded since)."""
        store = self.store(workspace_id)
        try:
            if await store.get(target, 0, 1) is None:
                await store.fork(source, target, time.time())
        except Exception as exc:  # the fork's state still comes; its history is logged
            log.warning("history of %s not forked from %s: %s", target, source, exc)

    async def flush(self) -> None:
        """Wait until every queued run is written (reads through the API see them all)."""
        await self._writer.flush()

    async def close(self) -> None:
        """Write what is queued, then stop the writer (server shutdown)."""
        await self._writer.close(5.0)

    async def _write_one(self, pending: Pending) -> None:
        await self._write(*pending)

    async def _write(
        self, session: Session, code: str, reply: dict[str, Any], started_at: float, now: float
    ) -> None:
        try:
            kept = await self.store(session.workspace_id).record_run(
                self.state_id or history_id(session.id),
                session.agent_id or self.default_agent,
                {"workspace_id": session.workspace_id},
                run_messages(code, reply, started_at, now, self.limits),
                now,
            )
            if self.state_id is not None:
                self.state_messages = kept
        except Exception as exc:  # any failure: counted and logged, never raised
            metrics.HISTORY_WRITE_FAILURES.inc()
            log.warning("session history not written for a run: %s: %s", type(exc).__name__, exc)
