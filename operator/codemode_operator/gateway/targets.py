"""Where a session's server is and its token: found through the API server, remembered,
and made to exist and run first when it does not.

A resolved address is reused while the CodeSession it was read from is unchanged, which
the gateway's watch of CodeSessions (informer.py) tells without a request: the same uid,
phase, pod, token Secret and pod version. A deleted session, a replaced pod or a new
token is a change, so the next request looks the session up again. A session the watch
has not shown yet (just created) is read with a GET; and while the watch is out of step
(broken, reconnecting), a resolved address is reused for `ttl` seconds only, as without
a watch.

A suspended session is resumed (spec.suspend: false) and the request waits for it; a
missing one is created when the request names a workspace and the caller may create
CodeSessions. Waiting is bounded: then the request is answered 503 with the reason.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from codemode_operator import API_VERSION, GROUP, VERSION
from codemode_operator.gateway.informer import Informer
from codemode_operator.gateway.kubeapi import ApiError, KubeApi, Obj
from codemode_operator.gateway.routing import Route
from codemode_operator.vocabulary import Phase, is_final

PORT = 8080
POLL_SECONDS = 0.25


@dataclass(frozen=True)
class Target:
    url: str  # the session server's base URL, its pod's address
    token: str  # the session's own token (never the caller's)


@dataclass(frozen=True)
class _Known:
    target: Target
    seen: tuple[Any, ...]  # the session's fingerprint when it was resolved
    expires: float  # for when no watch vouches for it


def fingerprint(session: Obj) -> tuple[Any, ...]:
    """What a resolved address depends on: when any of it changes, look again."""
    meta, status = session.get("metadata") or {}, session.get("status") or {}
    return (
        meta.get("uid"),
        meta.get("deletionTimestamp"),
        status.get("phase"),
        status.get("podName"),
        status.get("tokenSecret"),
        status.get("podResourceVersion"),
    )


class Refused(Exception):
    """The request cannot reach its session; status and reason are the answer."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status, self.reason = status, reason


def _session_path(namespace: str, name: str = "") -> str:
    base = f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/codesessions"
    return f"{base}/{name}" if name else base


class Targets:
    def __init__(
        self,
        api: KubeApi,
        ttl: float = 5.0,
        wait: float = 120.0,
        clock: Callable[[], float] = time.monotonic,
        informer: Informer | None = None,
    ) -> None:
        self.api, self.ttl, self.wait, self.clock = api, ttl, wait, clock
        self.informer = informer
        self._known: dict[tuple[str, str], _Known] = {}
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """The watch of CodeSessions, if any, for the gateway's lifetime."""
        if self.informer is None:
            yield
            return
        async with self.informer.running():
            yield

    def forget(self, route: Route) -> None:
        """The remembered address failed (pod replaced or suspended): look it up again."""
        self._known.pop(route.key, None)

    async def session(self, namespace: str, name: str) -> Obj | None:
        """The CodeSession as the watch last saw it, else as a GET finds it."""
        if self.informer is not None and self.informer.synced(namespace):
            found = self.informer.get(namespace, name)
            if found is not None:
                return found
        return await self.api.get_or_none(_session_path(namespace, name))

    def _valid(self, route: Route, known: _Known) -> bool:
        informer = self.informer
        if informer is not None and informer.synced(route.namespace):
            session = informer.get(route.namespace, route.name)
            return session is not None and fingerprint(session) == known.seen
        return known.expires > self.clock()

    async def resolve(
        self,
        route: Route,
        workspace: str | None = None,
        may_create: Callable[[], Awaitable[bool]] | None = None,
    ) -> Target:
        known = self._known.get(route.key)
        if known is not None and self._valid(route, known):  # the common case: dict reads
            return known.target
        lock = self._locks.setdefault(route.key, asyncio.Lock())
        try:
            async with lock:  # one lookup (and one resume or create) per session at a time
                known = self._known.get(route.key)
                if known is not None and self._valid(route, known):
                    return known.target
                self._known.pop(route.key, None)  # gone or changed: never routed to again
                target, session = await self._find(route, workspace, may_create)
                self._known[route.key] = _Known(
                    target, fingerprint(session), self.clock() + self.ttl
                )
                return target
        finally:
            if not lock.locked():  # nobody waits: names seen once must not pile up
                self._locks.pop(route.key, None)

    async def _find(
        self,
        route: Route,
        workspace: str | None,
        may_create: Callable[[], Awaitable[bool]] | None,
    ) -> tuple[Target, Obj]:
        """The session's address and token, and the session they were read from."""
        session = await self.session(*route.key)
        if session is None:
            session = await self._create(route, workspace, may_create)
        if (session.get("metadata") or {}).get("deletionTimestamp"):
            raise Refused(409, f"CodeSession {route.name!r} is being deleted")
        if (session.get("spec") or {}).get("suspend"):
            await self.api.call("PATCH", _session_path(*route.key), {"spec": {"suspend": False}})
        session = await self._wait_ready(route, session)
        status = session.get("status") or {}
        secret = await self.api.get_or_none(
            f"/api/v1/namespaces/{route.namespace}/secrets/{status.get('tokenSecret', '')}"
        )
        token = ((secret or {}).get("data") or {}).get("token")
        if not token:
            raise Refused(503, f"CodeSession {route.name!r} has no token Secret yet; retry")
        target = Target(await self._address(route, status), base64.b64decode(token).decode())
        return target, session

    async def _create(
        self,
        route: Route,
        workspace: str | None,
        may_create: Callable[[], Awaitable[bool]] | None,
    ) -> Obj:
        missing = f"CodeSession {route.name!r} does not exist in namespace {route.namespace!r}"
        if not workspace:
            raise Refused(
                404, f"{missing}; name a workspace (header X-Codemode-Workspace) to create it"
            )
        if may_create is None or not await may_create():
            raise Refused(403, f"{missing}, and the caller may not create CodeSessions there")
        body = {
            "apiVersion": API_VERSION,
            "kind": "CodeSession",
            "metadata": {"name": route.name, "namespace": route.namespace},
            "spec": {"workspaceRef": workspace},
        }
        try:
            return await self.api.call("POST", _session_path(route.namespace), body)
        except ApiError as exc:
            if exc.status == 409:  # another request made it first
                return await self.api.get_or_none(_session_path(*route.key)) or body
            if exc.status in (400, 422):
                raise Refused(400, f"cannot create {route.name!r}: {exc.message}") from None
            raise

    async def _wait_ready(self, route: Route, session: Obj) -> Obj:
        deadline = self.clock() + self.wait
        while True:
            status = session.get("status") or {}
            phase = status.get("phase")
            if phase == Phase.READY and status.get("podName") and status.get("tokenSecret"):
                return session
            if is_final(phase):
                raise Refused(
                    409, f"CodeSession {route.name!r} is {phase}: {status.get('reason', '')}"
                )
            if self.clock() > deadline:
                raise Refused(
                    503,
                    f"CodeSession {route.name!r} not Ready after {self.wait:g}s "
                    f"({phase or 'no status yet'}: {status.get('reason', '')}); retry",
                )
            await asyncio.sleep(POLL_SECONDS)
            found = await self.api.get_or_none(_session_path(*route.key))
            if found is None:
                raise Refused(404, f"CodeSession {route.name!r} was deleted")
            session = found

    async def _address(self, route: Route, status: dict[str, Any]) -> str:
        """The pod's IP (one hop fewer than its Service), else the Service's name."""
        pod = await self.api.get_or_none(
            f"/api/v1/namespaces/{route.namespace}/pods/{status.get('podName', '')}"
        )
        ip = ((pod or {}).get("status") or {}).get("podIP")
        if ip and not (pod or {}).get("metadata", {}).get("deletionTimestamp"):
            return f"http://{ip}:{PORT}"
        return str(
            status.get("endpoint") or f"http://{route.name}-session.{route.namespace}.svc:{PORT}"
        )
