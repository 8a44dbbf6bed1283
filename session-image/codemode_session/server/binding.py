"""A warm pool pod's one-shot bind (SESSION_POOL).

A pool pod starts before any CodeSession names it, so it cannot know the state id its
snapshots and history go under, the agent its history is indexed under, or the state
a fork starts from. It runs nothing until the operator binds it (POST /bind): the
binding sets those three, loads the state as a CodeSession pod's start does
(SessionManager.prime), and can never change again, so a pod is one CodeSession's for
good. The same binding sent twice (an operator retrying) is answered as the first was;
another one is refused (409).
"""

from __future__ import annotations

import asyncio
from typing import Any

from codemode_session.errors import ConflictError
from codemode_session.server.history import History
from codemode_session.server.sessions import SessionManager
from codemode_session.server.snapshots import Snapshots
from codemode_session.storage.history import validate_agent_id, validate_history_id

NOT_BOUND = (
    "this warm pool pod is not bound to a CodeSession yet: it runs no code until the "
    "operator binds it (POST /bind); use the endpoint in the CodeSession's status"
)


class Binding:
    def __init__(
        self, pool: bool, state_id: str | None, agent_id: str, fork_from: str | None
    ) -> None:
        self.pool = pool
        # (state_id, agent_id, fork_from) once bound; a server that is not a pool pod, or a
        # pool pod's restarted container that read its binding, starts bound
        self.bound: tuple[str, str, str | None] | None = (
            (state_id, agent_id, fork_from) if state_id is not None else None
        )
        self._lock = asyncio.Lock()

    @property
    def refusal(self) -> str | None:
        """Why a run is refused (None: it may run)."""
        return NOT_BOUND if self.pool and self.bound is None else None

    async def bind(
        self,
        state_id: str,
        agent_id: str | None,
        fork_from: str | None,
        history: History,
        snapshots: Snapshots,
        sessions: SessionManager,
    ) -> dict[str, Any]:
        validate_history_id(state_id)
        agent = validate_agent_id(agent_id) if agent_id else history.default_agent
        if fork_from is not None:
            validate_history_id(fork_from)
        wanted = (state_id, agent, fork_from)
        async with self._lock:
            if self.bound is None:
                if not self.pool:
                    raise ConflictError(
                        "this server is not a warm pool pod (SESSION_POOL): nothing to bind"
                    )
                history.state_id, history.default_agent = state_id, agent
                snapshots.state_id, snapshots.fork_from = state_id, fork_from
                self.bound = wanted
                sessions.prime()
            elif self.bound != wanted:
                raise ConflictError(
                    f"this pod is bound to state {self.bound[0]!r} for good: a pool pod is "
                    "never bound twice"
                )
        await sessions.wait_primed()
        return {
            "bound": True,
            "state_id": state_id,
            "agent_id": agent,
            "fork_from": fork_from,
            "restored": sessions.prime_report,
        }
