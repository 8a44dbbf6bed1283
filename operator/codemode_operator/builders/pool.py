"""A Workspace's warm pool: pre-started session pods, and what binds one to a CodeSession.

A pool pod is the pod `session.session_pod` builds for a CodeSession of the workspace's
defaults, named and owned as the pool's, with SESSION_POOL set: its server runs nothing
until it is bound (POST /bind with the binding below). Its binding is also written into
its annotations, which the pod sees as files (SESSION_BINDING_DIR, the downward API): a
restarted container of a bound pod starts bound, never unbound.

Labels: `codemode.dev/warm` is the workspace's name while the pod is in the pool and
the session's once bound (with `codemode.dev/session` then, which no pool pod has), so
one list finds both the pool and a pod a session already claimed; `pool-hash` is the
hash of the settings the pod was built from (a pod of older defaults is replaced).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any

from codemode_operator import PREFIX
from codemode_operator.builders.common import env, labels, owner_reference
from codemode_operator.builders.session import SessionParams, session_pod, token_secret

WARM_LABEL = f"{PREFIX}/warm"
HASH_LABEL = f"{PREFIX}/pool-hash"
SESSION_LABEL = f"{PREFIX}/session"
BINDING_DIR = "/etc/codemode/binding"
# A binding's fields, each an annotation the server reads as a file of that name
# (server/config.py BINDING_FILES)
BINDING_FIELDS = ("state-id", "agent-id", "fork-from")
# What only a binding gives a pod: the rest of SessionParams must be equal for a pool
# pod to serve a CodeSession.
PER_SESSION = frozenset({"name", "uid", "agent_id", "state_id", "fork_from"})


def settings_hash(p: SessionParams) -> str:
    """The hash of what a session pod is built from, less what a binding gives it."""
    fields = {k: v for k, v in dataclasses.asdict(p).items() if k not in PER_SESSION}
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]


def pool_selector(workspace: str) -> str:
    """The pool's own pods (unbound)."""
    return f"{WARM_LABEL}={workspace},!{SESSION_LABEL}"


def take_selector(workspace: str, session: str) -> str:
    """The pool's pods and any pod session `session` has already claimed from it."""
    return f"{WARM_LABEL} in ({workspace},{session})"


def _workspace_owner(p: SessionParams, workspace_uid: str) -> list[dict[str, Any]]:
    return [owner_reference("Workspace", p.workspace, workspace_uid)]


def _pool_labels(p: SessionParams) -> dict[str, str]:
    # A session pod's component: the workspace's NetworkPolicy for session pods holds for
    # a pool pod from its start, not from the moment a session takes it.
    return labels("session", p.workspace, warm=p.workspace, **{"pool-hash": settings_hash(p)})


def pool_token_secret(p: SessionParams, token: str, workspace_uid: str) -> dict[str, Any]:
    """The pod's token; owned by the Workspace until its pod exists, then by the pod
    (`secret_owned_by`): it lives as long as the pod, bound or not."""
    secret = token_secret(p, token)
    secret["metadata"]["labels"] = _pool_labels(p)
    secret["metadata"]["ownerReferences"] = _workspace_owner(p, workspace_uid)
    del secret["stringData"]["endpoint"]
    return secret


def secret_owned_by(pod: dict[str, Any]) -> dict[str, Any]:
    """A merge patch making a pool pod's token Secret the pod's (garbage with it)."""
    meta = pod["metadata"]
    return {
        "metadata": {
            "ownerReferences": [
                {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "name": meta["name"],
                    "uid": meta["uid"],
                    "controller": True,
                    "blockOwnerDeletion": False,
                }
            ]
        }
    }


def pool_pod(p: SessionParams, workspace_uid: str) -> dict[str, Any]:
    """A pool pod: `p` holds the workspace's defaults and the member's name as its name."""
    pod = session_pod(p)
    meta = pod["metadata"]
    meta["labels"] = _pool_labels(p)
    meta["annotations"] = {}
    meta["ownerReferences"] = _workspace_owner(p, workspace_uid)
    spec = pod["spec"]
    container = spec["containers"][0]
    container["env"] += [env("SESSION_POOL", "true"), env("SESSION_BINDING_DIR", BINDING_DIR)]
    container["volumeMounts"].append(
        {"name": "binding", "mountPath": BINDING_DIR, "readOnly": True}
    )
    spec["volumes"].append(
        {
            "name": "binding",
            "downwardAPI": {
                "items": [
                    {
                        "path": field,
                        "fieldRef": {"fieldPath": f"metadata.annotations['{PREFIX}/{field}']"},
                    }
                    for field in BINDING_FIELDS
                ]
            },
        }
    )
    return pod


def bind_body(p: SessionParams) -> dict[str, Any]:
    """POST /bind's body for session `p`."""
    return {"state_id": p.state_id, "agent_id": p.agent_id, "fork_from": p.fork_from}


def claim_patch(pod: dict[str, Any], p: SessionParams) -> dict[str, Any]:
    """The merge patch that makes pool pod `pod` session `p`'s: on the version read (so
    two sessions never take one pod), labelled as its pod (its Service selects it),
    owned by it, with its binding in the annotations."""
    binding = bind_body(p)
    annotations = {f"{PREFIX}/{f}": binding[f.replace("-", "_")] or "" for f in BINDING_FIELDS}
    return {
        "metadata": {
            "resourceVersion": pod["metadata"]["resourceVersion"],
            "labels": {**p.labels(), WARM_LABEL: p.name},
            "annotations": {SESSION_LABEL: p.name, **annotations},
            "ownerReferences": p.owner(),
        }
    }


def pod_token_secret(pod: dict[str, Any]) -> str | None:
    """The Secret a pod's CONTAINER_AUTH_TOKEN comes from."""
    for container in (pod.get("spec") or {}).get("containers") or []:
        for var in container.get("env") or []:
            if var.get("name") == "CONTAINER_AUTH_TOKEN":
                ref = (var.get("valueFrom") or {}).get("secretKeyRef") or {}
                name = ref.get("name")
                return str(name) if name else None
    return None
