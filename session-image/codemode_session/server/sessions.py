"""Sessions: ids, one worker each while in use, release when idle, expiry.

Ids the server issues are 192-bit random tokens; they are never listed, so knowing
one is the capability to use that session. A client may also choose its own id (as
py-code-mode's client does); such a session is bound to the bearer token that
created it, and any other token finds no session there.

Workers are the scarce part (MAX_SESSIONS of them at most), records are not: a
session idle for `worker_idle_timeout` gives its worker back and keeps its id, and
when every worker is taken, the one idle longest is released for a newcomer. A
released session's next run gets a fresh worker and says that its state is gone.
A run refused for want of a worker (429) happens only while every worker is running
code.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import secrets
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from codemode_session.errors import StorageUnavailableError
from codemode_session.results import failed_run
from codemode_session.server import metrics
from codemode_session.server.files import (
    MAX_FILE_BYTES_DEFAULT,
    MAX_FOLDER_BYTES_DEFAULT,
    SessionFolders,
)
from codemode_session.workers import WorkerCrashed, WorkerPool, WorkerTimeout

log = logging.getLogger("codemode.sessions")

CLIENT_ID_RE = re.compile(r"^[A-Za-z0-9_-]{16,128}$")
LOST = "this session's state (variables, imports) was lost"
RESTORE_TIMEOUT = 120.0  # seconds a new worker may take to load a snapshot
PRIME_RETRY_FIRST, PRIME_RETRY_MAX = 0.5, 5.0  # backoff while the saved state is unreadable
INTERRUPT_GRACE = 2.0  # seconds an interrupted cell may take before its worker is killed
PRIME_WAIT = 10.0  # seconds a run waits for the shared state before a 503
# Session records are small; past this many per worker the longest idle without a
# worker are forgotten (its id, if used again, starts afresh).
RECORDS_PER_WORKER = 64
MIN_RECORDS = 1024


def issued_id() -> str:
    """192 random bits, with a '.' that no client-chosen id has: an id the server issued
    and later ended or expired is never taken up again as a client's."""
    return "s." + secrets.token_urlsafe(24)


class TooManySessions(Exception):
    pass


@dataclass
class Session:
    id: str
    workspace_id: str | None
    owner: str | None = None  # digest of the token that chose this id; None: server-issued
    created_at: float = field(default_factory=time.time)
    last_used: float = field(default_factory=time.time)
    executions: int = 0
    worker: Any = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    closed: bool = False
    released: str | None = None  # why the worker was given back while idle, until the next run
    agent_id: str | None = None  # whom its history is indexed under (None: the server's)
    # Snapshots (server/snapshots.py): the last one stored, why the last one failed, and
    # what the current worker restored.
    snapshot_meta: dict[str, Any] | None = None
    snapshot_error: str | None = None
    snapshot_failed: bool = False  # the next run's snapshot is sent even if unchanged
    restored: dict[str, Any] | None = None
    kept: bool = False  # its worker is the one the last session of a shared state left
    running: int = 0  # the number of the run in flight (0: none), for `interrupt`


class Snapshotter(Protocol):
    """What the session manager needs of server.snapshots.Snapshots."""

    async def record(self, session: Session, data: bytes, summary: dict[str, Any]) -> None: ...

    async def forget(self, session: Session) -> None: ...

    async def load(self, session: Session) -> tuple[bytes, dict[str, Any]] | None: ...

    def note_restore(self, report: dict[str, Any]) -> None: ...

    @property
    def shared(self) -> bool: ...

    @property
    def state_id(self) -> str | None: ...


# Called with (session, code, reply, wall-clock start) once a run's reply is complete,
# under the session's lock (so runs are recorded in order): the history hook.
Recorder = Callable[[Session, str, dict[str, Any], float], Awaitable[None]]


class SessionManager:
    def __init__(
        self,
        pool: WorkerPool,
        idle_timeout: float,
        max_sessions: int,
        worker_idle_timeout: float | None = None,
        recorder: Recorder | None = None,
        snapshots: Snapshotter | None = None,
        folders: SessionFolders | None = None,
    ) -> None:
        self.pool = pool
        # Each session's working folder (its worker's current directory, /files).
        self.folders = folders or SessionFolders(
            os.path.join(tempfile.gettempdir(), "codemode-files"),
            MAX_FILE_BYTES_DEFAULT,
            MAX_FOLDER_BYTES_DEFAULT,
        )
        self.recorder = recorder
        self.snapshots = snapshots
        self.idle_timeout = idle_timeout
        self.max_sessions = max_sessions
        self.worker_idle_timeout = min(worker_idle_timeout or idle_timeout, idle_timeout)
        self.max_records = max(MIN_RECORDS, RECORDS_PER_WORKER * max_sessions)
        self._sessions: dict[str, Session] = {}
        self._acquiring = 0
        self._runs = 0  # runs started, to tell one from the next (`interrupt`)
        self._tasks: set[asyncio.Future[None]] = set()
        self.last_activity = time.time()
        self._sweeper: asyncio.Task[None] | None = None
        # Sessions that share one state (a CodeSession pod) hand their worker on instead of
        # killing it: the next session takes it as it is, state and all (no restore).
        self._kept: Any = None
        self._kept_report: dict[str, Any] | None = None
        # Set once the shared state is loaded into a worker (GET /ready waits for it).
        self.primed = asyncio.Event()
        self.prime_error: str | None = None  # why the shared state is not loaded yet
        self._priming: asyncio.Task[None] | None = None
        self.prime_report: dict[str, Any] | None = None  # what the start's restore loaded
        self._workspace_id: str | None = None

    @property
    def count(self) -> int:
        return len(self._sessions)

    @property
    def workers_held(self) -> int:
        return sum(1 for s in self._sessions.values() if s.worker is not None)

    def start(self, workspace_id: str | None = None) -> None:
        self._workspace_id = workspace_id
        self.pool.refill()
        self._sweeper = asyncio.create_task(self._sweep_forever())
        if self._shared:
            self.prime()
        else:
            self.primed.set()

    def prime(self) -> None:
        """Load the shared state into a worker (at start, or when a warm pool pod was
        just bound to one: server/binding.py)."""
        self.primed.clear()
        self._priming = asyncio.create_task(self._prime(self._workspace_id))

    async def wait_primed(self) -> None:
        await self._wait_primed()

    @property
    def _shared(self) -> bool:
        return self.snapshots is not None and self.snapshots.shared

    async def _prime(self, workspace_id: str | None) -> None:
        """Load the shared state into a worker before the server reports ready, so the
        first run (after a pod restart or a resume) finds its variables at once.

        While storage cannot be read (Redis restarting, the workspace's ACL user not yet
        provisioned again) this retries and the server stays unready: a run on an empty
        state would store that empty state over the saved one."""
        delay = PRIME_RETRY_FIRST
        worker: Any = None
        try:
            while True:
                if worker is None or not worker.alive:
                    worker = await self.pool.acquire(workspace_id, snapshots=True)
                try:
                    report = await self._load_into(
                        worker, Session(id="(state)", workspace_id=workspace_id)
                    )
                    break
                except StorageUnavailableError as exc:
                    self.prime_error = str(exc)
                    log.warning("the session's state cannot be read yet (retrying): %s", exc)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, PRIME_RETRY_MAX)
            self.prime_report = report
            if worker.alive:
                self._kept, self._kept_report = worker, report
                worker = None
        except Exception as exc:  # the worker failed the restore: the first run retries it
            log.warning("the session's state was not loaded at start: %s", exc)
        finally:
            if worker is not None:
                await worker.kill()
            self.prime_error = None
            self.primed.set()

    async def _wait_primed(self) -> None:
        """Wait while the shared state is being loaded; refuse (503) while storage that
        holds it cannot be read, rather than run on an empty state."""
        try:
            await asyncio.wait_for(asyncio.shield(self.primed.wait()), PRIME_WAIT)
        except TimeoutError:
            raise StorageUnavailableError(
                "the session's saved state is not loaded yet: "
                + (self.prime_error or f"still loading after {PRIME_WAIT:g}s")
            ) from None

    async def _give_back(self, worker: Any, keep: bool = True) -> None:
        """A worker a session no longer holds: kept for the next session when they share
        one state (and it is alive), else killed.

        Never kept in a one-session pod: there an ended session's worker and whatever its
        code started (a sleeper, a daemon, modules it shadowed) must go, as the hostile
        suite checks; the next session's worker loads the saved state instead, from a
        spare started afresh right after the kill."""
        if keep and self._shared and worker.alive and not worker.sole:
            older, self._kept, self._kept_report = self._kept, worker, None
            if older is not None:  # it holds an older state
                await older.kill()
            return
        await worker.kill()
        if worker.sole:
            self.pool.refill()

    async def close(self) -> None:
        if self._priming is not None:
            self._priming.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._priming
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        for session_id in list(self._sessions):
            await self.end(session_id, keep_state=True)  # a shutdown is not the end
        if self._kept is not None:
            kept, self._kept = self._kept, None
            await kept.kill()
        await self.pool.close()

    def _expired(self, session: Session, now: float) -> bool:
        return now - session.last_used > self.idle_timeout and not session.lock.locked()

    def taken(self, session_id: str) -> bool:
        """A live session has this id (whoever owns it)."""
        session = self._sessions.get(session_id)
        return session is not None and not self._expired(session, time.time())

    async def create(
        self,
        workspace_id: str | None,
        session_id: str | None = None,
        owner: str | None = None,
        agent_id: str | None = None,
    ) -> Session:
        if session_id is not None and session_id in self._sessions:
            # A client-chosen id of an expired session not yet swept: end it first, or its
            # worker would be orphaned (never killed) when the new session takes the id.
            await self.end(session_id)
        if not self._room_for_a_worker():
            raise TooManySessions()
        if len(self._sessions) >= self.max_records:
            await self.sweep()
            await self._forget_oldest_without_worker()
        session = Session(
            id=session_id or issued_id(), workspace_id=workspace_id, owner=owner, agent_id=agent_id
        )
        self._sessions[session.id] = session
        metrics.SESSIONS.set(len(self._sessions))
        self.touch(session)
        return session

    def get(self, session_id: str, owner: str | None = None) -> Session | None:
        session = self._sessions.get(session_id)
        if session is None or self._expired(session, time.time()):
            return None
        if session.owner is not None and session.owner != owner:
            return None  # a client-chosen id belongs to the token that chose it
        return session

    def touch(self, session: Session) -> None:
        session.last_used = self.last_activity = time.time()

    async def end(self, session_id: str, keep_state: bool = False) -> bool:
        """End a session; its snapshot goes too unless `keep_state` or the server's
        sessions share one state (a CodeSession pod: the CodeSession lives on)."""
        session = self._sessions.pop(session_id, None)
        metrics.SESSIONS.set(len(self._sessions))
        if session is None:
            return False
        session.closed = True
        if session.worker is not None:
            worker, session.worker = session.worker, None
            await self._give_back(worker, keep=not keep_state)
        if self.snapshots is not None and not keep_state and not self.snapshots.shared:
            await self.snapshots.forget(session)
        if not keep_state and not self._shared:
            self.folders.remove(self._folder_id(session))
        return True

    def _folder_id(self, session: Session) -> str:
        """Sessions that share one state share its folder too."""
        shared = self.snapshots.state_id if self.snapshots is not None else None
        return shared or session.id

    def folder(self, session: Session) -> str:
        """The session's working folder (made on first use)."""
        return self.folders.folder(self._folder_id(session))

    async def release(self, session: Session, why: str) -> None:
        """Give the session's worker back, keeping the session (its next run starts afresh).

        No await between the check of the lock (by the caller) and taking the worker, so
        a run cannot start on a worker being released."""
        worker, session.worker = session.worker, None
        if worker is None:
            return
        session.released = why
        metrics.WORKER_RESTARTS.labels(reason="released").inc()
        await self._give_back(worker)

    async def sweep(self) -> int:
        now = time.time()
        idle = [s.id for s in self._sessions.values() if self._expired(s, now)]
        for session_id in idle:
            await self.end(session_id)
        for session in list(self._sessions.values()):
            if (
                session.worker is not None
                and not session.lock.locked()
                and now - session.last_used > self.worker_idle_timeout
            ):
                await self.release(
                    session, f"it was idle for more than {self.worker_idle_timeout:g}s"
                )
        return len(idle)

    async def _forget_oldest_without_worker(self) -> None:
        spare = sorted(
            (s for s in self._sessions.values() if s.worker is None and not s.lock.locked()),
            key=lambda s: s.last_used,
        )
        for session in spare[: max(1, len(self._sessions) - self.max_records + 1)]:
            await self.end(session.id)
        if len(self._sessions) >= self.max_records:
            raise TooManySessions()

    async def _sweep_forever(self) -> None:
        interval = max(1.0, min(30.0, self.worker_idle_timeout / 4))
        while True:
            await asyncio.sleep(interval)
            await self.sweep()

    def _idle_holders(self, besides: Session | None = None) -> list[Session]:
        return sorted(
            (
                s
                for s in self._sessions.values()
                if s.worker is not None and s is not besides and not s.lock.locked()
            ),
            key=lambda s: s.last_used,
        )

    def _room_for_a_worker(self, besides: Session | None = None) -> bool:
        """A worker is free, or one can be taken from an idle session."""
        held = self._acquiring + sum(
            1 for s in self._sessions.values() if s.worker is not None and s is not besides
        )
        return held < self.max_sessions or bool(self._idle_holders(besides))

    async def _make_room(self, session: Session) -> None:
        while (
            self._acquiring
            + sum(1 for s in self._sessions.values() if s.worker is not None and s is not session)
            >= self.max_sessions
        ):
            idle = self._idle_holders(session)
            if not idle:
                raise TooManySessions()
            await self.release(idle[0], "another session needed a worker while it was idle")

    async def _ensure_worker(self, session: Session) -> None:
        if session.worker is None or not session.worker.alive:
            if session.worker is not None:
                await session.worker.kill()
                session.worker = None
            if self._shared:
                await self._wait_primed()
            kept, self._kept = self._kept, None
            if kept is not None:
                if kept.alive and kept.workspace_id == session.workspace_id:
                    session.worker, session.restored = kept, self._kept_report
                    session.kept = True
                    self._kept_report = None
                    return
                await kept.kill()
            await self._make_room(session)
            await self._acquire(session)
            await self._restore(session)

    async def _restore(self, session: Session) -> None:
        """Load the session's latest snapshot into its new worker (inside the worker:
        the server never unpickles). Nothing stored: a fresh interpreter, as before."""
        session.restored = None
        session.kept = False
        if session.worker is None:
            return
        if session.id.startswith("s.") and session.executions == 0 and not self._shared:
            return  # an id the server just issued: nothing can have been saved under it
        try:
            session.restored = await self._load_into(session.worker, session)
        except StorageUnavailableError:
            await session.worker.kill()  # no run on an empty state: it would be saved
            session.worker = None
            raise
        except (WorkerTimeout, WorkerCrashed) as exc:
            await session.worker.kill()
            session.worker = None
            session.restored = {"restored": [], "lost": {"(state)": f"the restore failed: {exc}"}}
            await self._acquire(session)

    async def _load_into(self, worker: Any, session: Session) -> dict[str, Any] | None:
        """The session's latest snapshot loaded into `worker`: what came back and what did
        not; None when there is none (or snapshots are off)."""
        if self.snapshots is None:
            return None
        found = await self.snapshots.load(session)
        if found is None:
            return None
        data, meta = found
        try:
            report: dict[str, Any] = await worker.request(
                {"op": "restore"}, RESTORE_TIMEOUT, blob=data
            )
        except (WorkerTimeout, WorkerCrashed):
            metrics.RESTORES.labels(outcome="failed").inc()
            raise
        report.pop("ok", None)
        report["taken_at"] = meta.get("taken_at")
        if meta.get("forked_from"):
            report["forked_from"] = meta["forked_from"]
        metrics.RESTORES.labels(outcome="lost" if report.get("lost") else "ok").inc()
        self.snapshots.note_restore(report)
        return report

    async def _acquire(self, session: Session) -> None:
        """A worker from the pool for the session (no restore: `_restore` does that)."""
        self._acquiring += 1
        try:
            session.worker = await self.pool.acquire(
                session.workspace_id, snapshots=self.snapshots is not None
            )
        finally:
            self._acquiring -= 1

    def interrupt(self, session: Session) -> None:
        """Stop the session's run in flight (a streamed run whose client went away):
        KeyboardInterrupt in the cell, then, if the cell goes on past INTERRUPT_GRACE,
        the worker is killed (its state comes back from the last snapshot)."""
        run, worker = session.running, session.worker
        if not run or worker is None:
            return
        worker.interrupt()

        def kill_if_still_running() -> None:
            if session.running == run and session.worker is worker:
                self._background(worker.kill())

        asyncio.get_running_loop().call_later(INTERRUPT_GRACE, kill_if_still_running)

    def _background(self, work: Awaitable[None]) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def execute(
        self,
        session: Session,
        code: str,
        timeout: float,
        on_output: Callable[[str, str], None] | None = None,
    ) -> dict[str, Any]:
        """Run `code` in the session; `on_output(stream, text)`, if given, gets its output
        as it is printed (a streamed run), before this returns the reply."""
        async with session.lock:
            self.touch(session)
            started, started_at = time.perf_counter(), time.time()
            # A worker that died between runs (killed from outside, OOM) took the
            # session's state with it: the reply must say so, even if this run succeeds.
            restarted = session.worker is not None and not session.worker.alive
            if restarted:
                metrics.WORKER_RESTARTS.labels(reason="lost").inc()
            released, session.released = session.released, None
            request: dict[str, Any] = {"op": "exec", "code": code}
            if on_output is not None:
                request["stream"] = True
            if session.snapshot_failed:  # the last one was not stored: send it again
                session.snapshot_failed = False
                request["force_snapshot"] = True
            restored: dict[str, Any] | None = None
            try:
                fresh = session.worker is None or not session.worker.alive
                await self._ensure_worker(session)
                if fresh:
                    restored = session.restored
                    request["cwd"] = self.folder(session)  # a new worker starts in it
                    if session.kept:  # the shared state's worker, as the last run left it
                        released = None
                self._runs += 1
                session.running = self._runs
                try:
                    reply: dict[str, Any] = await session.worker.request(
                        request, timeout, on_output=on_output
                    )
                finally:
                    session.running = 0
                outcome = "error" if reply.get("error") else "ok"
                killed = False
            except (TooManySessions, StorageUnavailableError):
                session.released = released  # not run: the next attempt must still say so
                raise
            except WorkerTimeout:
                reply = self._lost(
                    "TimeoutError", f"execution exceeded the timeout of {timeout:g}s"
                )
                outcome, restarted, killed = "timeout", True, True
            except WorkerCrashed as exc:
                reply = self._lost("WorkerCrashed", f"{exc} while running this code")
                outcome, restarted, killed = "crash", True, True
            if killed:
                if session.worker is not None:
                    await session.worker.kill()
                    session.worker = None
                metrics.WORKER_RESTARTS.labels(reason=outcome).inc()
                if not session.closed:
                    with contextlib.suppress(WorkerCrashed, TooManySessions):
                        await self._ensure_worker(session)
                        restored = session.restored
                if restored is not None:
                    reply["error"] = str(reply["error"]).replace(
                        LOST,
                        "the session's state as of its previous run was restored "
                        "into the new worker (see state_restored)",
                    )
            await self._drop_if_closed(session)
            data = reply.pop("blob", None)
            summary = reply.get("snapshot")
            if isinstance(summary, dict) and session.snapshot_error is not None:
                summary["previous_error"] = session.snapshot_error  # written after a reply
            if isinstance(data, bytes) and self.snapshots is not None and not session.closed:
                await self.snapshots.record(
                    session, data, summary if isinstance(summary, dict) else {}
                )
            elapsed = time.perf_counter() - started
            session.executions += 1
            self.touch(session)
            metrics.EXECUTIONS.labels(outcome=outcome).inc()
            metrics.EXECUTION_SECONDS.observe(elapsed)
            reply["execution_time_ms"] = elapsed * 1000
            reply["session_id"] = session.id
            reply["worker_restarted"] = restarted or released is not None
            reply["state_released"] = (
                None
                if released is None
                else f"this session's worker was released because {released}; "
                + (
                    "its variables and imports were restored from the session's snapshot "
                    "(see state_restored)"
                    if restored is not None
                    else "variables and imports from earlier runs are gone (storage is kept)"
                )
            )
            reply["state_restored"] = restored
            if self.recorder is not None:
                await self.recorder(session, code, reply, started_at)
            return reply

    @staticmethod
    def _lost(kind: str, what: str) -> dict[str, Any]:
        return failed_run(kind, f"{what}; the worker was killed and restarted, so {LOST}")

    async def reset(self, session: Session) -> None:
        """A fresh interpreter for the next run (started then, not now)."""
        async with session.lock:
            if session.worker is not None:
                await session.worker.kill()
                session.worker = None
            session.released = None
            if self.snapshots is not None:  # or the next worker would load the old state
                await self.snapshots.forget(session)
            self.touch(session)

    @staticmethod
    async def _drop_if_closed(session: Session) -> None:
        """A session ended while it ran keeps no worker (nothing would ever kill it)."""
        if session.closed and session.worker is not None:
            await session.worker.kill()
            session.worker = None
