"""The gateway's MCP endpoint (streamable HTTP): `codemode mcp`'s tools for the caller.

`/mcp/v1/namespaces/{ns}/codesessions/{name}` is bound to one CodeSession (calls go to
it unless they name another in `session`); `/mcp/v1/namespaces/{ns}` to none (every code
call names its session). `?workspace=W` lets the bound session be created on first use.
With the `session` argument turned off (GATEWAY_MCP_SESSION_ARGUMENT=off), only bound
endpoints are served and a call naming another session is an error: an agent given an
endpoint reaches that session alone, whatever else its token's RBAC allows.

The gateway's own privileges never reach a session for an MCP caller: each tool call
runs with the caller's bearer token, kept in a context variable for the request. Code
tools go through the gateway's own session routes (TokenReview, SubjectAccessReview on
`codesessions/exec`, resume, create on first use), as any other request; session tools
(create, list, history, fork, suspend, resume) call the Kubernetes API with the caller's
token, so its RBAC on CodeSessions decides.
"""

from __future__ import annotations

import base64
import contextlib
import contextvars
import copy
import hashlib
import hmac
import os
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import parse_qs

from codemode_session.client import SessionClient, SessionError
from codemode_session.errors import CodemodeError
from codemode_session.mcp.backends import Backend, row
from kubernetes import client

from codemode_operator import gateway_client
from codemode_operator.gateway.proxy import Receive, Scope, Send
from codemode_operator.gateway.routing import _LABEL, _SUBDOMAIN, BadRoute

if TYPE_CHECKING:
    from mcp.server.streamable_http_manager import StreamableHTTPSessionManager

    from codemode_operator.gateway.auth import User
    from codemode_operator.sessions import Sessions

T = TypeVar("T")
PREFIX = "/mcp/v1/namespaces/"
SESSION_HEADER = b"mcp-session-id"
# Sessions' clients kept per gateway replica (MCP session x CodeSession); the oldest is
# dropped past this, and with it the server session that held its variables.
MAX_CLIENTS = 4096


@dataclass(frozen=True)
class Caller:
    """Who makes this MCP request and what its URL binds it to."""

    token: str
    namespace: str
    bound: str | None  # the endpoint's CodeSession, if it names one
    workspace: str | None  # where the bound session is created when missing
    mcp_session: str  # the MCP session id ("" before one exists)


CALLER: contextvars.ContextVar[Caller] = contextvars.ContextVar("codemode_mcp_caller")


def parse(path: str, query: bytes = b"") -> tuple[str, str | None, str | None]:
    """`/mcp/v1/namespaces/{ns}[/codesessions/{name}][?workspace=W]` -> (ns, name, W)."""
    usage = f"use {PREFIX}{{ns}} or {PREFIX}{{ns}}/codesessions/{{name}}"
    if not path.startswith(PREFIX):
        raise BadRoute(f"no namespace in MCP path {path!r}: {usage}")
    parts = path[len(PREFIX) :].rstrip("/").split("/")
    if len(parts) not in (1, 3) or (len(parts) == 3 and parts[1] != "codesessions"):
        raise BadRoute(f"{path!r} is no MCP endpoint: {usage}")
    if not _LABEL.fullmatch(parts[0]):
        raise BadRoute(f"{parts[0]!r} is not a namespace name")
    name = parts[2] if len(parts) == 3 else None
    if name is not None and not _SUBDOMAIN.fullmatch(name):
        raise BadRoute(f"{name!r} is not a CodeSession name")
    workspaces = parse_qs(query.decode("latin-1")).get("workspace") or []
    return parts[0], name, workspaces[0] if workspaces else None


def caller_configuration(base: client.Configuration, token: str) -> client.Configuration:
    """The API server's address and CA from the gateway's configuration, with the
    caller's token as the only credential: no client certificate, no basic auth, and no
    refresh hook (in a pod, it would put the gateway's own token back)."""
    conf = copy.deepcopy(base)
    conf.api_key = {"authorization": f"Bearer {token}"}
    conf.api_key_prefix = {}
    conf.refresh_api_key_hook = None
    conf.cert_file = conf.key_file = None
    conf.username = conf.password = None
    return conf


class GatewayBackend(Backend):
    """`codemode mcp`'s backend for the gateway's callers (see the module's docstring)."""

    max_clients = MAX_CLIENTS

    def __init__(
        self,
        gateway_url: str,
        kube_conf: client.Configuration,
        wait: float,
        allow_session_argument: bool = True,
    ) -> None:
        super().__init__()
        self.gateway_url = gateway_url.rstrip("/")
        self.kube_conf = kube_conf
        self.wait = wait
        self.allow_session_argument = allow_session_argument

    def bound(self) -> str | None:
        return _caller().bound

    # ---- code tools: through the gateway's own routes, with the caller's token ---------
    def resolve(self, session: str | None) -> SessionClient:
        caller = _caller()
        return self._client(caller, self._name(caller, session))

    def recover(self, session: str | None, client: SessionClient, exc: Exception) -> bool:
        if isinstance(exc, SessionError) and exc.unknown_session:
            client.session_id = None  # the pod restarted: a new server session
            return True
        return False

    def forget(self, mcp_session: str) -> None:
        """An MCP session ended: its clients go (their server sessions expire idle)."""
        with self._lock:
            keys = [k for k in self._clients if k.startswith(mcp_session + "/")]
        for key in keys:
            self._drop(key)

    def _name(self, caller: Caller, session: str | None) -> str:
        name = session or caller.bound
        if not name:
            raise CodemodeError(
                f"this endpoint ({PREFIX}{caller.namespace}) is bound to no session: name a "
                f"CodeSession in `session`, or connect to "
                f"{PREFIX}{caller.namespace}/codesessions/NAME"
            )
        if not _SUBDOMAIN.fullmatch(name):
            raise CodemodeError(f"{name!r} is not a CodeSession name")
        return name

    def _client(self, caller: Caller, name: str) -> SessionClient:
        key = f"{caller.mcp_session}/{caller.namespace}/{name}"
        with self._lock:
            found = self._clients.get(key)
        if found is None:
            url = gateway_client.session_url(self.gateway_url, caller.namespace, name)
            # Ask for it once: resumed, or created in the endpoint's workspace, and Ready.
            workspace = caller.workspace if name == caller.bound else None
            gateway_client.wait_ready(url, caller.token, workspace, self.wait)
            found = self._keep(key, SessionClient(url, token=caller.token))
        found.token = caller.token  # this request's (a client may rotate it)
        return found

    # ---- session tools: the Kubernetes API with the caller's token ---------------------
    def create(self, name: str | None, workspace: str | None, agent: str | None) -> Any:
        if not name:
            raise CodemodeError("name the CodeSession to create")
        caller = _caller()
        spec = {"agentId": agent} if agent else None
        with self._sessions(caller) as sessions:
            return row(sessions.ensure(name, workspace or caller.workspace, spec))

    def list(self, agent: str | None, workspace: str | None) -> Any:
        with self._sessions(_caller()) as sessions:
            return [row(o) for o in sessions.list(agent, workspace)]

    def history(self, session: str | None, offset: int, limit: int) -> Any:
        """Read through the gateway from the session's server, or, when it does not run,
        another running session of its workspace that the caller may use."""
        from codemode_operator.sessions import usable

        caller = _caller()
        name = self._name(caller, session)
        with self._sessions(caller) as sessions:
            found = sessions.get(name)
            if found is None:
                raise CodemodeError(f"CodeSession {name!r} does not exist in {caller.namespace!r}")
            state_id = (found.get("status") or {}).get("stateId")
            if not state_id:
                raise CodemodeError(f"CodeSession {name!r} has not started yet: no history")
            readers = [found] if usable(found) else []
            if not readers:
                workspace = (found.get("spec") or {}).get("workspaceRef")
                readers = [o for o in sessions.list(workspace=workspace) if usable(o)]
        refused: SessionError | None = None
        for reader in readers:
            url = gateway_client.session_url(
                self.gateway_url, caller.namespace, reader["metadata"]["name"]
            )
            with SessionClient(url, token=caller.token) as reading:
                try:
                    return reading.history(state_id, offset=offset, limit=limit)
                except SessionError as exc:
                    if exc.status != 403:
                        raise
                    refused = exc
        if refused is not None:
            raise refused
        phase = (found.get("status") or {}).get("phase")
        raise CodemodeError(
            f"CodeSession {name!r} is {phase} and no session of its workspace runs to read "
            "its history: resume it"
        )

    def fork(self, session: str | None, new_name: str | None) -> Any:
        if not new_name:
            raise CodemodeError("name the new CodeSession: new_name")
        caller = _caller()
        with self._sessions(caller) as sessions:
            return row(sessions.fork(self._name(caller, session), new_name))

    def suspend(self, session: str | None, wait: float | None) -> Any:
        caller = _caller()
        name = self._name(caller, session)
        with self._sessions(caller) as sessions:
            found = sessions.suspend(name, wait)
        self._drop(f"{caller.mcp_session}/{caller.namespace}/{name}")
        return row(found or {"metadata": {"name": name}})

    def resume(self, session: str | None, wait: float | None) -> Any:
        caller = _caller()
        name = self._name(caller, session)
        with self._sessions(caller) as sessions:
            found = sessions.resume(name, wait)
        return row(found or {"metadata": {"name": name}})

    @contextlib.contextmanager
    def _sessions(self, caller: Caller) -> Iterator[Sessions]:
        from codemode_operator.exec_cmd import _kubernetes_errors
        from codemode_operator.sessions import Sessions

        api = client.ApiClient(caller_configuration(self.kube_conf, caller.token))
        try:
            with _kubernetes_errors():
                yield Sessions(
                    caller.namespace, api=api, gateway=self.gateway_url, token=caller.token
                )
        finally:
            api.close()  # type: ignore[no-untyped-call]


def _caller() -> Caller:
    caller = CALLER.get(None)
    if caller is None:  # a tool ran outside a gateway request: a bug, not a caller's error
        raise RuntimeError("no MCP caller in this context")
    return caller


class Replicas:
    """Which gateway replica holds an MCP session. The SDK keeps a session in the process
    that opened it; its id, as the client sees it, carries that replica's address, signed
    with a key all replicas share (so a client cannot name another address), and a request
    that reaches another replica is passed on to it."""

    def __init__(self, own: str | None, key: bytes | None) -> None:
        self.own = own  # "ip:port" of this replica, None: one replica, nothing to pass on
        self.key = key or os.urandom(32)

    def _sign(self, sid: str, owner: str) -> str:
        digest = hmac.new(self.key, f"{sid}@{owner}".encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest[:18]).decode()

    def tag(self, sid: str) -> str:
        """The id the client is given for the SDK's `sid`."""
        if self.own is None:
            return sid
        return f"{sid}.{self.own}.{self._sign(sid, self.own)}"

    def owner(self, tagged: str) -> tuple[str, str | None]:
        """(the SDK's id, the replica to pass the request to, None for this one). An id
        whose signature does not match stays as it is: the SDK answers 404 for it."""
        sid, _, rest = tagged.partition(".")
        address, _, signature = rest.rpartition(".")
        if not address or not hmac.compare_digest(signature, self._sign(sid, address)):
            return tagged, None
        return sid, None if address == self.own else address


class McpEndpoint:
    """The MCP SDK's streamable HTTP session manager serving `codemode mcp`'s tools."""

    def __init__(self, backend: GatewayBackend, replicas: Replicas | None = None) -> None:
        from codemode_session.mcp.server import build

        self.backend = backend
        self.replicas = replicas or Replicas(None, None)
        self.server = build(backend)
        # Creates the session manager. Not bound to localhost, so no DNS-rebinding check
        # of Host: every request carries a bearer token, which a browser never adds.
        self.server.streamable_http_app(host="0.0.0.0")
        self.manager: StreamableHTTPSessionManager = self.server.session_manager

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """The sessions' task group, for the gateway's lifetime."""
        async with self.manager.run():
            yield

    async def handle(
        self, scope: Scope, receive: Receive, send: Send, caller: Caller, user: User
    ) -> int:
        """Serve one MCP request as `caller`; the answer's status (for metrics)."""
        from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
        from mcp.server.auth.provider import AccessToken

        # The SDK binds an MCP session to the identity that opened it: another caller's
        # requests for it answer 404, as for a session that does not exist.
        token = AccessToken(
            token=caller.token, client_id=user.username, subject=user.uid or None, scopes=[]
        )
        headers = [
            (k, self.replicas.owner(v.decode("latin-1"))[0].encode() if k == SESSION_HEADER else v)
            for k, v in scope["headers"]
        ]
        scope = {**scope, "user": AuthenticatedUser(token), "headers": headers}
        status = 500

        async def sending(message: Any) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                message = {
                    **message,
                    "headers": [
                        (k, self.replicas.tag(v.decode("latin-1")).encode())
                        if k.lower() == SESSION_HEADER
                        else (k, v)
                        for k, v in message.get("headers", [])
                    ],
                }
            await send(message)

        reset = CALLER.set(caller)
        try:
            await self.manager.handle_request(scope, receive, sending)
        finally:
            CALLER.reset(reset)
        if scope["method"] == "DELETE" and status < 400 and caller.mcp_session:
            self.backend.forget(caller.mcp_session)
        return status
