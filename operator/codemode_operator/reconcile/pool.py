"""A Workspace's warm pool: keep `spec.warmPool.size` unbound session pods, and bind one
to a CodeSession whose pod it would be.

`reconcile` is the one place that creates and deletes pool pods; the workspace's
reconcile and its pool pods' events call it, and a CodeSession that took a pod calls it
once its status is written (refill). `take` is the one place that makes a pool pod a
session's: it claims the pod on the resourceVersion it read (a second taker gets 409
and tries the next), then gives the session's Secret the pod's token, makes sure the
Service exists, and binds the server. A pod that took a binding is the session's for
good: it never goes back to the pool, and deleting its CodeSession deletes it.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import secrets
import threading
import urllib.error
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from kubernetes.client.exceptions import ApiException

from codemode_operator import PREFIX, trace
from codemode_operator.api.workspace import WarmPoolStatus, WorkspaceSpec
from codemode_operator.builders.pool import (
    HASH_LABEL,
    SESSION_LABEL,
    bind_body,
    claim_patch,
    pod_token_secret,
    pool_pod,
    pool_selector,
    pool_token_secret,
    secret_owned_by,
    settings_hash,
    take_selector,
)
from codemode_operator.builders.session import (
    PORT,
    SessionParams,
    endpoint_slice,
    session_service,
    token_secret,
)
from codemode_operator.kube import KubeAPI, Obj
from codemode_operator.reconcile.params import session_params
from codemode_operator.settings import OperatorConfig

log = logging.getLogger("codemode.operator")
BIND_TIMEOUT = 30.0  # seconds: a bind loads the session's saved state before it answers
_locks: dict[tuple[str, str], threading.Lock] = {}
_locks_guard = threading.Lock()
# (namespace, pool pod) -> the token this operator gave it: a take needs no read of its
# Secret (after a restart it reads it). Entries go when taken; at most TOKENS are kept.
TOKENS = 4096
_tokens: dict[tuple[str, str], str] = {}
# A take writes the session's Secret, Service and endpoint while the server binds: the
# four are independent, and the session is Ready only once all have landed.
_writers = ThreadPoolExecutor(8, thread_name_prefix="take")


def _lock(namespace: str, workspace: str) -> threading.Lock:
    with _locks_guard:
        return _locks.setdefault((namespace, workspace), threading.Lock())


def member_params(workspace: Obj, cfg: OperatorConfig, member: str) -> SessionParams:
    """The settings of pool member `member`: a CodeSession of the defaults named so."""
    meta = workspace["metadata"]
    body = {
        "metadata": {"name": member, "namespace": meta["namespace"], "uid": member},
        "spec": {"workspaceRef": meta["name"]},
    }
    return dataclasses.replace(session_params(body, workspace, cfg), state_id=None)


def _labels(pod: Obj) -> dict[str, str]:
    return (pod.get("metadata") or {}).get("labels") or {}


def _deleting(pod: Obj) -> bool:
    return bool((pod.get("metadata") or {}).get("deletionTimestamp"))


def _failed(pod: Obj) -> bool:
    return (pod.get("status") or {}).get("phase") in ("Failed", "Succeeded")


def is_ready(pod: Obj) -> bool:
    conditions = (pod.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def _generation(obj: Obj) -> int:
    return int((obj.get("metadata") or {}).get("generation") or 0)


def _created(pod: Obj) -> str:
    return str((pod.get("metadata") or {}).get("creationTimestamp") or "")


def _session_pods(kube: KubeAPI, namespace: str, workspace: str) -> int:
    """Live pods of the workspace's sessions (a pool pod has no session label)."""
    selector = f"app.kubernetes.io/component=session,{PREFIX}/workspace={workspace},{SESSION_LABEL}"
    return sum(1 for pod in kube.list_pods(namespace, selector) if not _deleting(pod))


def _drop(kube: KubeAPI, namespace: str, pod: Obj) -> None:
    """Delete a pool pod as this reconcile listed it: one a session claimed since (its
    labels and owner changed, so its resourceVersion did) is the session's, not ours."""
    meta = pod["metadata"]
    kube.delete_pod(namespace, meta["name"], meta.get("resourceVersion"))


def reconcile(kube: KubeAPI, cfg: OperatorConfig, workspace: Obj) -> WarmPoolStatus | None:
    """Bring the pool in line with the spec: replace pods of older defaults and failed
    ones, keep `size` (less what maxSessions leaves beside the running sessions); its
    status, or None when the workspace has no pool and none is left."""
    meta = workspace["metadata"]
    namespace, name = meta["namespace"], meta["name"]
    spec = WorkspaceSpec.model_validate(workspace.get("spec") or {})
    size = spec.warm_pool.size
    had = (workspace.get("status") or {}).get("warmPool") is not None
    if size == 0 and not had:
        return None  # no pool: not even a list
    if not (workspace.get("status") or {}).get("credentialsSecret"):
        return None  # no credentials yet: pods built now would be of other settings
    with _lock(namespace, name):
        # The spec as it is now: a caller that waited for the lock may hold an older one,
        # and would roll the pool back to it.
        current = kube.get_custom("workspaces", namespace, name)
        if current is None:
            return None
        if _generation(current) > _generation(workspace):
            workspace = {**workspace, "spec": current.get("spec") or {}}
            spec = WorkspaceSpec.model_validate(workspace["spec"])
            size = spec.warm_pool.size
        want = settings_hash(member_params(workspace, cfg, name))
        pods = [p for p in kube.list_pods(namespace, pool_selector(name)) if not _deleting(p)]
        keep = []
        for pod in pods:
            if _labels(pod).get(HASH_LABEL) != want or _failed(pod):
                _drop(kube, namespace, pod)  # rollout, or a failure
            else:
                keep.append(pod)
        desired = 0
        if size:
            room = spec.limits.max_sessions - _session_pods(kube, namespace, name)
            desired = max(0, min(size, room))
        # surplus: the ones not ready yet go first, then the youngest
        keep.sort(key=lambda p: (not is_ready(p), _created(p)))
        for pod in keep[desired:]:
            _drop(kube, namespace, pod)
        keep = keep[:desired]
        for _ in range(desired - len(keep)):
            _start_member(kube, cfg, workspace)
        if size == 0 and not keep:
            return None
        return WarmPoolStatus(desired=desired, ready=sum(1 for p in keep if is_ready(p)))


def _start_member(kube: KubeAPI, cfg: OperatorConfig, workspace: Obj) -> None:
    meta = workspace["metadata"]
    p = member_params(workspace, cfg, f"{meta['name']}-pool-{secrets.token_hex(3)}")
    token = secrets.token_urlsafe(32)
    kube.ensure(pool_token_secret(p, token, meta["uid"]))
    pod, created = kube.create_pod(pool_pod(p, meta["uid"]))
    if created and len(_tokens) < TOKENS:
        _tokens[(p.namespace, p.pod_name)] = token
    if created and pod is not None:
        kube.patch_secret(p.namespace, p.token_secret, secret_owned_by(pod))


# POST /bind to a pod's server: (ok, why not). Tests replace it.
Binder = Callable[[Obj, str, dict[str, Any]], tuple[bool, str]]


def post_bind(pod: Obj, token: str, body: dict[str, Any]) -> tuple[bool, str]:
    ip = (pod.get("status") or {}).get("podIP")
    if not ip:
        return False, "the pod has no IP"
    request = urllib.request.Request(
        f"http://{ip}:{PORT}/bind",
        data=json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=BIND_TIMEOUT):
            return True, ""
    except urllib.error.HTTPError as exc:
        return False, f"POST /bind answered {exc.code}: {exc.read()[:300].decode(errors='replace')}"
    except OSError as exc:
        return False, f"POST /bind failed: {exc}"


BIND: Binder = post_bind


def serves(workspace: Obj, cfg: OperatorConfig, p: SessionParams) -> bool:
    """Whether the workspace's pool serves session `p` (its pod would be a pool pod)."""
    spec = WorkspaceSpec.model_validate(workspace.get("spec") or {})
    if spec.warm_pool.size == 0:
        return False
    pool = member_params(workspace, cfg, workspace["metadata"]["name"])
    return settings_hash(pool) == settings_hash(p)


def take(kube: KubeAPI, cfg: OperatorConfig, workspace: Obj, p: SessionParams) -> Obj | None:
    """A Ready pool pod bound to session `p` (or the one it already claimed), or None:
    no pool serves it, none is ready, or the bind failed (that pod is deleted); the
    caller then starts a pod of its own."""
    if not serves(workspace, cfg, p):
        return None
    want = settings_hash(p)
    pods = [
        pod
        for pod in kube.list_pods(p.namespace, take_selector(p.workspace, p.name))
        if not _deleting(pod) and not _failed(pod)
    ]
    trace.mark(p.namespace, p.name, "pool_listed")
    mine = [pod for pod in pods if _labels(pod).get(SESSION_LABEL) == p.name]
    pod = mine[0] if mine else _claim(kube, p, pods, want)
    if pod is None:
        return None
    trace.mark(p.namespace, p.name, "pod_claimed")
    token = _tokens.pop((p.namespace, pod["metadata"]["name"]), None)
    if token is None:
        secret = pod_token_secret(pod)
        token = (kube.secret_data(p.namespace, secret) or {}).get("token") if secret else None
    ok, why = (False, "the pod's token Secret is gone") if not token else (True, "")
    if token:
        writes = _writers.submit(_session_children, kube, p, pod, token)
        ok, why = BIND(pod, token, bind_body(p))
        trace.mark(p.namespace, p.name, "bound")
        writes.result()  # its errors are the reconcile's, as if written here
    if not ok:
        log.warning(
            "session %s/%s: pool pod %s not bound (%s); starting one of its own",
            p.namespace,
            p.name,
            pod["metadata"]["name"],
            why,
        )
        kube.delete_pod(p.namespace, pod["metadata"]["name"])
        return None
    return pod


def _session_children(kube: KubeAPI, p: SessionParams, pod: Obj, token: str) -> None:
    """The Secret with the pod's token, the Service and its endpoint (the pod is Ready)."""
    manifest = token_secret(p, token)
    if not kube.ensure(manifest):  # one call for a new session; a resumed one has one
        kube.replace_secret(manifest)
    kube.ensure(session_service(p))
    session = {
        "metadata": {"name": p.name, "namespace": p.namespace, "uid": p.uid},
        "spec": {"workspaceRef": p.workspace},
    }
    kube.apply_endpoints(endpoint_slice(session, pod, ready=True))
    trace.mark(p.namespace, p.name, "children_written")


def _claim(kube: KubeAPI, p: SessionParams, pods: list[Obj], want: str) -> Obj | None:
    free = sorted(
        (
            pod
            for pod in pods
            if SESSION_LABEL not in _labels(pod)
            and _labels(pod).get(HASH_LABEL) == want
            and is_ready(pod)
        ),
        key=_created,
    )
    for pod in free:
        try:
            claimed = kube.patch_pod(p.namespace, pod["metadata"]["name"], claim_patch(pod, p))
        except ApiException as exc:
            if exc.status == 409:
                continue  # another session took it first
            raise
        if claimed is not None:
            return claimed
    return None
