"""Where `codemode mcp` sends each call: a plain session server or CodeSessions.

A backend hands a tool a `SessionClient` for the session the call names (or its own
default session) and does the session tools. Both are synchronous on purpose: the SDK
runs a synchronous tool on a worker thread, so one slow run never blocks the protocol.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

import httpx

from codemode_session.client import SessionClient, SessionError
from codemode_session.errors import CodemodeError

if TYPE_CHECKING:
    from codemode_operator.sessions import Sessions

T = TypeVar("T")

# Clients kept for sessions named per call; the oldest is closed past this many.
MAX_CLIENTS = 32


class Unsupported(CodemodeError):
    """The operation exists only for the other kind of backend."""


class Backend:
    """Clients by session, created on first use; `call` retries once where that is safe.

    `allow_session_argument` False confines the server to its own session: a tool call
    that names another in `session` is an error (`codemode mcp --no-session-argument`,
    the gateway's `gateway.mcpAllowSessionArgument: false`), so an agent given this
    server reaches one session whatever else its credentials allow."""

    max_clients = MAX_CLIENTS

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._clients: dict[str, SessionClient] = {}
        self._notes: list[str] = []
        self.allow_session_argument = True

    def bound(self) -> str | None:
        """The session calls go to without a `session` argument (None: not known yet)."""
        return None

    def check_session(self, session: str | None) -> None:
        """Refuse a `session` argument naming another session when they are turned off."""
        if not session or self.allow_session_argument:
            return
        bound = self.bound()
        if session == bound:
            return
        raise CodemodeError(
            f"the `session` argument is turned off on this MCP server: every call goes to "
            f"{repr(bound) if bound else 'its own session'}; leave `session` out"
        )

    # ---- what the tools use ----------------------------------------------------------
    def call(self, session: str | None, fn: Callable[[SessionClient], T]) -> T:
        """`fn` on the session's client; once more when `recover` says that is safe."""
        client = self.resolve(session)
        try:
            return fn(client)
        except Exception as exc:
            if not self.recover(session, client, exc):
                raise
        return fn(self.resolve(session))

    def resolve(self, session: str | None) -> SessionClient:
        """The client for the session a call names (None: this backend's own)."""
        raise NotImplementedError

    def recover(self, session: str | None, client: SessionClient, exc: Exception) -> bool:
        """After `exc`, before the call reached its code: whether to try once more (the
        state that failed is put right), or raise a clearer error."""
        return False

    def take_notes(self) -> list[str]:
        """What happened to a session since the last run (shown with the next run's output)."""
        with self._lock:
            notes, self._notes = self._notes, []
        return notes

    def create(self, name: str | None, workspace: str | None, agent: str | None) -> Any:
        raise NotImplementedError

    def list(self, agent: str | None, workspace: str | None) -> Any:
        raise NotImplementedError

    def history(self, session: str | None, offset: int, limit: int) -> Any:
        raise NotImplementedError

    def fork(self, session: str | None, new_name: str | None) -> Any:
        raise NotImplementedError

    def suspend(self, session: str | None, wait: float | None) -> Any:
        raise Unsupported(self._no_suspend("suspended"))

    def resume(self, session: str | None, wait: float | None) -> Any:
        raise Unsupported(self._no_suspend("resumed"))

    def close(self) -> None:
        """End the server sessions this backend opened and close its connections."""
        with self._lock:
            clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            with contextlib.suppress(Exception):  # the server may be gone already
                self._end(client)
            client.close()

    # ---- shared plumbing -------------------------------------------------------------
    def _end(self, client: SessionClient) -> None:
        client.end_session()

    def _no_suspend(self, what: str) -> str:
        return (
            f"only a CodeSession on Kubernetes can be {what} (codemode mcp --codesession "
            "NAME); a plain session server's sessions live as long as the server keeps them"
        )

    def _keep(self, key: str, client: SessionClient) -> SessionClient:
        with self._lock:
            self._clients[key] = client
            while len(self._clients) > self.max_clients:
                oldest = next(iter(self._clients))
                self._clients.pop(oldest).close()
        return client

    def _drop(self, key: str) -> None:
        with self._lock:
            client = self._clients.pop(key, None)
        if client is not None:
            client.close()


class ServerBackend(Backend):
    """A plain session server (`--url`): sessions are its server sessions; the default is
    one this backend opens on first use, and history is the server's `/api/history`."""

    def __init__(
        self, url: str, token: str | None, workspace: str | None, agent: str | None
    ) -> None:
        super().__init__()
        self.url = url
        self.token = token
        self.workspace = workspace
        self.agent = agent
        self.default: str | None = None
        self.opened: list[str] = []  # ended on close; others' sessions are left alone
        self._plain = SessionClient(url, token=token, workspace_id=workspace)

    def resolve(self, session: str | None) -> SessionClient:
        return self._client(session or self._default())

    def bound(self) -> str | None:
        return self.default

    def recover(self, session: str | None, client: SessionClient, exc: Exception) -> bool:
        if not isinstance(exc, SessionError) or not exc.unknown_session:
            return False
        if session is not None:
            raise CodemodeError(
                f"{session!r} is no session of this server (ended, expired or never "
                "opened): open one with create_session, or leave session out"
            ) from None
        # Our own session ended (idle timeout, a restarted server): carry on in a new
        # one, and say so with the next run, whose variables start afresh.
        self._replace_default(client.session_id or "")
        return True

    def create(self, name: str | None, workspace: str | None, agent: str | None) -> Any:
        if name is not None:
            raise Unsupported(
                "a plain session server issues session ids itself: leave name out "
                "(names are for CodeSessions, codemode mcp --codesession)"
            )
        sid = self._open(workspace or self.workspace, agent or self.agent)
        return {"session": sid, "workspace": workspace or self.workspace, "agent": agent}

    def list(self, agent: str | None, workspace: str | None) -> Any:
        if workspace is not None:
            raise Unsupported("a plain session server lists history by agent: leave workspace out")
        return {
            "default": self.default,
            "opened": list(self.opened),
            "history": self._plain.list_history(agent or self.agent),
        }

    def history(self, session: str | None, offset: int, limit: int) -> Any:
        return self._plain.history(self._named(session), offset=offset, limit=limit)

    def fork(self, session: str | None, new_name: str | None) -> Any:
        if new_name is not None:
            raise Unsupported("a plain session server names a fork itself: leave new_name out")
        return self._plain.fork_history(self._named(session))

    def close(self) -> None:
        super().close()
        self._plain.close()

    def _end(self, client: SessionClient) -> None:
        if client.session_id in self.opened:
            client.end_session()

    def _named(self, session: str | None) -> str:
        if session:
            return session
        if self.default is None:
            raise CodemodeError(
                "this MCP server has not opened its session yet (run_code opens it): name a session"
            )
        return self.default

    def _open(self, workspace: str | None, agent: str | None) -> str:
        client = SessionClient(self.url, token=self.token, workspace_id=workspace)
        try:
            sid = client.create_session(agent_id=agent)
        except BaseException:
            client.close()
            raise
        self.opened.append(sid)
        self._keep(sid, client)
        return sid

    def _default(self) -> str:
        with self._lock:
            if self.default is None:
                self.default = self._open(self.workspace, self.agent)
            return self.default

    def _replace_default(self, gone: str) -> str:
        with self._lock:
            if self.default == gone:
                self._drop(gone)
                self.default = self._open(self.workspace, self.agent)
                self._notes.append(
                    f"session {gone} had ended (expired, or the server restarted); this runs "
                    f"in a new session {self.default}: earlier variables are gone"
                )
            return self.default or gone

    def _client(self, sid: str) -> SessionClient:
        with self._lock:
            found = self._clients.get(sid)
            if found is not None:
                return found
        client = SessionClient(self.url, token=self.token, session_id=sid)
        return self._keep(sid, client)


class KubeBackend(Backend):
    """CodeSessions of one namespace through the operator's `Sessions` client; the
    default is `--codesession` (created in `--workspace` when given and missing)."""

    def __init__(
        self,
        sessions: Sessions,
        name: str,
        workspace: str | None,
        agent: str | None,
        ready_timeout: float,
    ) -> None:
        super().__init__()
        self.sessions = sessions
        self.default = name
        self.workspace = workspace
        self.agent = agent
        self.ready_timeout = ready_timeout

    def resolve(self, session: str | None) -> SessionClient:
        with self._kube():
            return self._client(session or self.default)

    def bound(self) -> str | None:
        return self.default

    def recover(self, session: str | None, client: SessionClient, exc: Exception) -> bool:
        if isinstance(exc, httpx.ConnectError):
            # Its pod was replaced (evicted, resumed): find the new address once.
            self._drop(session or self.default)
            return True
        if isinstance(exc, SessionError) and exc.unknown_session:
            # The pod restarted: a new server session gets the CodeSession's state.
            client.session_id = None
            return True
        return False

    def create(self, name: str | None, workspace: str | None, agent: str | None) -> Any:
        if not name:
            raise CodemodeError("name the CodeSession to create")
        agent = agent or self.agent
        spec = {"agentId": agent} if agent else None
        with self._kube():
            return row(self.sessions.ensure(name, workspace or self.workspace, spec))

    def list(self, agent: str | None, workspace: str | None) -> Any:
        with self._kube():
            return [row(o) for o in self.sessions.list(agent, workspace)]

    def history(self, session: str | None, offset: int, limit: int) -> Any:
        with self._kube():
            return self.sessions.history(session or self.default, offset, limit)

    def fork(self, session: str | None, new_name: str | None) -> Any:
        if not new_name:
            raise CodemodeError("name the new CodeSession: new_name")
        with self._kube():
            return row(self.sessions.fork(session or self.default, new_name))

    def suspend(self, session: str | None, wait: float | None) -> Any:
        name = session or self.default
        with self._kube():
            found = self.sessions.suspend(name, wait)
        self._drop(name)  # its pod goes; a later call finds the resumed one
        return row(found or {"metadata": {"name": name}})

    def resume(self, session: str | None, wait: float | None) -> Any:
        name = session or self.default
        with self._kube():
            found = self.sessions.resume(name, wait)
        return row(found or {"metadata": {"name": name}})

    def close(self) -> None:
        super().close()
        self.sessions.close()

    def _client(self, name: str) -> SessionClient:
        with self._lock:
            found = self._clients.get(name)
        if found is not None:
            return found
        # Only the default session is created when missing; others must exist.
        workspace = self.workspace if name == self.default else None
        url, token = self.sessions.address(name, workspace, self.ready_timeout)
        return self._keep(name, SessionClient(url, token=token))

    @contextlib.contextmanager
    def _kube(self) -> Iterator[None]:
        from codemode_operator.exec_cmd import _kubernetes_errors

        with _kubernetes_errors():
            yield


def row(obj: dict[str, Any]) -> dict[str, Any]:
    """A CodeSession as the session tools show it (what `codemode sessions --json` shows)."""
    status = obj.get("status") or {}
    spec = obj.get("spec") or {}
    return {
        "name": obj["metadata"]["name"],
        "workspace": spec.get("workspaceRef"),
        "agent": spec.get("agentId"),
        "phase": status.get("phase"),
        "state_id": status.get("stateId"),
        "last_snapshot": status.get("lastSnapshotTime"),
        "created": obj["metadata"].get("creationTimestamp"),
    }
