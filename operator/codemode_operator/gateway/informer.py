"""The CodeSessions the gateway routes to, kept in memory by a watch of the API server.

Why: with a lookup cache, every session costs the gateway a GET of the CodeSession, its
pod and its token Secret every few seconds, and a deleted or replaced session is still
routed to until its entry expires. A watch (an informer, as client-go calls it) costs one
list at start and then one event per change: a request's lookup is a dict read, and a
deletion is known as soon as the API server says so.

The copy is trusted only while it is in step with the API server: after the list and
while the watch that followed it is connected. When the watch breaks (a network error, an
error event, 410 Gone when its resourceVersion is too old), the scope is out of step until
a new list succeeds, and `synced` says so: the gateway then looks sessions up with GETs
(targets.py) rather than route by a copy that may have missed a deletion. Reconnection
waits longer after each failure (0.5 s doubling to 30 s, with jitter), so an API server
that is down is not hammered.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any

import httpx

from codemode_operator import GROUP, VERSION
from codemode_operator.gateway.kubeapi import ApiError, Gone, KubeApi, Obj

log = logging.getLogger(__name__)

# A watch is ended by the API server after this long (a little randomised, so replicas'
# watches do not all restart at once) and resumed from its resourceVersion: a connection
# that went silent is found by the read timeout at the latest.
WATCH_SECONDS = 240
READ_MARGIN = 30.0
BACKOFF_FIRST, BACKOFF_MAX = 0.5, 30.0
PAGE = 500


def _slim(obj: Obj) -> Obj:
    """What the gateway reads of a CodeSession: its managedFields, often the larger part
    of an object, are dropped."""
    meta = {k: v for k, v in (obj.get("metadata") or {}).items() if k != "managedFields"}
    return {**obj, "metadata": meta}


def _key(obj: Obj) -> tuple[str, str]:
    meta = obj.get("metadata") or {}
    return str(meta.get("namespace", "")), str(meta.get("name", ""))


class Informer:
    """CodeSessions of `namespaces` (None: of the whole cluster), one list+watch each."""

    def __init__(
        self,
        api: KubeApi,
        namespaces: Iterable[str] | None = None,
        watch_seconds: int = WATCH_SECONDS,
        backoff: tuple[float, float] = (BACKOFF_FIRST, BACKOFF_MAX),
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.api, self.sleep = api, sleep
        self.scopes: list[str | None] = list(namespaces) if namespaces else [None]
        self.watch_seconds = watch_seconds
        self.backoff = backoff
        self._objects: dict[tuple[str, str], Obj] = {}
        self._synced: set[str | None] = set()
        self._tasks: list[asyncio.Task[None]] = []
        self.lists = 0  # how many lists were made (a test reads it)

    # ---- what the gateway reads ---------------------------------------------------------
    def synced(self, namespace: str) -> bool:
        """Whether this copy of `namespace`'s sessions can be trusted now."""
        return None in self._synced or namespace in self._synced

    def get(self, namespace: str, name: str) -> Obj | None:
        """The session as last seen, or None (not there, or not known yet)."""
        return self._objects.get((namespace, name))

    # ---- running ------------------------------------------------------------------------
    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        self._tasks = [asyncio.create_task(self._run(scope)) for scope in self.scopes]
        try:
            yield
        finally:
            for task in self._tasks:
                task.cancel()
            for task in self._tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            self._tasks = []
            self._synced.clear()

    async def _run(self, scope: str | None) -> None:
        delay = self.backoff[0]
        while True:
            try:
                version = await self._list(scope)
                delay = self.backoff[0]
                while True:  # watches resume from the last version seen until one fails
                    started = time.monotonic()
                    version = await self._watch(scope, version)
                    if time.monotonic() - started < 1:  # ended at once: do not spin
                        await self.sleep(self.backoff[0])
            except asyncio.CancelledError:
                raise
            except Gone:
                self._synced.discard(scope)
                continue  # list again at once: the API server is there
            except (ApiError, httpx.HTTPError, OSError, ValueError) as exc:
                self._synced.discard(scope)
                task = asyncio.current_task()
                if task is not None and task.cancelling():  # a cleanup hid the cancellation
                    raise asyncio.CancelledError from exc
                log.warning(
                    "CodeSessions of %s: the watch broke (%r); lookups use GETs until it is "
                    "back (in %.1fs)",
                    scope or "every namespace",
                    exc,
                    delay,
                )
            await self.sleep(delay * random.uniform(0.8, 1.2))
            delay = min(delay * 2, self.backoff[1])

    def _path(self, scope: str | None) -> str:
        if scope is None:
            return f"/apis/{GROUP}/{VERSION}/codesessions"
        return f"/apis/{GROUP}/{VERSION}/namespaces/{scope}/codesessions"

    def _in_scope(self, key: tuple[str, str], scope: str | None) -> bool:
        return scope is None or key[0] == scope

    async def _list(self, scope: str | None) -> str:
        """Replace the scope's copy with the API server's, page by page; its version."""
        found: dict[tuple[str, str], Obj] = {}
        token = ""
        while True:
            params: dict[str, Any] = {"limit": PAGE}
            if token:
                params["continue"] = token
            page = await self.api.call("GET", self._path(scope), **params)
            for item in page.get("items") or ():
                found[_key(item)] = _slim(item)
            meta = page.get("metadata") or {}
            token = str(meta.get("continue") or "")
            if not token:
                break
        for key in [k for k in self._objects if self._in_scope(k, scope) and k not in found]:
            del self._objects[key]  # deleted while the watch was not there to say so
        self._objects.update(found)
        self._synced.add(scope)
        self.lists += 1
        return str(meta.get("resourceVersion", ""))

    async def _watch(self, scope: str | None, version: str) -> str:
        """Apply one watch's events until the API server ends it; the last version."""
        params = {
            "watch": "1",
            "resourceVersion": version,
            "allowWatchBookmarks": "true",
            "timeoutSeconds": str(int(self.watch_seconds * random.uniform(0.8, 1.0)) or 1),
        }
        timeout = httpx.Timeout(10.0, read=self.watch_seconds + READ_MARGIN)
        async for event in self.api.watch(self._path(scope), params, timeout):
            kind, obj = event.get("type"), event.get("object") or {}
            if kind == "ERROR":
                if obj.get("code") == 410:
                    raise Gone(str(obj.get("message", "")))
                raise ApiError(int(obj.get("code") or 500), str(obj.get("message", "")))
            version = str((obj.get("metadata") or {}).get("resourceVersion") or version)
            if kind in ("ADDED", "MODIFIED"):
                self._objects[_key(obj)] = _slim(obj)
            elif kind == "DELETED":
                self._objects.pop(_key(obj), None)
        return version
