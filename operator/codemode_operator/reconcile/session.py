"""CodeSession: admission, token Secret, Pod and Service, phase, idle and lifetime."""

from __future__ import annotations

import json
import secrets
import threading
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

from codemode_operator.api.codesession import CodeSessionSpec
from codemode_operator.api.common import parse_bytes, parse_duration
from codemode_operator.api.workspace import WorkspaceSpec
from codemode_operator.builders.session import (
    PORT,
    SessionParams,
    session_endpoint,
    session_pod,
    session_service,
    token_secret,
)
from codemode_operator.conditions import is_true, iso, now_iso, parse_iso, set_condition
from codemode_operator.kube import Kube
from codemode_operator.settings import OperatorConfig

_admission = threading.Lock()
ENDED = ("Terminated",)


def params_of(body: dict[str, Any], workspace: dict[str, Any],
              cfg: OperatorConfig) -> SessionParams:
    meta = body["metadata"]
    spec = CodeSessionSpec.model_validate(body.get("spec") or {})
    ws_spec = WorkspaceSpec.model_validate(workspace.get("spec") or {})
    defaults = ws_spec.session_defaults
    resources = spec.resources or defaults.resources
    return SessionParams(
        name=meta["name"],
        namespace=meta["namespace"],
        uid=meta["uid"],
        workspace=workspace["metadata"]["name"],
        workspace_id=ws_spec.workspace_id or workspace["metadata"]["name"],
        prefix=ws_spec.prefix,
        credentials_secret=(workspace.get("status") or {}).get("credentialsSecret", ""),
        image=spec.image or defaults.image or cfg.session_image,
        image_pull_policy=defaults.image_pull_policy,
        resources=resources.model_dump(exclude_none=True) if resources else {},
        runtime_class_name=spec.runtime_class_name or defaults.runtime_class_name,
        default_timeout=parse_duration(spec.default_timeout or defaults.default_timeout),
        max_execution_time=parse_duration(defaults.max_execution_time),
        allow_runtime_deps=defaults.allow_runtime_deps,
        memory_limit_mb=defaults.memory_limit_mb,
        tools_config_map=defaults.tools_config_map,
        max_storage_bytes=parse_bytes(ws_spec.limits.max_storage_bytes),
        max_artifact_bytes=parse_bytes(ws_spec.limits.max_artifact_bytes),
        max_workflows=ws_spec.limits.max_workflows,
    )


def limits_of(body: dict[str, Any], workspace: dict[str, Any]) -> tuple[float, float]:
    spec = CodeSessionSpec.model_validate(body.get("spec") or {})
    defaults = WorkspaceSpec.model_validate(workspace.get("spec") or {}).session_defaults
    return (parse_duration(spec.idle_timeout or defaults.idle_timeout),
            parse_duration(spec.max_lifetime or defaults.max_lifetime))


def pod_state(pod: Any | None) -> tuple[str, str]:
    """(phase, reason) of a CodeSession from its pod."""
    if pod is None:
        return "Pending", "PodMissing"
    if pod.metadata.deletion_timestamp is not None:
        return "Starting", "PodTerminating"
    phase = pod.status.phase if pod.status else None
    if phase in ("Failed", "Succeeded"):
        return "Failed", f"Pod{phase}"
    for cond in (pod.status.conditions or []) if pod.status else []:
        if cond.type == "Ready" and cond.status == "True":
            return "Ready", "PodReady"
        if cond.type == "PodScheduled" and cond.status == "False" and cond.reason:
            return "Starting", cond.reason
    for cs in (pod.status.container_statuses or []) if pod.status else []:
        waiting = cs.state.waiting if cs.state else None
        if waiting is not None and waiting.reason in WAITING_REASONS:
            return "Starting", waiting.reason
    return "Starting", "PodStarting"


WAITING_REASONS = ("ErrImagePull", "ImagePullBackOff", "CrashLoopBackOff",
                   "CreateContainerConfigError", "InvalidImageName")


def raw_pod_state(pod: dict[str, Any]) -> tuple[str, str]:
    """pod_state() for a watch event's raw pod, so events need no extra read."""
    if (pod.get("metadata") or {}).get("deletionTimestamp"):
        return "Starting", "PodTerminating"
    status = pod.get("status") or {}
    if status.get("phase") in ("Failed", "Succeeded"):
        return "Failed", f"Pod{status['phase']}"
    for cond in status.get("conditions") or []:
        if cond.get("type") == "Ready" and cond.get("status") == "True":
            return "Ready", "PodReady"
        if cond.get("type") == "PodScheduled" and cond.get("status") == "False" \
                and cond.get("reason"):
            return "Starting", str(cond["reason"])
    for cs in status.get("containerStatuses") or []:
        reason = ((cs.get("state") or {}).get("waiting") or {}).get("reason")
        if reason in WAITING_REASONS:
            return "Starting", str(reason)
    return "Starting", "PodStarting"


def _workspace_sessions(kube: Kube, namespace: str, workspace: str
                        ) -> Iterator[dict[str, Any]]:
    return (o for o in kube.list_custom("codesessions", namespace)
            if (o.get("spec") or {}).get("workspaceRef") == workspace)


# Admitted, live sessions per (namespace, workspace), as last listed plus those admitted
# since. Sessions only leave it (deleted, ended), so the cache can only over-count: below
# the limit it is safe to admit without listing; at the limit the list is taken again.
# Listing every session for every admission made admission O(n) under the lock.
_admitted: dict[tuple[str, str], set[str]] = {}


def _live_admitted(kube: Kube, namespace: str, workspace: str) -> set[str]:
    return {o["metadata"]["name"] for o in _workspace_sessions(kube, namespace, workspace)
            if is_true((o.get("status") or {}).get("conditions"), "Admitted")
            and (o.get("status") or {}).get("phase") not in ENDED}


def admit(kube: Kube, body: dict[str, Any], workspace: dict[str, Any]) -> tuple[bool, str]:
    """Count admitted, live sessions of the workspace against maxSessions."""
    status = body.get("status") or {}
    if is_true(status.get("conditions"), "Admitted"):
        return True, ""
    limit = WorkspaceSpec.model_validate(workspace.get("spec") or {}).limits.max_sessions
    meta = body["metadata"]
    key = (meta["namespace"], workspace["metadata"]["name"])
    with _admission:
        known = _admitted.get(key)
        if known is None or len(known - {meta["name"]}) >= limit:
            known = _admitted[key] = _live_admitted(kube, *key)
        live = known - {meta["name"]}
        if len(live) >= limit:
            return False, (f"workspace {workspace['metadata']['name']!r} allows {limit} "
                           f"session(s) (limits.maxSessions) and {len(live)} are running")
        known.add(meta["name"])  # the slot is reserved; record it outside the lock
    conditions = set_condition(status.get("conditions"), "Admitted", True, "WithinLimit",
                               f"{len(live) + 1} of {limit} sessions")
    try:
        kube.patch_status("codesessions", meta["namespace"], meta["name"],
                          {"conditions": conditions})
    except Exception:
        with _admission:
            known.discard(meta["name"])
        raise
    body.setdefault("status", {})["conditions"] = conditions
    return True, ""


def last_activity(pod: Any | None) -> float | None:
    """The session server's own record of its last execution (GET /health)."""
    ip = pod.status.pod_ip if pod is not None and pod.status else None
    if not ip:
        return None
    try:
        with urllib.request.urlopen(f"http://{ip}:{PORT}/health", timeout=2) as response:
            data = json.load(response)
    except (OSError, ValueError):
        return None
    value = data.get("last_activity")
    return float(value) if isinstance(value, int | float) else None


def terminate(kube: Kube, p: SessionParams, status: dict[str, Any], reason: str,
              message: str) -> dict[str, Any]:
    """End the session: Terminated is written first, so the pod's deletion events that
    follow find an ended session and never bring the pod back."""
    status.update(phase="Terminated", reason=reason, endpoint=None)
    status["conditions"] = set_condition(status.get("conditions"), "Ready", False, reason,
                                         message)
    kube.patch_status("codesessions", p.namespace, p.name, status)
    kube.delete_pod(p.namespace, p.pod_name)
    kube.delete_service(p.namespace, p.service_name)
    return status


PHASE_FIELDS = ("phase", "reason", "endpoint", "startTime", "conditions", "podResourceVersion")


def _rv(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return -1


def newer_pod_view(current: dict[str, Any], computed: dict[str, Any]) -> bool:
    """Whether `current` status was derived from a newer pod than `computed` was.

    The create handler and pod events both write the phase; each records the
    resourceVersion of the pod it looked at, so a slow writer never turns a Ready
    session back to Starting from an older look at the pod.
    """
    return _rv(current.get("podResourceVersion")) > _rv(computed.get("podResourceVersion"))


def with_pod_phase(status: dict[str, Any], namespace: str, name: str, phase: str, reason: str,
                   generation: int | None, pod_version: str | None = None) -> dict[str, Any]:
    """The session status for its pod's phase: endpoint and start time once Ready."""
    status = {**status, "phase": phase, "reason": reason}
    if pod_version is not None:
        status["podResourceVersion"] = pod_version
    if phase == "Ready":
        status["endpoint"] = session_endpoint(name, namespace)
        if not status.get("startTime"):
            status["startTime"] = now_iso()
    status["conditions"] = set_condition(status.get("conditions"), "Ready", phase == "Ready",
                                         reason, f"pod {name}-session is {phase.lower()}",
                                         generation)
    return status


# The watchdog looks at every Ready session every half minute; what it needs of the
# workspace (idle and lifetime defaults) may be a few seconds old, and reading it once
# per workspace instead of once per session is a third of its API calls.
WORKSPACE_TTL_SECONDS = 10.0
_workspaces: dict[tuple[str, str], tuple[float, dict[str, Any] | None]] = {}
_workspaces_lock = threading.Lock()


def _read_workspace(kube: Kube, namespace: str, name: str) -> dict[str, Any] | None:
    found = kube.get_custom("workspaces", namespace, name)
    with _workspaces_lock:
        _workspaces[(namespace, name)] = (time.monotonic() + WORKSPACE_TTL_SECONDS, found)
    return found


def _recent_workspace(kube: Kube, namespace: str, name: str) -> dict[str, Any] | None:
    """The workspace as read at most WORKSPACE_TTL_SECONDS ago."""
    with _workspaces_lock:
        expires, found = _workspaces.get((namespace, name), (0.0, None))
    if time.monotonic() < expires:
        return found
    return _read_workspace(kube, namespace, name)


def reconcile(kube: Kube, cfg: OperatorConfig, body: dict[str, Any],
              periodic: bool = False) -> dict[str, Any]:
    """Ensure the children exist and report the session's phase; returns the new status.

    `periodic` is the watchdog's look: it also reads the server's last activity, and
    leaves alone a session whose pod stands or that the create handler has not started.
    """
    meta = body["metadata"]
    spec = body.get("spec") or {}
    generation = meta.get("generation")
    status = dict(body.get("status") or {})
    status["observedGeneration"] = generation
    if status.get("phase") in ENDED:
        return status
    if periodic and not status.get("podName"):
        return status  # not started yet: the create handler still owns it
    conditions = status.get("conditions") or []

    workspace = (_recent_workspace if periodic else _read_workspace)(
        kube, meta["namespace"], spec.get("workspaceRef", ""))
    if workspace is None:
        status.update(phase="Pending", reason="WorkspaceNotFound")
        message = f"Workspace {spec.get('workspaceRef')!r} not found in {meta['namespace']!r}"
        conditions = set_condition(conditions, "WorkspaceFound", False, "WorkspaceNotFound",
                                   message, generation)
        status["conditions"] = set_condition(conditions, "Ready", False, "WorkspaceNotFound",
                                             message, generation)
        return status
    conditions = set_condition(conditions, "WorkspaceFound", True, "Found", "", generation)
    if not (workspace.get("status") or {}).get("credentialsSecret"):
        status.update(phase="Pending", reason="WorkspaceNotReady")
        status["conditions"] = set_condition(conditions, "Ready", False, "WorkspaceNotReady",
                                             "the workspace has no Redis credentials yet",
                                             generation)
        return status

    body = {**body, "status": {**status, "conditions": conditions}}
    admitted, why = admit(kube, body, workspace)
    conditions = body["status"]["conditions"]
    if not admitted:
        status.update(phase="Pending", reason="SessionLimitReached")
        conditions = set_condition(conditions, "Admitted", False, "SessionLimitReached", why,
                                   generation)
        status["conditions"] = set_condition(conditions, "Ready", False,
                                             "SessionLimitReached", why, generation)
        return status

    status["conditions"] = conditions  # WorkspaceFound and Admitted, as just decided
    p = params_of(body, workspace, cfg)
    pod = kube.read_pod(p.namespace, p.pod_name) if status.get("podName") else None
    if not (periodic and pod is not None):
        # Create first and let 409 say "already there": an existing token is kept, and the
        # first reconcile of a session costs three calls, not six. The periodic check
        # skips this while the pod stands: with a thousand sessions those calls add up.
        kube.ensure(token_secret(p, secrets.token_urlsafe(32)))
        kube.ensure(session_service(p))
    if pod is not None and pod_state(pod)[0] == "Failed":
        kube.delete_pod(p.namespace, p.pod_name)
        pod = None
    if pod is None:
        pod, created = kube.create_pod(session_pod(p))
        if created and status.get("podName"):
            status["podRecreations"] = int(status.get("podRecreations") or 0) + 1
    status.update(podName=p.pod_name, tokenSecret=p.token_secret, workspaceId=p.workspace_id)
    status = with_pod_phase(status, p.namespace, p.name, *pod_state(pod), generation,
                            pod.metadata.resource_version if pod is not None else None)
    conditions = status["conditions"]
    phase = status["phase"]

    if phase == "Ready":
        idle, lifetime = limits_of(body, workspace)
        started = parse_iso(status.get("startTime")) or time.time()
        if time.time() - started > lifetime:
            return terminate(kube, p, status, "MaxLifetimeExceeded",
                             f"the session reached its maximum lifetime of {lifetime:g}s")
        if periodic:
            seen = last_activity(pod)
            if seen is not None:
                status["lastActivityTime"] = iso(seen)
        active = parse_iso(status.get("lastActivityTime")) or started
        if time.time() - max(active, started) > idle:
            return terminate(kube, p, status, "IdleTimeout",
                             f"no execution for {idle:g}s (idleTimeout)")
    return status
