"""kopf handlers: thin wiring from events to the reconcile modules and the committer.

`register(cfg)` registers them with the configuration parsed at start-up (the timer
intervals come from it). Every status goes through `commit.Committer`: reconcile
functions compute, the committer writes on the resourceVersion the status was computed
from and posts the transition Events; kopf writes no status of its own.

Handlers are sync functions, so kopf runs them in its thread pool and the blocking
Kubernetes and Redis clients never touch its event loop; the timer and pod-event
handlers that are async only hand their work to pools of their own.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import copy
import functools
import logging
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar, cast

import kopf
from kubernetes.client.exceptions import ApiException
from pydantic import BaseModel

from codemode_operator import GROUP, PREFIX, VERSION, metrics
from codemode_operator.api.codesession import CodeSessionStatus
from codemode_operator.builders.pool import SESSION_LABEL, WARM_LABEL
from codemode_operator.commit import (
    LIBRARY,
    WORKSPACE,
    Committed,
    Committer,
    EventSink,
    Outcome,
    StatusKind,
    as_obj,
)
from codemode_operator.conditions import parse_iso
from codemode_operator.kube import Kube, KubeAPI, Obj
from codemode_operator.reconcile import Retry
from codemode_operator.reconcile import library as library_rec
from codemode_operator.reconcile import pool as pool_rec
from codemode_operator.reconcile import session as session_rec
from codemode_operator.reconcile import workspace as workspace_rec
from codemode_operator.settings import OperatorConfig
from codemode_operator.vocabulary import EventType, Phase, Reason, is_final

log = logging.getLogger("codemode.operator")
T = TypeVar("T")
S = TypeVar("S", bound=BaseModel)

# The watchdog reads each Ready session's server over HTTP; sessions that answer slowly
# (or, on kwok, never) must not hold up create handlers and pod events, so it has threads
# of its own. When they are busy, checks run late, never the rest of the operator.
WATCHDOG_WORKERS = 2
# Pod events get threads of their own: in kopf's shared pool they would queue behind a
# burst of create handlers, and sessions whose pods are long Ready would wait for them.
POD_EVENT_WORKERS = 8
# Sessions waiting for these are retried by kopf (the handler raises TemporaryError).
WAITING = (Reason.WORKSPACE_NOT_FOUND, Reason.WORKSPACE_NOT_READY, Reason.SESSION_LIMIT_REACHED)


def post_event(obj: Obj, type_: str, reason: str, message: str) -> None:
    """An Event through kopf's queue (needs the context of a kopf handler)."""
    body = kopf.Body(cast(kopf.RawBody, obj))
    if type_ == EventType.NORMAL:
        kopf.event(body, type=type_, reason=reason, message=message)
    else:
        kopf.warn(body, reason=reason, message=message)


@contextlib.contextmanager
def _as_kopf_retry(kind: str) -> Iterator[None]:
    """Turn Retry and Kubernetes API errors into kopf's retry, counting both."""
    try:
        yield
    except Retry as exc:
        metrics.RECONCILES.labels(kind=kind, outcome="retry").inc()
        raise kopf.TemporaryError(str(exc), delay=exc.delay) from None
    except ApiException as exc:
        metrics.ERRORS.labels(kind=kind).inc()
        raise kopf.TemporaryError(
            f"Kubernetes API error: {exc.status} {exc.reason}", delay=5
        ) from None
    metrics.RECONCILES.labels(kind=kind, outcome="ok").inc()


async def _in_pool(pool: ThreadPoolExecutor, fn: Callable[..., T], *args: Any) -> T:
    """Run a blocking call on `pool`, with the caller's context (kopf's settings)."""
    call = functools.partial(contextvars.copy_context().run, fn, *args)
    return await asyncio.get_running_loop().run_in_executor(pool, call)


def _observe_start(done: Committed[CodeSessionStatus]) -> None:
    if done.written and done.new.phase == Phase.READY and done.old.phase != Phase.READY:
        created = parse_iso(done.obj["metadata"].get("creationTimestamp"))
        if created:
            metrics.SESSION_START.observe(max(0.0, time.time() - created))


class Handlers:
    """What the kopf handlers call; plain methods, so tests can call them too."""

    def __init__(
        self, cfg: OperatorConfig, kube: KubeAPI | None = None, post: EventSink | None = post_event
    ) -> None:
        self.cfg = cfg
        self._kube = kube
        self._post = post
        # Repairs of a session that is not Ready wait this long: in a burst of new sessions
        # the watchdog would otherwise race their pod events for the same writes.
        self.watchdog_grace = cfg.session_poll_seconds * 24
        self.watchdog_pool = ThreadPoolExecutor(WATCHDOG_WORKERS, thread_name_prefix="watchdog")
        self.pod_event_pool = ThreadPoolExecutor(POD_EVENT_WORKERS, thread_name_prefix="pod-events")
        # (namespace, pod name) -> the state its last handled event showed. An event that
        # shows the same again (kwok and kubelets send several per start) needs no read.
        self.pod_seen: dict[tuple[str, str], tuple[str, str]] = {}
        # (namespace, pool pod name) -> whether its last handled event showed it ready
        self.pool_seen: dict[tuple[str, str], bool] = {}

    @property
    def kube(self) -> KubeAPI:
        if self._kube is None:
            self._kube = Kube()  # after main() has loaded the kubeconfig
        return self._kube

    @property
    def committer(self) -> Committer:
        return Committer(self.kube, self._post)

    def _commit(
        self, kind: StatusKind[S], obj: Obj | None, compute: Callable[[Obj], Outcome[S]]
    ) -> Committed[S] | None:
        with _as_kopf_retry(kind.kind):
            return self.committer.commit(kind, obj, compute)

    # ---- Workspace -----------------------------------------------------------------

    def workspace(self, body: Any) -> None:
        self._commit(
            WORKSPACE, as_obj(body), lambda obj: workspace_rec.reconcile(self.kube, self.cfg, obj)
        )

    def workspace_deleted(self, body: Any) -> str:
        try:
            done = workspace_rec.delete(self.kube, self.cfg, as_obj(body))
        except Retry as exc:
            if self._post is not None:
                self._post(as_obj(body), EventType.WARNING, Reason.DELETION_BLOCKED, str(exc))
            raise kopf.TemporaryError(str(exc), delay=exc.delay) from None
        if self._post is not None:
            self._post(as_obj(body), EventType.NORMAL, Reason.DELETED, done)
        return done

    async def pool_pod_event(self, event: Any) -> None:
        """A warm pool pod became ready, failed or went: refill, and record the counts."""
        pod = event["object"]
        meta = pod.get("metadata") or {}
        labels = meta.get("labels") or {}
        workspace = labels.get(WARM_LABEL)
        if not workspace or SESSION_LABEL in labels:
            return
        key = (meta.get("namespace", ""), meta.get("name", ""))
        if event.get("type") == "DELETED":
            self.pool_seen.pop(key, None)
        else:
            ready = pool_rec.is_ready(dict(pod)) and not meta.get("deletionTimestamp")
            failed = (pod.get("status") or {}).get("phase") in ("Failed", "Succeeded")
            if self.pool_seen.get(key) == ready and not failed:
                return
            self.pool_seen[key] = ready
        await _in_pool(self.pod_event_pool, self.pool_changed, key[0], workspace)

    def pool_changed(self, namespace: str, name: str) -> None:
        workspace = self.kube.get_custom("workspaces", namespace, name)
        if workspace is None or workspace["metadata"].get("deletionTimestamp"):
            return

        def compute(obj: Obj) -> Outcome[Any]:
            status = WORKSPACE.read(obj)
            status.warm_pool = pool_rec.reconcile(self.kube, self.cfg, obj)
            return Outcome(status)

        try:
            self.committer.commit(WORKSPACE, workspace, compute)
        except (Retry, ApiException) as exc:
            log.info("workspaces %s/%s: warm pool: %s", namespace, name, exc)

    # ---- CodeSession ---------------------------------------------------------------
    #
    # Three handlers write a session's status: the create handler, the watchdog timer and
    # pod events, all through the committer: each write lands only on the version it was
    # computed from, and phase fields never go back to an older look at the pod
    # (session_rec.guard), so no writer can undo a newer one.

    def session(self, body: Any, periodic: bool = False) -> CodeSessionStatus | None:
        done = self._commit(
            session_rec.SESSION,
            as_obj(body),
            lambda obj: session_rec.reconcile(self.kube, self.cfg, obj, periodic),
        )
        if done is None:
            return None
        _observe_start(done)
        return done.new

    def session_changed(self, body: Any) -> None:
        new = self.session(body)
        if new is not None and new.phase == Phase.PENDING and new.reason in WAITING:
            raise kopf.TemporaryError(f"waiting: {new.reason}", delay=5)

    def watchdog_due(self, body: Any) -> bool:
        status = body.get("status") or {}
        created = parse_iso(body["metadata"].get("creationTimestamp")) or 0.0
        # a young session is still its create handler's and its pod events' job
        return bool(
            status.get("phase") == Phase.READY or time.time() - created >= self.watchdog_grace
        )

    async def session_watchdog(self, body: Any) -> None:
        """Idle timeout, maximum lifetime, and a pod deleted or stuck behind our back."""
        if self.watchdog_due(body):
            await _in_pool(self.watchdog_pool, self.session, copy.deepcopy(dict(body)), True)

    async def session_pod_event(self, event: Any) -> None:
        """React at once to the pod becoming Ready, failing or vanishing."""
        pod = event["object"]
        meta = pod.get("metadata") or {}
        name = (meta.get("labels") or {}).get(f"{PREFIX}/session")
        if not name:
            return
        key = (meta.get("namespace", ""), meta.get("name", ""))
        deleted = event.get("type") == "DELETED"
        state = session_rec.pod_state(dict(pod))
        if deleted:
            self.pod_seen.pop(key, None)
        elif self.pod_seen.get(key) == state or state[1] == Reason.POD_TERMINATING:
            return  # nothing new; a terminating pod's DELETED event decides on recreating it
        handled = await _in_pool(
            self.pod_event_pool,
            self.pod_changed,
            key[0],
            name,
            None if deleted else state,
            meta.get("resourceVersion"),
            meta.get("name"),
        )
        if handled and not deleted:
            self.pod_seen[key] = state

    def pod_changed(
        self,
        namespace: str,
        name: str,
        state: tuple[Phase, str] | None,
        pod_version: str | None,
        pod_name: str | None = None,
    ) -> bool:
        """Bring session `name` in line with its pod's state (None: the pod is gone).

        Only the session's own pod counts: a session that resumed (or replaced its pod)
        on a pool pod has a pod of another name, and a late event of the one it left
        must not write that pod's phase (or bring a suspended session back to Ready)."""
        session = self.kube.get_custom("codesessions", namespace, name)
        status = (session or {}).get("status") or {}
        if session is None or is_final(status.get("phase")):
            return True
        current = status.get("podName")
        if pod_name is not None and current is not None and pod_name != current:
            return True  # an earlier pod of the session
        if state is not None and status.get("phase") == Phase.SUSPENDED:
            return True  # its pod is on its way out; resuming is the spec's business

        def from_event(obj: Obj) -> Outcome[CodeSessionStatus]:
            # a phase change: the status comes from the event and the session just read
            assert state is not None
            return Outcome(
                session_rec.with_pod_phase(
                    session_rec.SESSION.read(obj),
                    namespace,
                    name,
                    *state,
                    obj["metadata"].get("generation"),
                    pod_version,
                )
            )

        def full(obj: Obj) -> Outcome[CodeSessionStatus]:
            return session_rec.reconcile(self.kube, self.cfg, obj)

        fast = (
            state is not None
            and state[0] != Phase.FAILED
            and (session.get("status") or {}).get("podName")
        )
        try:
            done = self.committer.commit(
                session_rec.SESSION, session, from_event if fast else full
            )  # gone or failed: a full reconcile
        except (Retry, ApiException) as exc:
            log.info("codesessions %s/%s: %s", namespace, name, exc)
            return False
        if done is not None:
            _observe_start(done)
        return True

    # ---- WorkflowLibrary -----------------------------------------------------------

    def library(self, body: Any) -> None:
        self._commit(
            LIBRARY, as_obj(body), lambda obj: library_rec.reconcile(self.kube, self.cfg, obj)
        )

    def library_job_event(self, event: Any) -> None:
        """A sync Job finished: record its result without waiting for the next poll."""
        job = event["object"]
        status = job.get("status") or {}
        if event.get("type") == "DELETED" or not (status.get("succeeded") or status.get("failed")):
            return
        meta = job.get("metadata") or {}
        name = (meta.get("labels") or {}).get(f"{PREFIX}/library", "")
        library = self.kube.get_custom("workflowlibraries", meta.get("namespace", ""), name)
        if library is None or (library.get("status") or {}).get("jobName") != meta.get("name"):
            return
        try:
            done = self.committer.commit(
                LIBRARY, library, lambda obj: library_rec.reconcile(self.kube, self.cfg, obj)
            )
        except (Retry, ApiException) as exc:
            log.info("workflowlibraries %s/%s: %s", meta.get("namespace"), name, exc)
            return
        if done is not None and done.written:
            metrics.LIBRARY_SYNCS.labels(
                result="succeeded" if status.get("succeeded") else "failed"
            ).inc()

    def library_deleted(self, body: Any) -> str:
        done = library_rec.delete(self.kube, self.cfg, as_obj(body))
        if self._post is not None:
            self._post(as_obj(body), EventType.NORMAL, Reason.DELETED, done)
        return done


def register(
    cfg: OperatorConfig, kube: KubeAPI | None = None, registry: kopf.OperatorRegistry | None = None
) -> Handlers:
    """Register every handler with kopf (its default registry unless one is given)."""
    h = Handlers(cfg, kube)
    ws = (GROUP, VERSION, "workspaces")
    sess = (GROUP, VERSION, "codesessions")
    lib = (GROUP, VERSION, "workflowlibraries")

    # ids are the handler names kopf has always recorded in its annotations
    def changed(resource: tuple[str, str, str], name: str, fn: Callable[..., Any]) -> None:
        kopf.on.resume(*resource, id=name, registry=registry)(fn)
        kopf.on.create(*resource, id=name, registry=registry)(fn)
        kopf.on.update(*resource, field="spec", id=name, registry=registry)(fn)

    def workspace_changed(body: kopf.Body, **_: Any) -> None:
        h.workspace(body)

    def workspace_health(body: kopf.Body, **_: Any) -> None:
        h.workspace(body)

    def workspace_deleted(body: kopf.Body, **_: Any) -> None:
        h.workspace_deleted(body)

    async def pool_pod_event(event: kopf.RawEvent, **_: Any) -> None:
        await h.pool_pod_event(event)

    changed(ws, "workspace_changed", workspace_changed)
    kopf.on.event(
        "v1",
        "pods",
        labels={WARM_LABEL: kopf.PRESENT, SESSION_LABEL: kopf.ABSENT},
        id="pool_pod_event",
        registry=registry,
    )(pool_pod_event)
    kopf.timer(
        *ws,
        interval=cfg.workspace_poll_seconds,
        initial_delay=5,
        idle=5,
        id="workspace_health",
        registry=registry,
    )(workspace_health)
    kopf.on.delete(*ws, id="workspace_deleted", registry=registry)(workspace_deleted)

    def session_changed(body: kopf.Body, **_: Any) -> None:
        h.session_changed(body)

    async def session_watchdog(body: kopf.Body, **_: Any) -> None:
        await h.session_watchdog(body)

    async def session_pod_event(event: kopf.RawEvent, **_: Any) -> None:
        await h.session_pod_event(event)

    poll = cfg.session_poll_seconds
    changed(sess, "session_changed", session_changed)
    kopf.timer(
        *sess,
        interval=poll * 6,
        initial_delay=poll * 6,
        idle=poll,
        id="session_watchdog",
        registry=registry,
    )(session_watchdog)
    kopf.on.event(
        "v1",
        "pods",
        labels={f"{PREFIX}/session": kopf.PRESENT},
        id="session_pod_event",
        registry=registry,
    )(session_pod_event)

    def library_changed(body: kopf.Body, **_: Any) -> None:
        h.library(body)

    def library_poll(body: kopf.Body, **_: Any) -> None:
        h.library(body)

    def library_job_event(event: kopf.RawEvent, **_: Any) -> None:
        h.library_job_event(event)

    def library_deleted(body: kopf.Body, **_: Any) -> None:
        h.library_deleted(body)

    changed(lib, "library_changed", library_changed)
    kopf.timer(
        *lib,
        interval=cfg.library_poll_seconds,
        initial_delay=cfg.library_poll_seconds,
        id="library_poll",
        registry=registry,
    )(library_poll)
    kopf.on.event(
        "batch",
        "v1",
        "jobs",
        labels={f"{PREFIX}/library": kopf.PRESENT},
        id="library_job_event",
        registry=registry,
    )(library_job_event)
    kopf.on.delete(*lib, id="library_deleted", registry=registry)(library_deleted)
    return h
