"""Sessions: server-issued ids, one worker each, expiry when idle.

Ids are 192-bit random tokens; they are never listed, so knowing one is the
capability to use that session.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from codemode_session.results import failed_run
from codemode_session.server import metrics
from codemode_session.workers import WorkerCrashed, WorkerPool, WorkerTimeout

CLIENT_ID_RE = re.compile(r"^[A-Za-z0-9_-]{16,128}$")


class TooManySessions(Exception):
    pass


@dataclass
class Session:
    id: str
    workspace_id: str | None
    created_at: float = field(default_factory=time.time)
    last_used: float = field(default_factory=time.time)
    executions: int = 0
    worker: Any = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    closed: bool = False


class SessionManager:
    def __init__(self, pool: WorkerPool, idle_timeout: float, max_sessions: int) -> None:
        self.pool = pool
        self.idle_timeout = idle_timeout
        self.max_sessions = max_sessions
        self._sessions: dict[str, Session] = {}
        self.last_activity = time.time()
        self._sweeper: asyncio.Task[None] | None = None

    @property
    def count(self) -> int:
        return len(self._sessions)

    def start(self) -> None:
        self.pool.refill()
        self._sweeper = asyncio.create_task(self._sweep_forever())

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        for session_id in list(self._sessions):
            await self.end(session_id)
        await self.pool.close()

    async def create(self, workspace_id: str | None, session_id: str | None = None) -> Session:
        if session_id is not None and session_id in self._sessions:
            # A client-chosen id of an expired session not yet swept: end it first, or its
            # worker would be orphaned (never killed) when the new session takes the id.
            await self.end(session_id)
        if len(self._sessions) >= self.max_sessions:
            await self.sweep()
            if len(self._sessions) >= self.max_sessions:
                raise TooManySessions()
        session = Session(id=session_id or secrets.token_urlsafe(24), workspace_id=workspace_id)
        self._sessions[session.id] = session
        metrics.SESSIONS.set(len(self._sessions))
        self.touch(session)
        return session

    def get(self, session_id: str) -> Session | None:
        session = self._sessions.get(session_id)
        if session is None:
            return None
        if time.time() - session.last_used > self.idle_timeout and not session.lock.locked():
            return None
        return session

    def touch(self, session: Session) -> None:
        session.last_used = self.last_activity = time.time()

    async def end(self, session_id: str) -> bool:
        session = self._sessions.pop(session_id, None)
        metrics.SESSIONS.set(len(self._sessions))
        if session is None:
            return False
        session.closed = True
        if session.worker is not None:
            await session.worker.kill()
            session.worker = None
        return True

    async def sweep(self) -> int:
        now = time.time()
        idle = [
            s.id
            for s in self._sessions.values()
            if now - s.last_used > self.idle_timeout and not s.lock.locked()
        ]
        for session_id in idle:
            await self.end(session_id)
        return len(idle)

    async def _sweep_forever(self) -> None:
        interval = max(1.0, min(30.0, self.idle_timeout / 4))
        while True:
            await asyncio.sleep(interval)
            await self.sweep()

    async def _ensure_worker(self, session: Session) -> None:
        if session.worker is None or not session.worker.alive:
            if session.worker is not None:
                await session.worker.kill()
            session.worker = await self.pool.acquire(session.workspace_id)

    async def execute(self, session: Session, code: str, timeout: float) -> dict[str, Any]:
        async with session.lock:
            self.touch(session)
            started = time.perf_counter()
            # A worker that died between runs (killed from outside, OOM) took the
            # session's state with it: the reply must say so, even if this run succeeds.
            restarted = session.worker is not None and not session.worker.alive
            if restarted:
                metrics.WORKER_RESTARTS.labels(reason="lost").inc()
            try:
                await self._ensure_worker(session)
                reply: dict[str, Any] = await session.worker.request(
                    {"op": "exec", "code": code}, timeout
                )
                outcome = "error" if reply.get("error") else "ok"
                killed = False
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
                    with contextlib.suppress(WorkerCrashed):
                        await self._ensure_worker(session)
            await self._drop_if_closed(session)
            elapsed = time.perf_counter() - started
            session.executions += 1
            self.touch(session)
            metrics.EXECUTIONS.labels(outcome=outcome).inc()
            metrics.EXECUTION_SECONDS.observe(elapsed)
            reply["execution_time_ms"] = elapsed * 1000
            reply["session_id"] = session.id
            reply["worker_restarted"] = restarted
            return reply

    @staticmethod
    def _lost(kind: str, what: str) -> dict[str, Any]:
        return failed_run(
            kind,
            f"{what}; the worker was killed and restarted, so this "
            "session's state (variables, imports) was lost",
        )

    async def reset(self, session: Session) -> None:
        async with session.lock:
            if session.worker is not None:
                await session.worker.kill()
                session.worker = None
            self.touch(session)
            await self._ensure_worker(session)
            await self._drop_if_closed(session)

    @staticmethod
    async def _drop_if_closed(session: Session) -> None:
        """A session ended while it ran keeps no worker (nothing would ever kill it)."""
        if session.closed and session.worker is not None:
            await session.worker.kill()
            session.worker = None
