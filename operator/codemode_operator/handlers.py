"""kopf handlers: thin wiring from events to the reconcile modules and the committer.

`register(cfg)` registers them with the configuration parsed at start-up (the timer
intervals come from it). Every status goes through `commit.Committer`: reconcile
functions compute, the committer writes on the resourceVersion the status was computed
from and posts the transition Events; kopf writes no status of its own.

Handlers are sync functions, so kopf runs them in its thread pool and the blocking
Kubernetes and Redis clients never touch its event loop; the timer and pod-event
handlers that are async only hand their work to pools of their own.

CodeSessions are many, so kopf only watches them (`session_event`): no finalizer, no
progress or last-handled annotations, no timer per object; each of those cost the API
server a write per session and the operator memory. What kopf did for them is here: a
new spec is reconciled (`needs_reconcile`: the status has not answered its generation),
a session that waits is retried on a timer, every session is looked at once when the
operator starts (kopf's initial listing) and by one watchdog loop. The watch also keeps
the latest CodeSessions and Workspaces (`Watched`), so pod events and reconciles read
them without an API call; a stale copy only costs a conflict, on which the committer
reads the object again.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import copy
import functools
import logging
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar, cast

import kopf
from kubernetes.client.exceptions import ApiException
from pydantic import BaseModel

from codemode_operator import GROUP, PREFIX, VERSION, metrics, trace
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
# Sessions waiting for these are retried (the handler raises TemporaryError).
WAITING = (Reason.WORKSPACE_NOT_FOUND, Reason.WORKSPACE_NOT_READY, Reason.SESSION_LIMIT_REACHED)
# Metadata a reconcile never reads, dropped from the watched copies: most of an object's
# bytes (kopf's last-handled configuration of objects it once handled, managed fields).
_UNREAD_ANNOTATIONS = (
    f"{PREFIX}/last-handled-configuration",
    "kubectl.kubernetes.io/last-applied-configuration",
)


def _rv(obj: Obj) -> int:
    try:
        return int((obj.get("metadata") or {}).get("resourceVersion") or -1)
    except ValueError:
        return -1


def slim(obj: Any) -> Obj:
    """A copy of a watched object without what no reconcile reads."""
    meta = dict(obj.get("metadata") or {})
    meta.pop("managedFields", None)
    annotations = meta.get("annotations")
    if annotations and any(k in annotations for k in _UNREAD_ANNOTATIONS):
        meta["annotations"] = {k: v for k, v in annotations.items() if k not in _UNREAD_ANNOTATIONS}
    out = {k: copy.deepcopy(v) for k, v in dict(obj).items() if k != "metadata"}
    out["metadata"] = copy.deepcopy(meta)
    return out


class Watched:
    """The latest version seen of each object of one kind: from its watch and from the
    operator's own writes, whichever is newer. Objects in it are never changed in place."""

    def __init__(self) -> None:
        self._objs: dict[tuple[str, str], tuple[float, Obj]] = {}
        self._lock = threading.Lock()

    def put(self, obj: Obj) -> Obj:
        meta = obj["metadata"]
        key = (meta.get("namespace", ""), meta["name"])
        with self._lock:
            held = self._objs.get(key)
            if held is not None and _rv(held[1]) > _rv(obj):
                return held[1]
            self._objs[key] = (time.monotonic(), obj)
        return obj

    def drop(self, namespace: str, name: str) -> None:
        with self._lock:
            self._objs.pop((namespace, name), None)

    def get(self, namespace: str, name: str) -> Obj | None:
        held = self._objs.get((namespace, name))
        return held[1] if held else None

    def since(self, namespace: str, name: str) -> float:
        """When the object last changed (time.monotonic), 0 when unknown."""
        held = self._objs.get((namespace, name))
        return held[0] if held else 0.0

    def names(self) -> list[tuple[str, str]]:
        with self._lock:
            return list(self._objs)


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
        self.sessions = Watched()
        self.workspaces = Watched()
        # CodeSession reconciles, one at a time per session (as kopf ran them)
        self.session_pool = ThreadPoolExecutor(cfg.workers, thread_name_prefix="sessions")
        self._busy: set[tuple[str, str]] = set()
        self._again: set[tuple[str, str]] = set()
        self._retries: dict[tuple[str, str], asyncio.TimerHandle] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def kube(self) -> KubeAPI:
        if self._kube is None:
            self._kube = Kube()  # after main() has loaded the kubeconfig
        return self._kube

    @property
    def committer(self) -> Committer:
        return Committer(self.kube, self._post, written=self._seen_written)

    def _seen_written(self, obj: Obj) -> None:
        if obj.get("kind") == "CodeSession":
            self.sessions.put(slim(obj))
            meta, phase = obj["metadata"], (obj.get("status") or {}).get("phase")
            trace.mark(meta["namespace"], meta["name"], f"status_{phase or 'admitted'}")

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

    def read_workspace(self, kube: KubeAPI, namespace: str, name: str) -> Obj | None:
        """A workspace as its watch last showed it; from the API when it has not."""
        found = self.workspaces.get(namespace, name)
        if found is None:
            found = kube.get_custom("workspaces", namespace, name)
            if found is not None:
                found = self.workspaces.put(slim(found))
        return found

    def read_session(self, namespace: str, name: str) -> Obj | None:
        """A CodeSession as its watch (or our last write) last showed it, else from the API."""
        found = self.sessions.get(namespace, name)
        if found is None:
            found = self.kube.get_custom("codesessions", namespace, name)
            if found is not None:
                found = self.sessions.put(slim(found))
        return found

    def _session_written(self, done: Committed[CodeSessionStatus] | None) -> None:
        if done is not None:
            _observe_start(done)
            if done.new.phase == Phase.READY and done.old.phase != Phase.READY:
                meta = done.obj["metadata"]
                trace.flush(meta["namespace"], meta["name"], "done")

    def session(self, body: Any, periodic: bool = False) -> CodeSessionStatus | None:
        done = self._commit(
            session_rec.SESSION,
            as_obj(body),
            lambda obj: session_rec.reconcile(
                self.kube, self.cfg, obj, periodic, read_workspace=self.read_workspace
            ),
        )
        self._session_written(done)
        return None if done is None else done.new

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
            await _in_pool(self.watchdog_pool, self._watch_one, dict(body))

    def _watch_one(self, body: Obj) -> None:
        try:
            self.session(body, True)
        except kopf.TemporaryError as exc:  # the next round looks again
            meta = body["metadata"]
            log.info("codesessions %s/%s: watchdog: %s", meta.get("namespace"), meta["name"], exc)

    async def watchdog_loop(self) -> None:
        """Every 6 * SESSION_POLL_SECONDS, the watchdog's look at each session that has
        not changed for `SESSION_POLL_SECONDS` and is not being reconciled (kopf's timer
        with `idle`, for all sessions in one loop)."""
        poll = self.cfg.session_poll_seconds
        interval = poll * 6
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(interval)
            started = loop.time()
            looks = []
            for key in self.sessions.names():
                body = self.sessions.get(*key)
                if body is None or key in self._busy:
                    continue
                if time.monotonic() - self.sessions.since(*key) < poll:
                    continue
                looks.append(self.session_watchdog(body))
            if looks:
                await asyncio.gather(*looks, return_exceptions=True)
            log.debug("watchdog: %d sessions in %.1fs", len(looks), loop.time() - started)

    def start_watchdog(self) -> None:
        task = asyncio.get_running_loop().create_task(self.watchdog_loop())
        self._tasks.add(task)  # held: the loop keeps only a weak reference

    def workspace_seen(self, event: Any) -> None:
        obj = event["object"]
        meta = obj.get("metadata") or {}
        if event.get("type") == "DELETED":
            self.workspaces.drop(meta.get("namespace", ""), meta.get("name", ""))
        else:
            self.workspaces.put(slim(obj))

    async def session_event(self, event: Any) -> None:
        """A CodeSession as its watch shows it: kept, and reconciled when its spec (or the
        session) is new, or when the operator starts (the initial listing, type None)."""
        obj = event["object"]
        meta = obj.get("metadata") or {}
        key = (meta.get("namespace", ""), meta.get("name", ""))
        if event.get("type") == "DELETED":
            self.sessions.drop(*key)
            trace.forget(*key)
            handle = self._retries.pop(key, None)
            if handle is not None:
                handle.cancel()
            return
        body = self.sessions.put(slim(obj))
        status = body.get("status") or {}
        listed = event.get("type") is None
        if session_rec.needs_reconcile(body) or (
            listed and not is_final(status.get("phase")) and not meta.get("deletionTimestamp")
        ):
            if status.get("phase") != Phase.READY:
                trace.begin(*key)
            await self.reconcile_session(key)

    async def reconcile_session(self, key: tuple[str, str]) -> None:
        """Reconcile one session from its latest copy, never two at once for one session;
        an event that came meanwhile asks for one more run, a wait for a later one."""
        if key in self._busy:
            self._again.add(key)
            return
        self._busy.add(key)
        pending = self._retries.pop(key, None)
        if pending is not None:
            pending.cancel()  # this run is the retry
        try:
            while True:
                self._again.discard(key)
                body = self.sessions.get(*key)
                if body is None:
                    return
                delay: float | None = None
                try:
                    await _in_pool(self.session_pool, self.session_changed, body)
                except kopf.TemporaryError as exc:
                    delay = exc.delay if exc.delay is not None else 5.0
                    log.info("codesessions %s/%s: %s (again in %gs)", *key, exc, delay)
                except Exception:
                    delay = 5.0
                    log.exception("codesessions %s/%s: reconcile failed", *key)
                if delay is not None:
                    self._retry_later(key, delay)
                    return
                latest = self.sessions.get(*key)
                if key not in self._again or latest is None:
                    return
                if not session_rec.needs_reconcile(latest):
                    return
        finally:
            self._busy.discard(key)

    def _retry_later(self, key: tuple[str, str], delay: float) -> None:
        old = self._retries.pop(key, None)
        if old is not None:
            old.cancel()
        loop = asyncio.get_running_loop()

        def fire() -> None:
            self._retries.pop(key, None)
            task = loop.create_task(self.reconcile_session(key))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

        self._retries[key] = loop.call_later(delay, fire)

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
        if state[0] == Phase.READY:
            trace.mark(key[0], name, "pod_ready_event")
        handled = await _in_pool(
            self.pod_event_pool,
            self.pod_changed,
            key[0],
            name,
            None if deleted else state,
            meta.get("resourceVersion"),
            meta.get("name"),
            None if deleted else dict(pod),
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
        pod: Obj | None = None,
    ) -> bool:
        """Bring session `name` in line with its pod's state (None: the pod is gone).

        Only the session's own pod counts: a session that resumed (or replaced its pod)
        on a pool pod has a pod of another name, and a late event of the one it left
        must not write that pod's phase (or bring a suspended session back to Ready)."""
        session = self.read_session(namespace, name)
        status = (session or {}).get("status") or {}
        if session is None or is_final(status.get("phase")):
            return True
        current = status.get("podName")
        if pod_name is not None and current is not None and pod_name != current:
            return True  # an earlier pod of the session
        if state is not None and status.get("phase") == Phase.SUSPENDED:
            return True  # its pod is on its way out; resuming is the spec's business
        if current is None and (namespace, name) in self._busy:
            # a pool pod the session's reconcile is claiming: that reconcile writes its
            # phase; a second one beside it would only bind it again and conflict
            return False

        def from_event(obj: Obj) -> Outcome[CodeSessionStatus]:
            # a phase change: the status comes from the event and the session just read
            assert state is not None
            old = session_rec.SESSION.read(obj)
            new = session_rec.pod_event_status(
                old, namespace, name, *state, obj["metadata"].get("generation"), pod_version
            )
            session_rec.sync_endpoints(self.kube, obj, old, new, pod)
            return Outcome(new)

        def full(obj: Obj) -> Outcome[CodeSessionStatus]:
            return session_rec.reconcile(
                self.kube, self.cfg, obj, read_workspace=self.read_workspace
            )

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
        self._session_written(done)
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

    async def workspace_event(event: kopf.RawEvent, **_: Any) -> None:
        h.workspace_seen(event)

    changed(ws, "workspace_changed", workspace_changed)
    kopf.on.event(*ws, id="workspace_event", registry=registry)(workspace_event)
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

    async def session_event(event: kopf.RawEvent, **_: Any) -> None:
        await h.session_event(event)

    async def session_pod_event(event: kopf.RawEvent, **_: Any) -> None:
        await h.session_pod_event(event)

    async def start_watchdog(**_: Any) -> None:
        h.start_watchdog()

    kopf.on.event(*sess, id="session_event", registry=registry)(session_event)
    kopf.on.startup(id="session_watchdog", registry=registry)(start_watchdog)
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
