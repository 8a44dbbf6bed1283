"""WorkflowLibrary: sync Jobs, their results, interval, backoff and pruning on delete.

`reconcile` computes the status (and starts a sync Job when one is due); it writes no
status. A finished Job is deleted only once its result is on record (an `after` action).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from codemode_session.storage.redis_storage import RedisStorage
from codemode_session.store.bootstrap import unpublish_library
from kubernetes.client.exceptions import ApiException

from codemode_operator.api.common import parse_duration
from codemode_operator.api.workflowlibrary import (
    SyncedArtifact,
    WorkflowLibrarySpec,
    WorkflowLibraryStatus,
)
from codemode_operator.api.workspace import WorkspaceSpec
from codemode_operator.builders.library import (
    LibraryParams,
    failure_reason,
    job_name,
    parse_result,
    sync_job,
)
from codemode_operator.commit import LIBRARY, Outcome
from codemode_operator.conditions import Progress, iso, parse_iso, set_condition, set_kstatus
from codemode_operator.kube import KubeAPI, Obj
from codemode_operator.reconcile import Retry
from codemode_operator.reconcile.workspace import RedisConfigError, admin_url
from codemode_operator.settings import OperatorConfig
from codemode_operator.vocabulary import ConditionType, Reason

MAX_BACKOFF = 600.0
Clock = Callable[[], float]


def params_of(body: Obj, workspace: Obj, cfg: OperatorConfig) -> LibraryParams:
    meta = body["metadata"]
    spec = WorkflowLibrarySpec.model_validate(body.get("spec") or {})
    ws_spec = WorkspaceSpec.model_validate(workspace.get("spec") or {})
    return LibraryParams(
        name=meta["name"],
        namespace=meta["namespace"],
        uid=meta["uid"],
        spec=spec,
        workspace=workspace["metadata"]["name"],
        workspace_id=ws_spec.workspace_id or workspace["metadata"]["name"],
        prefix=ws_spec.prefix,
        credentials_secret=(workspace.get("status") or {}).get("credentialsSecret", ""),
        image=ws_spec.session_defaults.image or cfg.session_image,
        image_pull_policy=ws_spec.session_defaults.image_pull_policy,
        timeout_seconds=max(10, int(parse_duration(spec.timeout))),
    )


def _job_outcome(kube: KubeAPI, namespace: str, name: str) -> tuple[str, str | None]:
    """('running'|'succeeded'|'failed'|'missing', termination message)."""
    job = kube.read_job(namespace, name)
    if job is None:
        return "missing", None
    st = job.get("status") or {}
    if not (st.get("succeeded") or st.get("failed")):
        for cond in st.get("conditions") or []:
            if cond.get("type") == "Failed" and cond.get("status") == "True":
                return "failed", cond.get("message") or cond.get("reason")
        return "running", None
    message = None
    for pod in kube.job_pods(namespace, name):
        for cs in (pod.get("status") or {}).get("containerStatuses") or []:
            term = (cs.get("state") or {}).get("terminated")
            if term and term.get("message"):
                message = term["message"]
    return ("succeeded" if st.get("succeeded") else "failed"), message


def backoff(failures: int, interval: float) -> float:
    """Seconds to wait after `failures` failed syncs in a row: 5 s doubling, at most
    MAX_BACKOFF and never longer than the interval."""
    return min(MAX_BACKOFF, 5.0 * 2.0 ** (failures - 1), interval)


def due(
    status: WorkflowLibraryStatus, spec: WorkflowLibrarySpec, generation: int | None, now: float
) -> bool:
    if status.observed_generation != generation:
        return True
    interval = parse_duration(spec.interval)
    if status.failures:
        attempted = parse_iso(status.last_attempt_time) or 0.0
        return now - attempted >= backoff(status.failures, interval)
    last = parse_iso(status.last_sync_time) or 0.0
    return now - last >= interval


def reconcile(
    kube: KubeAPI, cfg: OperatorConfig, body: Obj, clock: Clock = time.time
) -> Outcome[WorkflowLibraryStatus]:
    meta = body["metadata"]
    generation = meta.get("generation")
    status = LIBRARY.read(body)
    spec = WorkflowLibrarySpec.model_validate(body.get("spec") or {})

    def conditions(ready: bool | None, reason: Reason, message: str, progress: Progress) -> None:
        status.conditions = set_kstatus(
            status.conditions,
            generation,
            ready=ready,
            reason=reason,
            message=message,
            progress=progress,
        )

    workspace = kube.get_custom("workspaces", meta["namespace"], spec.workspace_ref)
    if workspace is None or not (workspace.get("status") or {}).get("credentialsSecret"):
        reason, message = (
            (Reason.WORKSPACE_NOT_FOUND, f"Workspace {spec.workspace_ref!r} not found")
            if workspace is None
            else (Reason.WORKSPACE_NOT_READY, "the workspace is not ready yet")
        )
        conditions(False, reason, message, Progress.RECONCILING)
        return Outcome(status)
    p = params_of(body, workspace, cfg)

    running = status.job_name
    if running:
        outcome, output = _job_outcome(kube, p.namespace, running)
        if outcome == "running":
            return Outcome(status)
        status.job_name = None
        finished: str = running
        done = (lambda: kube.delete_job(p.namespace, finished),)  # once the result is on record
        result = parse_result(output) if outcome == "succeeded" else None
        if result is not None:
            status.artifact = SyncedArtifact(
                revision=str(result.get("revision", "")),
                digest=str(result.get("digest", "")),
                count=int(result.get("count", 0) or 0),
            )
            status.added = int(result.get("added", 0))
            status.updated = int(result.get("updated", 0))
            status.removed = int(result.get("removed", 0))
            status.last_sync_time = iso(clock())
            status.failures = 0
            status.observed_generation = generation
            conditions(
                True,
                Reason.SUCCEEDED,
                f"published {status.artifact.count} workflow(s) at revision "
                f"{status.artifact.revision[:12]}",
                Progress.CURRENT,
            )
            return Outcome(status, after=done)
        failures = (status.failures or 0) + 1
        why = failure_reason(output) if outcome != "missing" else "the sync Job disappeared"
        status.failures = failures
        status.observed_generation = generation
        conditions(
            False if status.artifact is None else None,
            Reason.SYNC_FAILED,
            f"{why} (attempt {failures}; retrying with backoff)",
            Progress.STALLED,
        )
        return Outcome(status, after=done)

    if spec.suspend:
        status.conditions = set_condition(
            status.conditions,
            ConditionType.RECONCILING,
            False,
            Reason.SUSPENDED,
            "spec.suspend is true",
            generation,
        )
        status.observed_generation = generation
        return Outcome(status)
    if not due(status, spec, generation, clock()):
        return Outcome(status)

    attempt = (status.attempts or 0) + 1
    name = job_name(p.name, attempt, spec)
    keys: frozenset[str] = frozenset()
    if spec.source.secret_ref is not None:
        data = kube.secret_data(p.namespace, spec.source.secret_ref.name)
        if data is None:
            conditions(
                False,
                Reason.SECRET_NOT_FOUND,
                f"Secret {spec.source.secret_ref.name!r} (source.secretRef) not found",
                Progress.STALLED,
            )
            status.observed_generation = generation
            return Outcome(status)
        keys = frozenset(data)
    try:
        kube.ensure(sync_job(p, name, secret_keys=keys))
    except ApiException as exc:
        raise Retry(f"cannot create sync Job {name}: {exc.reason}", 10) from None
    status.job_name, status.attempts, status.last_attempt_time = name, attempt, iso(clock())
    conditions(
        True if status.artifact is not None else None,
        Reason.SYNCING,
        f"Job {name} is fetching {spec.source.url}",
        Progress.RECONCILING,
    )
    return Outcome(status)


def delete(kube: KubeAPI, cfg: OperatorConfig, body: Obj) -> str:
    """With prune, remove every workflow the library published (agent ones stay)."""
    meta = body["metadata"]
    spec = WorkflowLibrarySpec.model_validate(body.get("spec") or {})
    if not spec.prune:
        return "prune is off: published workflows stay"
    workspace = kube.get_custom("workspaces", meta["namespace"], spec.workspace_ref)
    if workspace is None:
        return "workspace is gone: nothing to prune"
    ws_spec = WorkspaceSpec.model_validate(workspace.get("spec") or {})
    try:
        url = admin_url(kube, meta["namespace"], ws_spec)
    except RedisConfigError as exc:
        return f"cannot prune: {exc}"
    return asyncio.run(
        _prune(
            url, ws_spec.prefix, ws_spec.workspace_id or workspace["metadata"]["name"], meta["name"]
        )
    )


async def _prune(url: str, prefix: str, workspace_id: str, library: str) -> str:
    """Unpublish in one watched transaction, so an agent's concurrent save survives."""
    storage = RedisStorage(url, prefix=prefix, workspace_id=workspace_id)
    try:
        result = await unpublish_library(storage, library)
    finally:
        await storage.close()
    return f"pruned {result.removed} workflow(s)"
