"""What the request handlers share: settings, sessions, and each workspace's storage.

Lookups raise the domain's errors (`server.http_errors` maps them to statuses),
so every handler refuses an unknown session or a foreign workspace alike.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from codemode_session.errors import ConflictError, ForbiddenError
from codemode_session.names import validate_workspace_id
from codemode_session.server.config import ServerConfig
from codemode_session.server.http_errors import SessionLimitReached, UnknownSession
from codemode_session.server.sessions import CLIENT_ID_RE, Session, SessionManager, TooManySessions
from codemode_session.storage.base import Storage
from codemode_session.storage.factory import storage_from_env

# Our reason for the 400 `Invalid session ID` (http_errors.UnknownSession), in its
# `error` (earlier servers answered it as a 404's `detail`).
UNKNOWN_SESSION = "unknown or expired session"
UNKNOWN_SESSION_HINT = f"{UNKNOWN_SESSION}; omit X-Session-ID or create one with POST /sessions"


class StorageRegistry:
    """One storage object per workspace, sharing the server's connection settings."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env
        self._by_ws: dict[str | None, Storage] = {}

    def get(self, workspace_id: str | None) -> Storage:
        if workspace_id not in self._by_ws:
            self._by_ws[workspace_id] = storage_from_env(self.env, workspace_id)
        return self._by_ws[workspace_id]

    async def close(self) -> None:
        for storage in self._by_ws.values():
            await storage.close()


@dataclass
class ServerState:
    config: ServerConfig
    storages: StorageRegistry
    started: float = field(default_factory=time.time)
    _sessions: SessionManager | None = None
    # Why no session may open now (a warm pool pod not bound yet: server/binding.py)
    refusal: Callable[[], str | None] = lambda: None

    @property
    def sessions(self) -> SessionManager:
        if self._sessions is None:
            raise RuntimeError("the server has not started (its lifespan did not run)")
        return self._sessions

    def start(self, sessions: SessionManager) -> None:
        self._sessions = sessions
        sessions.start(self.config.workspace_id)

    async def close(self) -> None:
        if self._sessions is not None:
            await self._sessions.close()
        await self.storages.close()

    def resolve_workspace(self, requested: str | None) -> str | None:
        """The workspace a new session is for: the server's, unless another is allowed."""
        pinned = self.config.workspace_id
        if requested is None:
            return pinned
        validate_workspace_id(requested)
        if pinned is not None and requested != pinned:
            raise ForbiddenError(f"this server serves workspace {pinned!r} only")
        return requested

    def session(
        self, session_id: str, owner: str | None, hint: str = "create one with POST /sessions"
    ) -> Session:
        session = self.sessions.get(session_id, owner)
        if session is None:
            raise UnknownSession(f"{UNKNOWN_SESSION}; {hint}")
        return session

    def client_id_allowed(self, session_id: str) -> bool:
        """`session_id` may name a session the caller creates (client-chosen ids on, the
        id well formed, and no live session of another caller under it)."""
        return (
            self.config.accept_client_session_ids
            and CLIENT_ID_RE.match(session_id) is not None
            and not self.sessions.taken(session_id)
        )

    def storage_for(self, session_id: str | None, owner: str | None = None) -> Storage:
        """The storage of the session's workspace; without a session, the server's.

        A client-chosen id that names no session yet (py-code-mode's client sends its id
        on every request, before the first run too) works in the server's workspace,
        where its session will be created."""
        workspace = self.config.workspace_id
        if session_id:
            session = self.sessions.get(session_id, owner)
            if session is not None:
                workspace = session.workspace_id
            elif not self.client_id_allowed(session_id):
                raise UnknownSession(UNKNOWN_SESSION_HINT)
        return self.storages.get(workspace)

    async def open_session(
        self,
        workspace: str | None,
        session_id: str | None = None,
        owner: str | None = None,
        agent_id: str | None = None,
    ) -> Session:
        refused = self.refusal()
        if refused is not None:
            raise ConflictError(refused)
        try:
            return await self.sessions.create(
                workspace, session_id=session_id, owner=owner, agent_id=agent_id
            )
        except TooManySessions:
            raise self._limit() from None

    def _limit(self) -> SessionLimitReached:
        return SessionLimitReached(
            f"session limit reached: all {self.config.max_sessions} workers are running "
            "code; retry when one finishes, or end a session with DELETE /sessions"
        )

    async def session_for_execute(
        self, session_id: str | None, owner: str | None, agent_id: str | None = None
    ) -> Session:
        """The session a run goes to: a new one without an id, the caller's under its id,
        and (client-chosen ids, as py-code-mode's client sends) a new one bound to the
        caller's token under an id no live session has."""
        workspace = self.config.workspace_id
        refused = self.refusal()
        if refused is not None:
            raise ConflictError(refused)
        if session_id is None:
            return await self.open_session(workspace, agent_id=agent_id)
        session = self.sessions.get(session_id, owner)
        if session is not None:
            return session
        if self.client_id_allowed(session_id):
            return await self.open_session(
                workspace, session_id=session_id, owner=owner, agent_id=agent_id
            )
        raise UnknownSession(UNKNOWN_SESSION_HINT)

    async def execute(
        self,
        session: Session,
        code: str,
        timeout: float,
        on_output: Callable[[str, str], None] | None = None,
    ) -> dict[str, Any]:
        try:
            return await self.sessions.execute(session, code, timeout, on_output)
        except TooManySessions:
            raise self._limit() from None
