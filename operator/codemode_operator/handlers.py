"""kopf handlers: thin wiring from events to the reconcile modules.

Handlers are sync functions, so kopf runs them in its thread pool and the
blocking Kubernetes and Redis clients never touch its event loop; the pod-event
handler is async only to hand its work to a pool of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import copy
import functools
import logging
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import kopf
from kubernetes.client.exceptions import ApiException

from codemode_operator import GROUP, PREFIX, VERSION, metrics
from codemode_operator.conditions import parse_iso
from codemode_operator.kube import Kube
from codemode_operator.reconcile import Retry
from codemode_operator.reconcile import library as library_rec
from codemode_operator.reconcile import session as session_rec
from codemode_operator.reconcile import workspace as workspace_rec
from codemode_operator.settings import OperatorConfig

log = logging.getLogger("codemode.operator")
T = TypeVar("T")
CFG = OperatorConfig.from_env()
_kube: Kube | None = None


def kube() -> Kube:
    global _kube
    if _kube is None:
        _kube = Kube()
    return _kube


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
        raise kopf.TemporaryError(f"Kubernetes API error: {exc.status} {exc.reason}",
                                  delay=5) from None
    metrics.RECONCILES.labels(kind=kind, outcome="ok").inc()


async def _in_pool(pool: ThreadPoolExecutor, fn: Callable[..., T], *args: Any) -> T:
    """Run a blocking call on `pool`, with the caller's context (kopf's settings)."""
    call = functools.partial(contextvars.copy_context().run, fn, *args)
    return await asyncio.get_running_loop().run_in_executor(pool, call)


def _run(kind: str, body: Any, patch: kopf.Patch, fn: Any, *args: Any) -> dict[str, Any]:
    """Call a reconcile function, write its status, turn Retry into kopf's retry."""
    with _as_kopf_retry(kind):
        status: dict[str, Any] = fn(kube(), CFG, dict(body), *args)
    old = dict(body.get("status") or {})
    if any(old.get(key) != value for key, value in status.items()):
        # The whole computed status, never a mix: an event handler may have written newer
        # fields since `body` was read, and half of each would be inconsistent.
        for key, value in status.items():
            patch.status[key] = value
    return status


def _transition(body: Any, old: dict[str, Any], new: dict[str, Any], what: str) -> None:
    """Post an Event when the Ready condition or phase changes."""
    def ready(status: dict[str, Any]) -> tuple[str | None, str | None]:
        cond: dict[str, Any] = next(
            (c for c in status.get("conditions") or [] if c.get("type") == "Ready"), {})
        return cond.get("status"), cond.get("reason")

    before, after = ready(old), ready(new)
    phase_changed = old.get("phase") != new.get("phase")
    if before != after or phase_changed:
        cond: dict[str, Any] = next(
            (c for c in new.get("conditions") or [] if c.get("type") == "Ready"), {})
        message = cond.get("message") or f"{what} is {new.get('phase', after[0])}"
        if after[0] == "True":
            kopf.event(body, type="Normal", reason=after[1] or "Ready", message=message)
        else:
            kopf.warn(body, reason=after[1] or "NotReady", message=message)


def _reconcile_on_child_event(plural: str, obj: dict[str, Any], fn: Any
                              ) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """Reconcile a CR when one of its children changed; patch and announce what changed.

    Returns (old status, new status) when something changed, else None.
    """
    meta = obj["metadata"]
    old = dict(obj.get("status") or {})
    try:
        new: dict[str, Any] = fn(kube(), CFG, obj)
    except (Retry, ApiException) as exc:
        log.info("%s %s/%s: %s", plural, meta["namespace"], meta["name"], exc)
        return None
    changed = {k: v for k, v in new.items() if old.get(k) != v}
    if not changed:
        return None
    kube().patch_status(plural, meta["namespace"], meta["name"], changed)
    _transition(obj, old, new, plural)
    return old, new


# ---- Workspace ---------------------------------------------------------------------------

@kopf.on.resume(GROUP, VERSION, "workspaces")
@kopf.on.create(GROUP, VERSION, "workspaces")
@kopf.on.update(GROUP, VERSION, "workspaces", field="spec")
def workspace_changed(body: kopf.Body, patch: kopf.Patch, **_: Any) -> None:
    new = _run("Workspace", body, patch, workspace_rec.reconcile)
    _transition(body, dict(body.get("status") or {}), new, "workspace")


@kopf.timer(GROUP, VERSION, "workspaces", interval=30, initial_delay=5, idle=5)
def workspace_health(body: kopf.Body, patch: kopf.Patch, **_: Any) -> None:
    new = _run("Workspace", body, patch, workspace_rec.reconcile)
    _transition(body, dict(body.get("status") or {}), new, "workspace")


@kopf.on.delete(GROUP, VERSION, "workspaces")
def workspace_deleted(body: kopf.Body, **_: Any) -> None:
    try:
        done = workspace_rec.delete(kube(), CFG, dict(body))
    except Retry as exc:
        kopf.warn(body, reason="DeletionBlocked", message=str(exc))
        raise kopf.TemporaryError(str(exc), delay=exc.delay) from None
    kopf.event(body, type="Normal", reason="Deleted", message=done)


# ---- CodeSession -------------------------------------------------------------------------
#
# Three writers share a session's status: the create handler, the watchdog timer and pod
# events. Each writes only on the resourceVersion it read (a conflict re-reads), and phase
# fields never go back to an older look at the pod (session_rec.newer_pod_view), so no
# writer can undo a newer one and no handler has to look again "in case".

COMMIT_ATTEMPTS = 5


StatusUpdate = dict[str, Any] | Callable[[dict[str, Any]], dict[str, Any]]


def _commit_session(namespace: str, name: str, update: StatusUpdate,
                    current: dict[str, Any] | None = None
                    ) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """Write a session status over the current one; (old, new) as written.

    `update` is the computed status, or a function of the current status that computes
    it (called again on each re-read). Fields of a newer pod view already in the object
    are kept; an ended session stays ended. None when the session is gone. `current`,
    when the caller has just read the session, saves reading it again.
    """
    for attempt in range(COMMIT_ATTEMPTS):
        if attempt or current is None:
            current = kube().get_custom("codesessions", namespace, name)
        if current is None:
            return None
        old = dict(current.get("status") or {})
        new = dict(update(old) if callable(update) else update)
        if old.get("phase") in session_rec.ENDED and new.get("phase") not in session_rec.ENDED:
            return old, old
        if new.get("phase") not in session_rec.ENDED and session_rec.newer_pod_view(old, new):
            new.update({k: old.get(k) for k in session_rec.PHASE_FIELDS})
        changed = {k: v for k, v in new.items() if old.get(k) != v}
        if not changed:
            return old, new
        try:
            kube().patch_status("codesessions", namespace, name, changed,
                                resource_version=current["metadata"]["resourceVersion"])
        except ApiException as exc:
            if exc.status == 409:
                continue  # someone wrote in between: merge over what they wrote
            raise
        _transition(current, old, new, "session")
        _observe_start(current, old, new)
        return old, new
    raise Retry(f"status of CodeSession {name!r} keeps changing under us", 1)


def _observe_start(session: dict[str, Any], old: dict[str, Any], new: dict[str, Any]) -> None:
    if new.get("phase") == "Ready" and old.get("phase") != "Ready":
        created = parse_iso(session["metadata"].get("creationTimestamp"))
        if created:
            metrics.SESSION_START.observe(max(0.0, time.time() - created))


def _reconcile_session(body: Mapping[str, Any], periodic: bool = False) -> dict[str, Any]:
    """Reconcile a CodeSession and commit its status; kopf writes no status of its own."""
    meta = body["metadata"]
    with _as_kopf_retry("CodeSession"):
        status = session_rec.reconcile(kube(), CFG, dict(body), periodic)
        if status == body.get("status"):
            return status  # the object holds this or something newer (most watchdog looks)
        written = _commit_session(meta["namespace"], meta["name"], status)
    return written[1] if written else status


@kopf.on.resume(GROUP, VERSION, "codesessions")
@kopf.on.create(GROUP, VERSION, "codesessions")
@kopf.on.update(GROUP, VERSION, "codesessions", field="spec")
def session_changed(body: kopf.Body, **_: Any) -> None:
    new = _reconcile_session(body)
    if new.get("phase") == "Pending" and new.get("reason") in (
            "WorkspaceNotFound", "WorkspaceNotReady", "SessionLimitReached"):
        raise kopf.TemporaryError(f"waiting: {new['reason']}", delay=5)


# The watchdog reads each Ready session's server over HTTP; sessions that answer slowly
# (or, on kwok, never) must not hold up create handlers and pod events, so it has threads
# of its own. When they are busy, checks run late, never the rest of the operator.
WATCHDOG_WORKERS = 2
# Repairs of a session that is not Ready wait this long: in a burst of new sessions the
# watchdog would otherwise race their pod events for the same writes.
WATCHDOG_GRACE_SECONDS = CFG.session_poll_seconds * 24
_watchdog_pool = ThreadPoolExecutor(WATCHDOG_WORKERS, thread_name_prefix="watchdog")


@kopf.timer(GROUP, VERSION, "codesessions", interval=CFG.session_poll_seconds * 6,
            initial_delay=CFG.session_poll_seconds * 6, idle=CFG.session_poll_seconds)
async def session_watchdog(body: kopf.Body, **_: Any) -> None:
    """Idle timeout, maximum lifetime, and a pod deleted or stuck behind our back."""
    status = body.get("status") or {}
    created = parse_iso(body["metadata"].get("creationTimestamp")) or 0.0
    if status.get("phase") != "Ready" and time.time() - created < WATCHDOG_GRACE_SECONDS:
        return  # a young session is still its create handler's and its pod events' job
    await _in_pool(_watchdog_pool, _reconcile_session, copy.deepcopy(dict(body)), True)


# (namespace, pod name) -> the (phase, reason) its last handled event showed. An event that
# shows the same again (kwok and kubelets send several per start) needs no session read.
_pod_seen: dict[tuple[str, str], tuple[str, str]] = {}

# Pod events get threads of their own: in kopf's shared pool they would queue behind a
# burst of create handlers, and sessions whose pods are long Ready would wait for them.
POD_EVENT_WORKERS = 8
_pod_event_pool = ThreadPoolExecutor(POD_EVENT_WORKERS, thread_name_prefix="pod-events")


@kopf.on.event("v1", "pods", labels={f"{PREFIX}/session": kopf.PRESENT})
async def session_pod_event(event: kopf.RawEvent, **_: Any) -> None:
    """React at once to the pod becoming Ready, failing or vanishing."""
    pod = event["object"]
    meta = pod.get("metadata") or {}
    name = (meta.get("labels") or {}).get(f"{PREFIX}/session")
    if not name:
        return
    key = (meta.get("namespace", ""), meta.get("name", ""))
    deleted = event.get("type") == "DELETED"
    state = session_rec.raw_pod_state(dict(pod))
    if deleted:
        _pod_seen.pop(key, None)
    elif _pod_seen.get(key) == state or state[1] == "PodTerminating":
        return  # nothing new; a terminating pod's DELETED event decides on recreating it
    handled = await _in_pool(_pod_event_pool, _pod_changed, key[0], name,
                             None if deleted else state, meta.get("resourceVersion"))
    if handled and not deleted:
        _pod_seen[key] = state


def _pod_changed(namespace: str, name: str, state: tuple[str, str] | None,
                 pod_version: str | None) -> bool:
    """Bring session `name` in line with its pod's state (None: the pod is gone)."""
    session = kube().get_custom("codesessions", namespace, name)
    if session is None or (session.get("status") or {}).get("phase") in session_rec.ENDED:
        return True
    old = dict(session.get("status") or {})
    try:
        if state is not None and state[0] != "Failed" and old.get("podName"):
            # a phase change: the status comes from the event and the session just read
            generation = session["metadata"].get("generation")
            _commit_session(namespace, name, lambda now: session_rec.with_pod_phase(
                now, namespace, name, *state, generation, pod_version), session)
        else:  # gone or failed: a full reconcile, which changes the object as it goes
            _commit_session(namespace, name, session_rec.reconcile(kube(), CFG, session))
    except (Retry, ApiException) as exc:
        log.info("codesessions %s/%s: %s", namespace, name, exc)
        return False
    return True


# ---- WorkflowLibrary ---------------------------------------------------------------------

@kopf.on.resume(GROUP, VERSION, "workflowlibraries")
@kopf.on.create(GROUP, VERSION, "workflowlibraries")
@kopf.on.update(GROUP, VERSION, "workflowlibraries", field="spec")
def library_changed(body: kopf.Body, patch: kopf.Patch, **_: Any) -> None:
    new = _run("WorkflowLibrary", body, patch, library_rec.reconcile)
    _transition(body, dict(body.get("status") or {}), new, "library")


@kopf.timer(GROUP, VERSION, "workflowlibraries", interval=CFG.library_poll_seconds,
            initial_delay=CFG.library_poll_seconds)
def library_poll(body: kopf.Body, patch: kopf.Patch, **_: Any) -> None:
    new = _run("WorkflowLibrary", body, patch, library_rec.reconcile)
    _transition(body, dict(body.get("status") or {}), new, "library")


@kopf.on.event("batch", "v1", "jobs", labels={f"{PREFIX}/library": kopf.PRESENT})
def library_job_event(event: kopf.RawEvent, **_: Any) -> None:
    """A sync Job finished: record its result without waiting for the next poll."""
    job = event["object"]
    status = job.get("status") or {}
    if event.get("type") == "DELETED" or not (status.get("succeeded") or status.get("failed")):
        return
    meta = job.get("metadata") or {}
    name = (meta.get("labels") or {}).get(f"{PREFIX}/library", "")
    library = kube().get_custom("workflowlibraries", meta.get("namespace", ""), name)
    if library is None or (library.get("status") or {}).get("jobName") != meta.get("name"):
        return
    if _reconcile_on_child_event("workflowlibraries", library, library_rec.reconcile):
        metrics.LIBRARY_SYNCS.labels(
            result="succeeded" if status.get("succeeded") else "failed").inc()


@kopf.on.delete(GROUP, VERSION, "workflowlibraries")
def library_deleted(body: kopf.Body, **_: Any) -> None:
    done = library_rec.delete(kube(), CFG, dict(body))
    kopf.event(body, type="Normal", reason="Deleted", message=done)
