"""Workspace: scoped Redis credentials, network policy, health, counts, deletion policy.

`reconcile` computes the status; it writes none (handlers commit it, see commit.py).
"""

from __future__ import annotations

from codemode_session.storage.redis_storage import redacted_url
from redis.exceptions import RedisError

from codemode_operator import redis_acl
from codemode_operator.api.workspace import WorkspaceSpec, WorkspaceStatus, WorkspaceUsage
from codemode_operator.builders.workspace import (
    WorkspaceParams,
    credentials_secret,
    network_policy,
)
from codemode_operator.commit import WORKSPACE, Outcome
from codemode_operator.conditions import Progress, set_condition, set_kstatus
from codemode_operator.kube import KubeAPI, Obj
from codemode_operator.reconcile import Retry
from codemode_operator.reconcile import pool as pool_rec
from codemode_operator.settings import OperatorConfig
from codemode_operator.vocabulary import ConditionType, Reason


class RedisConfigError(Exception):
    """The Workspace's Redis reference cannot be resolved (missing Secret or key)."""


def admin_url(kube: KubeAPI, namespace: str, spec: WorkspaceSpec) -> str:
    if spec.redis.url:
        return spec.redis.url
    ref = spec.redis.url_secret_ref
    assert ref is not None  # the CRD's CEL rule guarantees one of the two
    data = kube.secret_data(namespace, ref.name)
    if data is None:
        raise RedisConfigError(f"Secret {ref.name!r} (redis.urlSecretRef) does not exist")
    if ref.key not in data:
        raise RedisConfigError(f"Secret {ref.name!r} has no key {ref.key!r}")
    return data[ref.key]


def params_of(body: Obj, cfg: OperatorConfig) -> WorkspaceParams:
    meta = body["metadata"]
    return WorkspaceParams(
        name=meta["name"],
        namespace=meta["namespace"],
        uid=meta["uid"],
        spec=WorkspaceSpec.model_validate(body.get("spec") or {}),
        operator_namespace=cfg.namespace,
        dns=cfg.dns,
        ingress_cidrs=cfg.session_ingress_cidrs,
    )


def usage_status(usage: redis_acl.Usage) -> WorkspaceUsage:
    """The status form of what Redis holds. A counter no session server wrote yet is 0, and
    so is one that is negative or not a number (someone else's write): the status shows a
    size, and the artifact and workflow counts stay visible either way."""
    try:
        stored = max(0, int(usage.storage_bytes or 0))
    except ValueError:
        stored = 0
    return WorkspaceUsage(storageBytes=stored, artifacts=usage.artifacts, workflows=usage.workflows)


def _member_names(kube: KubeAPI, plural: str, namespace: str, workspace: str) -> list[str]:
    return [
        o["metadata"]["name"]
        for o in kube.list_custom(plural, namespace)
        if (o.get("spec") or {}).get("workspaceRef") == workspace
    ]


def reconcile(kube: KubeAPI, cfg: OperatorConfig, body: Obj) -> Outcome[WorkspaceStatus]:
    """Bring children in line with the spec and compute the status."""
    p = params_of(body, cfg)
    generation = body["metadata"].get("generation")
    status = WORKSPACE.read(body).model_copy(
        update={"workspace_id": p.workspace_id, "observed_generation": generation}
    )

    def ready(ok: bool, reason: Reason, message: str, progress: Progress) -> None:
        status.conditions = set_kstatus(
            status.conditions,
            generation,
            ready=ok,
            reason=reason,
            message=message,
            progress=progress,
        )

    try:
        url = admin_url(kube, p.namespace, p.spec)
        redis_acl.ping(url)
    except (RedisConfigError, RedisError, OSError) as exc:
        message = str(exc)
        # A missing Secret needs someone to create it; an outage may pass by itself.
        reason, progress = (
            (Reason.REDIS_CONFIG_INVALID, Progress.STALLED)
            if isinstance(exc, RedisConfigError)
            else (Reason.REDIS_UNREACHABLE, Progress.RECONCILING)
        )
        status.redis_reachable = False
        status.conditions = set_condition(
            status.conditions, ConditionType.REDIS_REACHABLE, False, reason, message, generation
        )
        ready(False, reason, message, progress)
        return Outcome(status)

    if p.spec.redis.acl:
        secret = kube.secret_data(p.namespace, p.credentials_secret) or {}
        password = secret.get("password") or redis_acl.new_password()
        username = redis_acl.acl_username(p.namespace, p.name)
        try:
            redis_acl.provision(url, username, password, p.spec.prefix, p.workspace_id)
        except RedisError as exc:
            status.redis_reachable = True
            ready(
                False,
                Reason.ACL_PROVISIONING_FAILED,
                f"ACL SETUSER or SAVE failed (needs Redis 7 and an admin user): {exc}",
                Progress.STALLED,
            )
            return Outcome(status)
        scoped = redis_acl.scoped_url(url, username, password)
        manifest = credentials_secret(p, scoped)
        manifest["stringData"]["password"] = password
        manifest["stringData"]["username"] = username
    else:
        manifest = credentials_secret(p, url)
    kube.replace_secret(manifest)
    kube.replace_network_policy(network_policy(p, url))

    status.redis_reachable = True
    status.credentials_secret = p.credentials_secret
    status.sessions = len(_member_names(kube, "codesessions", p.namespace, p.name))
    status.libraries = len(_member_names(kube, "workflowlibraries", p.namespace, p.name))
    try:
        usage = redis_acl.read_usage(url, p.spec.prefix, p.workspace_id)
    except (RedisError, OSError):
        pass  # Redis just answered: keep the last usage rather than fail the reconcile
    else:
        status.usage = usage_status(usage)
    # the pool's pods need the credentials Secret this reconcile just wrote
    provisioned = {**(body.get("status") or {}), "credentialsSecret": p.credentials_secret}
    status.warm_pool = pool_rec.reconcile(kube, cfg, {**body, "status": provisioned})
    target = redacted_url(url)
    status.conditions = set_condition(
        status.conditions,
        ConditionType.REDIS_REACHABLE,
        True,
        Reason.PINGED,
        f"{target} answered",
        generation,
    )
    ready(
        True,
        Reason.PROVISIONED,
        f"workspace {p.workspace_id!r} on {target}"
        + (
            " with a scoped ACL user"
            if p.spec.redis.acl
            else " (ACL off: sessions use the admin URL)"
        ),
        Progress.CURRENT,
    )
    return Outcome(status)


def delete(kube: KubeAPI, cfg: OperatorConfig, body: Obj) -> str:
    """Apply the deletion policy; raise Retry while something must still go first."""
    p = params_of(body, cfg)
    sessions = _member_names(kube, "codesessions", p.namespace, p.name)
    libraries = _member_names(kube, "workflowlibraries", p.namespace, p.name)
    if sessions or libraries:
        if p.spec.deletion_policy == "Refuse":
            raise Retry(
                f"deletionPolicy Refuse: {len(sessions)} CodeSession(s) and {len(libraries)} "
                f"WorkflowLibrary(ies) still use workspace {p.name!r}; delete them first",
                10,
            )
        for name in sessions:
            kube.delete_custom("codesessions", p.namespace, name)
        for name in libraries:
            kube.delete_custom("workflowlibraries", p.namespace, name)
        raise Retry(
            f"deletionPolicy Cascade: waiting for {len(sessions)} session(s) and "
            f"{len(libraries)} library(ies) to be deleted",
            3,
        )
    done = []
    try:
        url = admin_url(kube, p.namespace, p.spec)
    except RedisConfigError:
        return "Redis reference gone; nothing to clean in Redis"
    try:
        if p.spec.data_policy == "Delete":
            removed = redis_acl.delete_workspace_keys(url, p.spec.prefix, p.workspace_id)
            done.append(f"deleted {removed} Redis key(s)")
        if p.spec.redis.acl:
            redis_acl.deprovision(url, redis_acl.acl_username(p.namespace, p.name))
            done.append("removed the ACL user")
    except (RedisError, OSError) as exc:
        raise Retry(f"cannot clean up Redis at {redacted_url(url)}: {exc}", 15) from None
    return "; ".join(done) or "data retained"
