"""WorkflowLibrary: sync Jobs, their results, interval, backoff and pruning on delete."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from codemode_session.storage.redis_storage import RedisStorage
from codemode_session.store.bootstrap import unpublish_library
from kubernetes.client.exceptions import ApiException

from codemode_operator.api.common import parse_duration
from codemode_operator.api.workflowlibrary import WorkflowLibrarySpec
from codemode_operator.api.workspace import WorkspaceSpec
from codemode_operator.builders.library import (
    LibraryParams,
    failure_reason,
    job_name,
    parse_result,
    sync_job,
)
from codemode_operator.conditions import now_iso, parse_iso, set_condition
from codemode_operator.kube import Kube
from codemode_operator.reconcile import Retry
from codemode_operator.reconcile.workspace import RedisConfigError, admin_url
from codemode_operator.settings import OperatorConfig

MAX_BACKOFF = 600.0


def params_of(body: dict[str, Any], workspace: dict[str, Any],
              cfg: OperatorConfig) -> LibraryParams:
    meta = body["metadata"]
    spec = WorkflowLibrarySpec.model_validate(body.get("spec") or {})
    ws_spec = WorkspaceSpec.model_validate(workspace.get("spec") or {})
    return LibraryParams(
        name=meta["name"], namespace=meta["namespace"], uid=meta["uid"], spec=spec,
        workspace=workspace["metadata"]["name"],
        workspace_id=ws_spec.workspace_id or workspace["metadata"]["name"],
        prefix=ws_spec.prefix,
        credentials_secret=(workspace.get("status") or {}).get("credentialsSecret", ""),
        image=ws_spec.session_defaults.image or cfg.session_image,
        image_pull_policy=ws_spec.session_defaults.image_pull_policy,
        timeout_seconds=max(10, int(parse_duration(spec.timeout))),
    )


def _conditions(status: dict[str, Any], generation: int | None, *, ready: bool | None,
                reconciling: bool, stalled: bool, reason: str, message: str
                ) -> list[dict[str, Any]]:
    conds = status.get("conditions") or []
    conds = set_condition(conds, "Ready", ready, reason, message, generation)
    conds = set_condition(conds, "Reconciling", reconciling,
                          "Progressing" if reconciling else reason,
                          message if reconciling else "", generation)
    return set_condition(conds, "Stalled", stalled, reason if stalled else "NotStalled",
                         message if stalled else "", generation)


def _job_outcome(kube: Kube, namespace: str, name: str) -> tuple[str, str | None]:
    """('running'|'succeeded'|'failed'|'missing', termination message)."""
    job = kube.read_job(namespace, name)
    if job is None:
        return "missing", None
    st = job.status
    if not (st and (st.succeeded or st.failed)):
        for cond in (st.conditions or []) if st else []:
            if cond.type == "Failed" and cond.status == "True":
                return "failed", cond.message or cond.reason
        return "running", None
    message = None
    for pod in kube.job_pods(namespace, name):
        for cs in (pod.status.container_statuses or []) if pod.status else []:
            term = cs.state.terminated if cs.state else None
            if term is not None and term.message:
                message = term.message
    return ("succeeded" if st.succeeded else "failed"), message


def due(status: dict[str, Any], spec: WorkflowLibrarySpec, generation: int | None) -> bool:
    if status.get("observedGeneration") != generation:
        return True
    failures = int(status.get("failures") or 0)
    interval = parse_duration(spec.interval)
    if failures:
        wait = min(MAX_BACKOFF, 5.0 * 2 ** (failures - 1), interval)
        attempted = parse_iso(status.get("lastAttemptTime")) or 0.0
        return bool(time.time() - attempted >= wait)
    last = parse_iso(status.get("lastSyncTime")) or 0.0
    return time.time() - last >= interval


def reconcile(kube: Kube, cfg: OperatorConfig, body: dict[str, Any]) -> dict[str, Any]:
    meta = body["metadata"]
    generation = meta.get("generation")
    status = dict(body.get("status") or {})
    spec = WorkflowLibrarySpec.model_validate(body.get("spec") or {})
    workspace = kube.get_custom("workspaces", meta["namespace"], spec.workspace_ref)
    if workspace is None or not (workspace.get("status") or {}).get("credentialsSecret"):
        why = ("WorkspaceNotFound", f"Workspace {spec.workspace_ref!r} not found") \
            if workspace is None else ("WorkspaceNotReady", "the workspace is not ready yet")
        status["conditions"] = _conditions(status, generation, ready=False, reconciling=False,
                                           stalled=False, reason=why[0], message=why[1])
        return status
    p = params_of(body, workspace, cfg)

    running = status.get("jobName")
    if running:
        outcome, message = _job_outcome(kube, p.namespace, running)
        if outcome == "running":
            return status
        status["jobName"] = None
        result = parse_result(message) if outcome == "succeeded" else None
        if result is not None:
            status.update(
                artifact={"revision": str(result.get("revision", "")),
                          "digest": str(result.get("digest", "")),
                          "count": int(result.get("count", 0) or 0)},
                added=int(result.get("added", 0)), updated=int(result.get("updated", 0)),
                removed=int(result.get("removed", 0)), lastSyncTime=now_iso(), failures=0,
                observedGeneration=generation,
            )
            status["conditions"] = _conditions(
                status, generation, ready=True, reconciling=False, stalled=False,
                reason="Succeeded",
                message=f"published {status['artifact']['count']} workflow(s) at revision "
                        f"{status['artifact']['revision'][:12]}")
            kube.delete_job(p.namespace, running)
            return status
        failures = int(status.get("failures") or 0) + 1
        reason = failure_reason(message) if outcome != "missing" else "the sync Job disappeared"
        status.update(failures=failures, observedGeneration=generation)
        status["conditions"] = _conditions(
            status, generation, ready=False if not status.get("artifact") else None,
            reconciling=False, stalled=True, reason="SyncFailed",
            message=f"{reason} (attempt {failures}; retrying with backoff)")
        kube.delete_job(p.namespace, running)
        return status

    if spec.suspend:
        status["conditions"] = set_condition(status.get("conditions"), "Reconciling", False,
                                             "Suspended", "spec.suspend is true", generation)
        status["observedGeneration"] = generation
        return status
    if not due(status, spec, generation):
        return status

    attempt = int(status.get("attempts") or 0) + 1
    name = job_name(p.name, attempt, spec)
    keys: frozenset[str] = frozenset()
    if spec.source.secret_ref is not None:
        data = kube.secret_data(p.namespace, spec.source.secret_ref.name)
        if data is None:
            status["conditions"] = _conditions(
                status, generation, ready=False, reconciling=False, stalled=True,
                reason="SecretNotFound",
                message=f"Secret {spec.source.secret_ref.name!r} (source.secretRef) not found")
            status["observedGeneration"] = generation
            return status
        keys = frozenset(data)
    try:
        kube.ensure(sync_job(p, name, secret_keys=keys))
    except ApiException as exc:
        raise Retry(f"cannot create sync Job {name}: {exc.reason}", 10) from None
    status.update(jobName=name, attempts=attempt, lastAttemptTime=now_iso())
    status["conditions"] = _conditions(
        status, generation, ready=status.get("artifact") is not None or None,
        reconciling=True, stalled=False, reason="Syncing",
        message=f"Job {name} is fetching {spec.source.url}")
    return status


def delete(kube: Kube, cfg: OperatorConfig, body: dict[str, Any]) -> str:
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
    return asyncio.run(_prune(url, ws_spec.prefix,
                              ws_spec.workspace_id or workspace["metadata"]["name"],
                              meta["name"]))


async def _prune(url: str, prefix: str, workspace_id: str, library: str) -> str:
    """Unpublish in one watched transaction, so an agent's concurrent save survives."""
    storage = RedisStorage(url, prefix=prefix, workspace_id=workspace_id)
    try:
        result = await unpublish_library(storage, library)
    finally:
        await storage.close()
    return f"pruned {result.removed} workflow(s)"
