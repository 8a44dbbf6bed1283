"""Keeping each session's snapshots: written in order off the request path, loaded for a
new worker of the same session.

The worker makes a snapshot after each run that changed its globals and sends it with
the run's reply; the server never unpickles one, it only stores the bytes under the
session's snapshot id and hands them to the next worker of that session (after a
timeout kill, a crash, an idle release, a server or pod restart). A session's
snapshot id is `SESSION_STATE_ID` when the server has one (a CodeSession pod: all its
server sessions are the one CodeSession), else the session's history id.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from codemode_session.errors import CodemodeError, StorageUnavailableError
from codemode_session.server import metrics
from codemode_session.server.ordered_writer import OrderedWriter
from codemode_session.server.sessions import Session
from codemode_session.server.state import StorageRegistry
from codemode_session.storage.history import history_id
from codemode_session.storage.snapshots import SnapshotStore, snapshots_for

log = logging.getLogger("codemode.snapshots")

# (workspace, source history id, target history id): copies a history if the target
# has none yet (server/history.py)
ForkHistory = Callable[[str | None, str, str], Awaitable[None]]
QUEUE_SIZE = 64  # snapshots may be large: past this many unwritten, runs wait
# (session, data or None for a delete, meta)
Pending = tuple[Session, bytes | None, dict[str, Any]]


class Snapshots:
    def __init__(
        self,
        storages: StorageRegistry,
        state_id: str | None = None,
        fork_from: str | None = None,
        fork_history: ForkHistory | None = None,
    ) -> None:
        self._storages = storages
        self.state_id = state_id
        self.fork_from = fork_from if state_id is not None else None
        self.fork_history = fork_history
        self._by_ws: dict[str | None, SnapshotStore] = {}
        self._writer: OrderedWriter[Pending] = OrderedWriter(self._write_one, QUEUE_SIZE)
        # The shared state's last stored snapshot and last restore (GET /health reports
        # them for the operator's CodeSession status).
        self.last_stored: dict[str, Any] | None = None
        self.last_restore: dict[str, Any] | None = None

    def store(self, workspace_id: str | None) -> SnapshotStore:
        if workspace_id not in self._by_ws:
            self._by_ws[workspace_id] = snapshots_for(self._storages.get(workspace_id))
        return self._by_ws[workspace_id]

    def snapshot_id(self, session: Session) -> str:
        return self.state_id or history_id(session.id)

    @property
    def shared(self) -> bool:
        """Every session of this server is one state (a CodeSession pod)."""
        return self.state_id is not None

    async def record(self, session: Session, data: bytes, summary: dict[str, Any]) -> None:
        """Queue a snapshot the session's worker sent (SessionManager's hook)."""
        meta = {
            "saved": summary.get("saved") or [],
            "unsaved": summary.get("unsaved") or {},
            "taken_at": time.time(),
            "owner": session.owner,
            "runs": session.executions + 1,
        }
        await self._writer.put((session, data, meta))

    async def forget(self, session: Session) -> None:
        """Queue the deletion of the session's snapshot (a reset, an explicit end)."""
        await self._writer.put((session, None, {}))

    async def flush(self) -> None:
        await self._writer.flush()

    async def load(self, session: Session) -> tuple[bytes, dict[str, Any]] | None:
        """The session's latest snapshot (after every queued write), if it may have it.

        A forked state (SESSION_FORK_FROM) with no snapshot of its own yet starts from a
        copy of the source's latest one, and a copy of its history."""
        await self.flush()
        store = self.store(session.workspace_id)
        try:
            found = await store.load(self.snapshot_id(session))
            if found is None and self.fork_from is not None and self.state_id is not None:
                found = await self._fork(store, self.fork_from, self.state_id, session)
        except StorageUnavailableError:
            raise  # not "nothing saved": starting empty would overwrite the saved state
        except CodemodeError as exc:
            log.warning("session snapshot not loaded: %s", exc)
            session.snapshot_error = f"the snapshot could not be read: {exc}"
            return None
        if found is None:
            return None
        if not self.shared and found[1].get("owner") != session.owner:
            return None  # a client-chosen id another token used before: not this one's
        return found

    async def _fork(
        self, store: SnapshotStore, source: str, target: str, session: Session
    ) -> tuple[bytes, dict[str, Any]] | None:
        if self.fork_history is not None:
            await self.fork_history(session.workspace_id, source, target)
        if not await store.copy(source, target, {"forked_from": source, "taken_at": time.time()}):
            return None
        log.info("state %s forked from %s", target, source)
        return await store.load(target)

    def note_restore(self, report: dict[str, Any]) -> None:
        if self.shared:
            self.last_restore = {**report, "at": time.time()}

    def status(self) -> dict[str, Any]:
        """The shared state's snapshot and restore, for GET /health (names, sizes, times;
        never values)."""
        return {
            "state_id": self.state_id,
            "snapshot": self.last_stored,
            "restore": self.last_restore,
        }

    async def close(self) -> None:
        await self._writer.close(30.0)

    async def _write_one(self, pending: Pending) -> None:
        await self._write(*pending)

    async def _write(self, session: Session, data: bytes | None, meta: dict[str, Any]) -> None:
        store, snapshot_id = self.store(session.workspace_id), self.snapshot_id(session)
        try:
            if data is None:
                await store.delete(snapshot_id)
                return
            await store.save(snapshot_id, data, meta)
            session.snapshot_error = None
            session.snapshot_meta = {**meta, "bytes": len(data)}
            if self.shared:
                self.last_stored = {
                    "taken_at": meta.get("taken_at"),
                    "bytes": len(data),
                    "saved": meta.get("saved") or [],
                    "unsaved": sorted(meta.get("unsaved") or {}),
                }
        except Exception as exc:  # counted, logged and reported by the session; never raised
            metrics.SNAPSHOT_WRITE_FAILURES.inc()
            session.snapshot_error = f"the snapshot after a run was not stored: {exc}"
            session.snapshot_failed = True
            log.warning("session snapshot not written: %s: %s", type(exc).__name__, exc)
