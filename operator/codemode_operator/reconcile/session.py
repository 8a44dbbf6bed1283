"""CodeSession: admission, token Secret, Pod and Service, phase, idle and lifetime.

`reconcile` computes the session's status (and creates what is missing); it writes no
status: handlers hand its Outcome to commit.Committer, which writes it. Ending a
session deletes its pod only after Terminated is on record (an `after` action), so
the pod's deletion events find an ended session and never bring the pod back.
"""

from __future__ import annotations

import json
import logging
import secrets
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

from redis import exceptions as redis_errors

from codemode_operator import PREFIX, trace
from codemode_operator.api.codesession import CodeSessionSpec, CodeSessionStatus
from codemode_operator.api.common import parse_duration
from codemode_operator.api.workspace import WorkspaceSpec
from codemode_operator.builders.session import (
    PORT,
    SessionParams,
    endpoint_slice,
    session_endpoint,
    session_pod,
    session_service,
    token_secret,
)
from codemode_operator.commit import Outcome, StatusKind
from codemode_operator.conditions import (
    Progress,
    is_true,
    iso,
    now_iso,
    parse_iso,
    raw_is_true,
    set_condition,
    set_kstatus,
)
from codemode_operator.kube import KubeAPI, Obj
from codemode_operator.reconcile import pool as pool_rec
from codemode_operator.reconcile.params import session_params as params_of
from codemode_operator.reconcile.workspace import RedisConfigError, admin_url
from codemode_operator.session_state import forget_state, state_id_of
from codemode_operator.settings import OperatorConfig
from codemode_operator.vocabulary import (
    STALLED_POD_REASONS,
    ConditionType,
    Phase,
    Reason,
    is_final,
)

log = logging.getLogger("codemode.operator")
_admission = threading.Lock()
AGENT_LABEL = f"{PREFIX}/agent"
Clock = Callable[[], float]


def limits_of(body: Obj, workspace: Obj) -> tuple[float, float]:
    spec = CodeSessionSpec.model_validate(body.get("spec") or {})
    defaults = WorkspaceSpec.model_validate(workspace.get("spec") or {}).session_defaults
    return (
        parse_duration(spec.idle_timeout or defaults.idle_timeout),
        parse_duration(spec.max_lifetime or defaults.max_lifetime),
    )


def pod_state(pod: Obj | None) -> tuple[Phase, str]:
    """(phase, reason) of a CodeSession from its pod, as read or as a watch event has it."""
    if pod is None:
        return Phase.PENDING, Reason.POD_MISSING
    if (pod.get("metadata") or {}).get("deletionTimestamp"):
        return Phase.STARTING, Reason.POD_TERMINATING
    status = pod.get("status") or {}
    if status.get("phase") in ("Failed", "Succeeded"):
        return Phase.FAILED, Reason(f"Pod{status['phase']}")
    for cond in status.get("conditions") or []:
        if cond.get("type") == "Ready" and cond.get("status") == "True":
            return Phase.READY, Reason.POD_READY
        if (
            cond.get("type") == "PodScheduled"
            and cond.get("status") == "False"
            and cond.get("reason")
        ):
            return Phase.STARTING, str(cond["reason"])
    for cs in status.get("containerStatuses") or []:
        reason = ((cs.get("state") or {}).get("waiting") or {}).get("reason")
        if reason in STALLED_POD_REASONS:
            return Phase.STARTING, Reason(reason)
    return Phase.STARTING, Reason.POD_STARTING


def _workspace_sessions(kube: KubeAPI, namespace: str, workspace: str) -> Iterator[Obj]:
    return (
        o
        for o in kube.list_custom("codesessions", namespace)
        if (o.get("spec") or {}).get("workspaceRef") == workspace
    )


# Admitted, live sessions per (namespace, workspace), as last listed plus those admitted
# since. Sessions only leave it (deleted, ended), so the cache can only over-count: below
# the limit it is safe to admit without listing; at the limit the list is taken again.
# Listing every session for every admission made admission O(n) under the lock.
_admitted: dict[tuple[str, str], set[str]] = {}


def _live_admitted(kube: KubeAPI, namespace: str, workspace: str) -> set[str]:
    return {
        o["metadata"]["name"]
        for o in _workspace_sessions(kube, namespace, workspace)
        if raw_is_true(o.get("status"), ConditionType.ADMITTED)
        and not is_final((o.get("status") or {}).get("phase"))
    }


def admit(kube: KubeAPI, body: Obj, workspace: Obj) -> tuple[bool, str]:
    """Count admitted, live sessions of the workspace against maxSessions.

    (True, "n of limit sessions") reserves a slot in the cache; the caller records the
    Admitted condition before creating anything. A reservation whose record never lands
    is dropped by the next listing, which happens at the limit.
    """
    limit = WorkspaceSpec.model_validate(workspace.get("spec") or {}).limits.max_sessions
    meta = body["metadata"]
    key = (meta["namespace"], workspace["metadata"]["name"])
    with _admission:
        known = _admitted.get(key)
        if known is None or len(known - {meta["name"]}) >= limit:
            known = _admitted[key] = _live_admitted(kube, *key)
        live = known - {meta["name"]}
        if len(live) >= limit:
            return False, (
                f"workspace {workspace['metadata']['name']!r} allows {limit} "
                f"session(s) (limits.maxSessions) and {len(live)} are running"
            )
        known.add(meta["name"])
    return True, f"{len(live) + 1} of {limit} sessions"


def server_health(pod: Obj | None) -> dict[str, Any]:
    """The session server's GET /health: its last execution and its state's last snapshot
    and restore; {} when it does not answer."""
    ip = ((pod or {}).get("status") or {}).get("podIP")
    if not ip:
        return {}
    try:
        with urllib.request.urlopen(f"http://{ip}:{PORT}/health", timeout=2) as response:
            data = json.load(response)
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def last_activity(pod: Obj | None) -> float | None:
    """The session server's own record of its last execution (GET /health)."""
    value = server_health(pod).get("last_activity")
    return float(value) if isinstance(value, int | float) else None


def _names(value: Any) -> list[str] | None:
    return [str(n) for n in value][:100] if isinstance(value, list | dict) else None


def with_state(status: CodeSessionStatus, health: dict[str, Any]) -> CodeSessionStatus:
    """The status fields of the session's saved state, from its server's /health."""
    state = health.get("state") if isinstance(health.get("state"), dict) else None
    if state is None:
        return status
    update: dict[str, Any] = {}
    snapshot = state.get("snapshot")
    if isinstance(snapshot, dict):
        taken = snapshot.get("taken_at")
        if isinstance(taken, int | float):
            update["last_snapshot_time"] = iso(taken)
        if isinstance(snapshot.get("bytes"), int):
            update["snapshot_bytes"] = snapshot["bytes"]
        update["unsaved_names"] = _names(snapshot.get("unsaved"))
    if isinstance(state.get("history_messages"), int):
        update["history_messages"] = state["history_messages"]
    restore = state.get("restore")
    if isinstance(restore, dict):
        update["restored_names"] = _names(restore.get("restored"))
        update["lost_names"] = _names(restore.get("lost"))
    return status.model_copy(update=update)


def terminate(
    kube: KubeAPI,
    p: SessionParams,
    status: CodeSessionStatus,
    reason: Reason,
    message: str,
    workspace: Obj | None = None,
) -> Outcome[CodeSessionStatus]:
    """End the session; its pod and Service go once Terminated is written, and its saved
    state (Terminated is final: nothing could load it again)."""
    ended = status.model_copy(
        update={
            "phase": Phase.TERMINATED,
            "reason": reason,
            "endpoint": None,
            "conditions": set_kstatus(
                status.conditions,
                status.observed_generation,
                ready=False,
                reason=reason,
                message=message,
                progress=Progress.CURRENT,
            ),
        }
    )
    cleanup = () if workspace is None else (_forget(kube, p, p.namespace, workspace),)
    return Outcome(
        ended,
        after=(
            lambda: kube.delete_pod(p.namespace, status.pod_name or p.pod_name),
            lambda: kube.delete_service(p.namespace, p.service_name),
            *cleanup,
        ),
    )


def _forget(
    kube: KubeAPI, p: SessionParams, namespace: str, workspace: Obj, history: bool = False
) -> Callable[[], None]:
    """Delete the session's saved state, and with `history` its history (after the status
    that ends it is written)."""

    def run() -> None:
        if not p.state_id:
            return
        try:
            url = admin_url(kube, namespace, WorkspaceSpec.model_validate(workspace["spec"]))
            forget_state(url, p.prefix, p.workspace_id, p.state_id, history)
        except (RedisConfigError, OSError, redis_errors.RedisError):
            pass  # left for the workspace's deletion to remove with its keys

    return run


def suspend(
    kube: KubeAPI,
    p: SessionParams,
    status: CodeSessionStatus,
    workspace: Obj,
    retention: float,
    clock: Clock,
) -> Outcome[CodeSessionStatus]:
    """Suspended: the pod and Service go (the server stores nothing new: each run's state
    was saved as it answered); past the retention the CodeSession and its state go too."""
    now = clock()
    since = parse_iso(status.suspended_at) or now
    message = "suspended (spec.suspend); set spec.suspend to false to resume"
    suspended = status.model_copy(
        update={
            "phase": Phase.SUSPENDED,
            "reason": Reason.SUSPENDED,
            "endpoint": None,
            "suspended_at": iso(since),
            "conditions": set_kstatus(
                status.conditions,
                status.observed_generation,
                ready=False,
                reason=Reason.SUSPENDED,
                message=message,
                progress=Progress.CURRENT,
            ),
        }
    )
    if now - since > retention:
        return Outcome(
            suspended,
            after=(
                _forget(kube, p, p.namespace, workspace, history=True),
                lambda: kube.delete_custom("codesessions", p.namespace, p.name),
            ),
        )
    if status.phase == Phase.SUSPENDED:
        return Outcome(suspended)  # already gone: no calls
    return Outcome(
        suspended,
        after=(
            lambda: kube.delete_pod(p.namespace, status.pod_name or p.pod_name),
            lambda: kube.delete_service(p.namespace, p.service_name),
        ),
    )


PHASE_FIELDS = ("phase", "reason", "endpoint", "start_time", "conditions", "pod_resource_version")


def _rv(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return -1


def newer_pod_view(current: CodeSessionStatus, computed: CodeSessionStatus) -> bool:
    """Whether `current` status was derived from a newer pod than `computed` was.

    The create handler and pod events both write the phase; each records the
    resourceVersion of the pod it looked at, so a slow writer never turns a Ready
    session back to Starting from an older look at the pod.
    """
    return _rv(current.pod_resource_version) > _rv(computed.pod_resource_version)


def guard(current: CodeSessionStatus, computed: CodeSessionStatus) -> CodeSessionStatus:
    """What may be written over `current`: an ended session stays ended, and phase
    fields never go back to an older look at the pod."""
    if is_final(current.phase) and not is_final(computed.phase):
        return current
    if not is_final(computed.phase) and newer_pod_view(current, computed):
        return computed.model_copy(update={k: getattr(current, k) for k in PHASE_FIELDS})
    return computed


def news(old: CodeSessionStatus, new: CodeSessionStatus) -> bool:
    """Whether a session's transition is worth an Event: not its first start (Starting,
    then its first Ready), which a thousand sessions would post a thousand times each;
    its status says so. A session that leaves Ready, stalls, waits, ends, or is Ready
    again after that, is news."""
    if new.phase == Phase.STARTING and new.reason == Reason.POD_STARTING:
        return old.phase == Phase.READY
    if new.phase == Phase.READY:
        return old.start_time is not None
    return True


SESSION = StatusKind("CodeSession", "codesessions", CodeSessionStatus, "session", guard, news)


def _progress(phase: Phase, reason: str) -> Progress:
    if phase == Phase.READY:
        return Progress.CURRENT
    return Progress.STALLED if reason in STALLED_POD_REASONS else Progress.RECONCILING


def with_pod_phase(
    status: CodeSessionStatus,
    namespace: str,
    name: str,
    phase: Phase,
    reason: str,
    generation: int | None,
    pod_version: str | None = None,
) -> CodeSessionStatus:
    """The session status for its pod's phase: endpoint and start time once Ready."""
    update: dict[str, Any] = {"phase": phase, "reason": reason}
    if pod_version is not None:
        update["pod_resource_version"] = pod_version
    if phase == Phase.READY:
        update["endpoint"] = session_endpoint(name, namespace)
        if not status.start_time:
            update["start_time"] = now_iso()
    update["conditions"] = set_kstatus(
        status.conditions,
        generation,
        ready=phase == Phase.READY,
        reason=reason,
        message=f"pod {status.pod_name or name + '-session'} is {phase.lower()}",
        progress=_progress(phase, reason),
    )
    return status.model_copy(update=update)


# The watchdog looks at every Ready session every half minute; what it needs of the
# workspace (idle and lifetime defaults) may be a few seconds old, and reading it once
# per workspace instead of once per session is a third of its API calls.
WORKSPACE_TTL_SECONDS = 10.0
_workspaces: dict[tuple[str, str], tuple[float, Obj | None]] = {}
_workspaces_lock = threading.Lock()


def _read_workspace(kube: KubeAPI, namespace: str, name: str) -> Obj | None:
    found = kube.get_custom("workspaces", namespace, name)
    with _workspaces_lock:
        _workspaces[(namespace, name)] = (time.monotonic() + WORKSPACE_TTL_SECONDS, found)
    return found


def needs_reconcile(body: Obj) -> bool:
    """Whether a CodeSession as a watch shows it asks for a full reconcile: a spec (or a
    new session) the status has not yet answered. Its pod's changes come as pod events,
    and what waits (a workspace, a slot) is retried on a timer, so nothing else does."""
    meta = body.get("metadata") or {}
    status = body.get("status") or {}
    if meta.get("deletionTimestamp") or is_final(status.get("phase")):
        return False
    return bool(status.get("observedGeneration") != meta.get("generation"))


# Where a reconcile reads a workspace from: the handlers' watch of workspaces (no API call
# per session), else the API.
WorkspaceReader = Callable[[KubeAPI, str, str], Obj | None]


def _recent_workspace(kube: KubeAPI, namespace: str, name: str) -> Obj | None:
    """The workspace as read at most WORKSPACE_TTL_SECONDS ago."""
    with _workspaces_lock:
        expires, found = _workspaces.get((namespace, name), (0.0, None))
    if time.monotonic() < expires:
        return found
    return _read_workspace(kube, namespace, name)


def _pending(
    status: CodeSessionStatus, generation: int | None, reason: Reason, message: str
) -> CodeSessionStatus:
    """Waiting (for the workspace, or a slot): Reconciling, and retried by the handler."""
    return status.model_copy(
        update={
            "phase": Phase.PENDING,
            "reason": reason,
            "conditions": set_kstatus(
                status.conditions,
                generation,
                ready=False,
                reason=reason,
                message=message,
                progress=Progress.RECONCILING,
            ),
        }
    )


def reconcile(
    kube: KubeAPI,
    cfg: OperatorConfig,
    body: Obj,
    periodic: bool = False,
    clock: Clock = time.time,
    read_workspace: WorkspaceReader | None = None,
) -> Outcome[CodeSessionStatus]:
    """Ensure the children exist and compute the session's phase.

    `periodic` is the watchdog's look: it also reads the server's last activity, and
    leaves alone a session whose pod stands or that the create handler has not started.
    `read_workspace` answers the workspace from a watch instead of the API.

    A new session's admission is written before anything is created for it. A session
    no pool serves records its pod's name with it and creates its children once that
    write landed (`after`): one status write instead of two. One the pool may serve
    takes its pod on the next step, from the object as written.
    """
    meta = body["metadata"]
    spec = body.get("spec") or {}
    generation = meta.get("generation")
    status = SESSION.read(body).model_copy(update={"observed_generation": generation})
    if is_final(status.phase):
        return Outcome(status)
    if periodic and not status.pod_name:
        return Outcome(status)  # not started yet: the create handler still owns it

    reader = read_workspace or (_recent_workspace if periodic else _read_workspace)
    workspace = reader(kube, meta["namespace"], spec.get("workspaceRef", ""))
    if workspace is None:
        message = f"Workspace {spec.get('workspaceRef')!r} not found in {meta['namespace']!r}"
        status.conditions = set_condition(
            status.conditions,
            ConditionType.WORKSPACE_FOUND,
            False,
            Reason.WORKSPACE_NOT_FOUND,
            message,
            generation,
        )
        return Outcome(_pending(status, generation, Reason.WORKSPACE_NOT_FOUND, message))
    status.conditions = set_condition(
        status.conditions, ConditionType.WORKSPACE_FOUND, True, Reason.FOUND, "", generation
    )
    if not (workspace.get("status") or {}).get("credentialsSecret"):
        return Outcome(
            _pending(
                status,
                generation,
                Reason.WORKSPACE_NOT_READY,
                "the workspace has no Redis credentials yet",
            )
        )

    newly_admitted = False
    if not is_true(status.conditions, ConditionType.ADMITTED):
        admitted, why = admit(kube, body, workspace)
        if not admitted:
            status.conditions = set_condition(
                status.conditions,
                ConditionType.ADMITTED,
                False,
                Reason.SESSION_LIMIT_REACHED,
                why,
                generation,
            )
            return Outcome(_pending(status, generation, Reason.SESSION_LIMIT_REACHED, why))
        # On record before anything is created for it: then the rest, from that object.
        status.conditions = set_condition(
            status.conditions, ConditionType.ADMITTED, True, Reason.WITHIN_LIMIT, why
        )
        newly_admitted = True

    session_spec = CodeSessionSpec.model_validate(spec)
    agent = session_spec.agent_id
    if agent and (meta.get("labels") or {}).get(AGENT_LABEL) != agent:
        kube.patch_custom(
            "codesessions",
            meta["namespace"],
            meta["name"],
            {"metadata": {"labels": {AGENT_LABEL: agent}}},
        )
    if session_spec.fork_from is not None and not status.forked_from:
        source = kube.get_custom("codesessions", meta["namespace"], session_spec.fork_from.session)
        if source is None or (source.get("spec") or {}).get("workspaceRef") != spec.get(
            "workspaceRef"
        ):
            message = (
                f"spec.forkFrom: CodeSession {session_spec.fork_from.session!r} not found "
                f"in workspace {spec.get('workspaceRef')!r}"
            )
            return Outcome(_pending(status, generation, Reason.FORK_SOURCE_NOT_FOUND, message))
        status.forked_from = state_id_of(source["metadata"]["uid"])
        body = {**body, "status": {**(body.get("status") or {}), "forkedFrom": status.forked_from}}
    status.state_id = state_id_of(meta["uid"])
    p = params_of(body, workspace, cfg)
    if session_spec.suspend:
        ws_defaults = WorkspaceSpec.model_validate(workspace.get("spec") or {}).session_defaults
        retention = parse_duration(
            session_spec.suspended_retention or ws_defaults.suspended_retention
        )
        return suspend(kube, p, status, workspace, retention, clock)
    resuming = status.phase == Phase.SUSPENDED
    if resuming:  # the idle clock starts again from the resume
        status = status.model_copy(
            update={"suspended_at": None, "last_activity_time": iso(clock()), "endpoint": None}
        )
    if newly_admitted and not status.pod_name:
        if pool_rec.serves(workspace, cfg, p):
            return Outcome(status, again=True)  # the take comes once admission is on record
        return _start_cold(kube, p, status, generation)
    pod_name = status.pod_name or p.pod_name  # a pod taken from the pool has its own name
    pod = kube.read_pod(p.namespace, pod_name) if status.pod_name else None
    # a new pod replaces one that was seen (not one whose creation failed)
    replacing = bool(status.pod_resource_version) and not resuming
    if pod is not None and pod_state(pod)[0] == Phase.FAILED:
        kube.delete_pod(p.namespace, pod_name)
        pod, replacing = None, not resuming
    after: tuple[Callable[[], None], ...] = ()
    # A pod from the workspace's warm pool when one serves it (a first start, a resume,
    # a pod that is gone); it comes with its Service and token Secret.
    warm = pool_rec.take(kube, cfg, workspace, p) if pod is None else None
    if warm is not None:
        pod, pod_name = warm, warm["metadata"]["name"]
        after = (lambda: _refill(kube, cfg, workspace),)
        if replacing:
            status.pod_recreations = (status.pod_recreations or 0) + 1
    elif not (periodic and pod is not None):
        # Create first and let 409 say "already there": an existing token is kept, and the
        # first reconcile of a session costs three calls, not six. The periodic check
        # skips this while the pod stands: with a thousand sessions those calls add up.
        kube.ensure(token_secret(p, secrets.token_urlsafe(32)))
        kube.ensure(session_service(p))
    if pod is None:
        pod_name = p.pod_name
        pod, created = kube.create_pod(session_pod(p))
        if created and replacing:
            status.pod_recreations = (status.pod_recreations or 0) + 1
    status = status.model_copy(
        update={
            "pod_name": pod_name,
            "token_secret": p.token_secret,
            "workspace_id": p.workspace_id,
        }
    )
    pod_version = ((pod or {}).get("metadata") or {}).get("resourceVersion")
    status = with_pod_phase(status, p.namespace, p.name, *pod_state(pod), generation, pod_version)

    if status.phase == Phase.READY:
        idle, lifetime = limits_of(body, workspace)
        now = clock()
        started = parse_iso(status.start_time) or now
        if now - started > lifetime:
            return terminate(
                kube,
                p,
                status,
                Reason.MAX_LIFETIME_EXCEEDED,
                f"the session reached its maximum lifetime of {lifetime:g}s",
                workspace,
            )
        if periodic:
            health = server_health(pod)
            seen = health.get("last_activity")
            if isinstance(seen, int | float):
                status.last_activity_time = iso(seen)
            status = with_state(status, health)
        active = parse_iso(status.last_activity_time) or started
        if now - max(active, started) > idle:
            if session_spec.idle_action == "Suspend":
                # Through spec, so a user resumes by setting it back to false.
                kube.patch_custom("codesessions", p.namespace, p.name, {"spec": {"suspend": True}})
                ws_defaults = WorkspaceSpec.model_validate(
                    workspace.get("spec") or {}
                ).session_defaults
                retention = parse_duration(
                    session_spec.suspended_retention or ws_defaults.suspended_retention
                )
                return suspend(kube, p, status, workspace, retention, clock)
            return terminate(
                kube,
                p,
                status,
                Reason.IDLE_TIMEOUT,
                f"no execution for {idle:g}s (idleTimeout)",
                workspace,
            )
    if warm is None:  # a take wrote the endpoint of the pod it bound
        sync_endpoints(kube, body, SESSION.read(body), status, pod)
    return Outcome(status, after=after)


def sync_endpoints(
    kube: KubeAPI, body: Obj, old: CodeSessionStatus, new: CodeSessionStatus, pod: Obj | None
) -> None:
    """Point the session's Service at its pod: when the session becomes Ready (before the
    status says so, so its address answers by then), moves to another pod, or stops
    being Ready. An ending session's Service goes with its pod (`terminate`, `suspend`)."""
    ready, was = new.phase == Phase.READY, old.phase == Phase.READY
    if ready == was and (not ready or old.pod_name == new.pod_name):
        return
    kube.apply_endpoints(endpoint_slice(body, pod, ready))
    meta = body["metadata"]
    trace.mark(meta["namespace"], meta["name"], "endpoints")


def _start_cold(
    kube: KubeAPI, p: SessionParams, status: CodeSessionStatus, generation: int | None
) -> Outcome[CodeSessionStatus]:
    """A new session's first write: admitted, Starting on a pod of its own, named; the
    token Secret, Service and pod are created once it is on record. Should they fail,
    the next reconcile finds the name and no pod, and creates them."""
    named = status.model_copy(
        update={
            "pod_name": p.pod_name,
            "token_secret": p.token_secret,
            "workspace_id": p.workspace_id,
        }
    )
    starting = with_pod_phase(
        named, p.namespace, p.name, Phase.STARTING, Reason.POD_STARTING, generation
    )

    def create() -> None:
        kube.ensure(token_secret(p, secrets.token_urlsafe(32)))
        kube.ensure(session_service(p))
        kube.create_pod(session_pod(p))
        trace.mark(p.namespace, p.name, "children_created")

    return Outcome(starting, after=(create,))


def pod_event_status(
    status: CodeSessionStatus,
    namespace: str,
    name: str,
    phase: Phase,
    reason: str,
    generation: int | None,
    pod_version: str | None,
) -> CodeSessionStatus:
    """The status a pod event gives: `with_pod_phase`, except that a look at the pod that
    changes nothing but the pod version is not written while no version is on record
    (a new pod's first events: nothing older could be written over them)."""
    new = with_pod_phase(status, namespace, name, phase, reason, generation, pod_version)
    if status.pod_resource_version is None and all(
        getattr(new, k) == getattr(status, k) for k in PHASE_FIELDS if k != "pod_resource_version"
    ):
        return status
    return new


def _refill(kube: KubeAPI, cfg: OperatorConfig, workspace: Obj) -> None:
    """The pool starts a pod for the one a session took (once the session's status is
    written); its status follows from the new pod's events."""
    try:
        pool_rec.reconcile(kube, cfg, workspace)
    except Exception:  # the workspace's own reconcile refills on its next run
        log.exception("refilling the warm pool of %s", workspace["metadata"]["name"])
