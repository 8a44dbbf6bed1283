"""kopf handlers: thin wiring from events to the reconcile modules.

Handlers are sync functions, so kopf runs them in its thread pool and the
blocking Kubernetes and Redis clients never touch its event loop.
"""

from __future__ import annotations

import logging
import time
from typing import Any

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
CFG = OperatorConfig.from_env()
_kube: Kube | None = None


def kube() -> Kube:
    global _kube
    if _kube is None:
        _kube = Kube()
    return _kube


def _run(kind: str, body: Any, patch: kopf.Patch, fn: Any, *args: Any) -> dict[str, Any]:
    """Call a reconcile function, write its status, turn Retry into kopf's retry."""
    try:
        status: dict[str, Any] = fn(kube(), CFG, dict(body), *args)
    except Retry as exc:
        metrics.RECONCILES.labels(kind=kind, outcome="retry").inc()
        raise kopf.TemporaryError(str(exc), delay=exc.delay) from None
    except ApiException as exc:
        metrics.ERRORS.labels(kind=kind).inc()
        raise kopf.TemporaryError(f"Kubernetes API error: {exc.status} {exc.reason}",
                                  delay=5) from None
    old = dict(body.get("status") or {})
    if any(old.get(key) != value for key, value in status.items()):
        # The whole computed status, never a mix: an event handler may have written newer
        # fields since `body` was read, and half of each would be inconsistent.
        for key, value in status.items():
            patch.status[key] = value
    metrics.RECONCILES.labels(kind=kind, outcome="ok").inc()
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
            kopf.info(body, reason=after[1] or "Ready", message=message)
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
    kopf.info(body, reason="Deleted", message=done)


# ---- CodeSession -------------------------------------------------------------------------

def _run_session(body: kopf.Body, patch: kopf.Patch, *args: Any) -> dict[str, Any]:
    """_run for a CodeSession, keeping phase fields that pod events wrote from a newer pod."""
    def reconcile(kube_: Kube, cfg: OperatorConfig, obj: dict[str, Any],
                  *rest: Any) -> dict[str, Any]:
        status = session_rec.reconcile(kube_, cfg, obj, *rest)
        meta = obj["metadata"]
        current = kube_.get_custom("codesessions", meta["namespace"], meta["name"]) or {}
        fresh = dict(current.get("status") or {})
        if status.get("phase") not in session_rec.ENDED and \
                session_rec.newer_pod_view(fresh, status):
            status.update({k: fresh.get(k) for k in session_rec.PHASE_FIELDS})
        return status

    return _run("CodeSession", body, patch, reconcile, *args)


@kopf.on.resume(GROUP, VERSION, "codesessions")
@kopf.on.create(GROUP, VERSION, "codesessions")
@kopf.on.update(GROUP, VERSION, "codesessions", field="spec")
def session_changed(body: kopf.Body, patch: kopf.Patch, retry: int = 0, **_: Any) -> None:
    new = _run_session(body, patch)
    _transition(body, dict(body.get("status") or {}), new, "session")
    if new.get("phase") == "Pending" and new.get("reason") in (
            "WorkspaceNotFound", "WorkspaceNotReady", "SessionLimitReached"):
        raise kopf.TemporaryError(f"waiting: {new['reason']}", delay=5)
    if new.get("phase") == "Starting":
        # The pod's own events usually move the session to Ready, but this handler's status
        # patch lands after them and can carry a stale Starting: look again shortly.
        raise kopf.TemporaryError("waiting for the session pod to be ready",
                                  delay=min(30.0, 3.0 + 2.0 * retry))


@kopf.timer(GROUP, VERSION, "codesessions", interval=CFG.session_poll_seconds * 6,
            initial_delay=CFG.session_poll_seconds * 6, idle=CFG.session_poll_seconds)
def session_watchdog(body: kopf.Body, patch: kopf.Patch, **_: Any) -> None:
    """Idle timeout, maximum lifetime, and a pod deleted behind our back."""
    new = _run_session(body, patch, True)
    _transition(body, dict(body.get("status") or {}), new, "session")


@kopf.on.event("v1", "pods", labels={f"{PREFIX}/session": kopf.PRESENT})
def session_pod_event(event: kopf.RawEvent, **_: Any) -> None:
    """React at once to the pod becoming Ready, failing or vanishing."""
    pod = event["object"]
    meta = pod.get("metadata") or {}
    name = (meta.get("labels") or {}).get(f"{PREFIX}/session")
    if not name:
        return
    session = kube().get_custom("codesessions", meta.get("namespace", ""), name)
    if session is None or (session.get("status") or {}).get("phase") in session_rec.ENDED:
        return
    old = dict(session.get("status") or {})
    if event.get("type") == "DELETED":
        result = _reconcile_on_child_event("codesessions", session, session_rec.reconcile)
    else:
        phase, reason = session_rec.raw_pod_state(dict(pod))
        version = meta.get("resourceVersion")
        if old.get("phase") == phase and old.get("reason") == reason:
            return  # nothing this event changes
        if session_rec.newer_pod_view(old, {"podResourceVersion": version}):
            return  # the status already reflects a newer look at the pod
        if reason == "PodTerminating":
            return  # its DELETED event follows, and decides whether to recreate it
        if phase == "Failed" or not old.get("podName"):
            result = _reconcile_on_child_event("codesessions", session, session_rec.reconcile)
        else:  # a phase change: write the status from the event, no other call
            new = session_rec.with_pod_phase(old, meta["namespace"], name, phase, reason,
                                             session["metadata"].get("generation"), version)
            changed = {k: v for k, v in new.items() if old.get(k) != v}
            kube().patch_status("codesessions", meta["namespace"], name, changed)
            _transition(session, old, new, "codesessions")
            result = (old, new)
    if result is not None and result[1].get("phase") == "Ready" and \
            result[0].get("phase") != "Ready":
        created = parse_iso(session["metadata"].get("creationTimestamp"))
        if created:
            metrics.SESSION_START.observe(max(0.0, time.time() - created))


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
    kopf.info(body, reason="Deleted", message=done)
