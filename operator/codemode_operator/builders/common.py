"""Labels, owner references and the hardened security settings every child shares."""

from __future__ import annotations

from typing import Any

from codemode_operator import API_VERSION, PREFIX

SESSION_UID = 10001  # sync Job pods; session pods each get one of their own (session_uid)
MANAGED_BY = {
    "app.kubernetes.io/managed-by": "codemode-operator",
    "app.kubernetes.io/part-of": "codemode",
}


def owner_reference(kind: str, name: str, uid: str) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": kind,
        "name": name,
        "uid": uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def labels(component: str, workspace: str, **extra: str) -> dict[str, str]:
    out = {**MANAGED_BY, "app.kubernetes.io/component": component, f"{PREFIX}/workspace": workspace}
    out.update({f"{PREFIX}/{k}": v for k, v in extra.items()})
    return out


def pod_security_context(uid: int = SESSION_UID) -> dict[str, Any]:
    """Non-root as `uid` (user, group and volume group), seccomp RuntimeDefault."""
    return {
        "runAsNonRoot": True,
        "runAsUser": uid,
        "runAsGroup": uid,
        "fsGroup": uid,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def container_security_context() -> dict[str, Any]:
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "privileged": False,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def secret_env(name: str, secret: str, key: str) -> dict[str, Any]:
    return {"name": name, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}


def env(name: str, value: str) -> dict[str, Any]:
    return {"name": name, "value": value}
