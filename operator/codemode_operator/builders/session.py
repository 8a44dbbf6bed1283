"""A CodeSession's children: token Secret, Pod, Service and its EndpointSlice."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from codemode_operator import PREFIX
from codemode_operator.api.common import parse_bytes
from codemode_operator.api.workspace import WorkspaceLimits
from codemode_operator.builders.common import (
    container_security_context,
    env,
    labels,
    owner_reference,
    pod_security_context,
    secret_env,
)

Obj = dict[str, Any]
PORT = 8080
TOOLS_DIR = "/etc/codemode/tools"
DEFAULT_RESOURCES = {
    "requests": {"cpu": "100m", "memory": "256Mi"},
    "limits": {"cpu": "1", "memory": "1Gi"},
}


# Each session pod runs as a uid (and gid) of its own: RLIMIT_NPROC counts processes per uid
# across the whole node, so with one shared uid a fork bomb in one pod made fork fail in
# every other. The range leaves out system and login uids (below 100000); 2^31-1 is the
# largest uid Kubernetes accepts, kept out as some tools treat it as "nobody"-like.
SESSION_UID_MIN = 100_000
SESSION_UID_MAX = 2**31 - 2
_DEFAULT_LIMITS = WorkspaceLimits()


def session_uid(codesession_uid: str) -> int:
    """The pod uid of a CodeSession: a hash of its metadata.uid into the range above, so a
    re-created pod of the same CodeSession gets the same one and no state is needed."""
    digest = hashlib.sha256(codesession_uid.encode()).digest()
    span = SESSION_UID_MAX - SESSION_UID_MIN + 1
    return SESSION_UID_MIN + int.from_bytes(digest[:8], "big") % span


def session_endpoint(session: str, namespace: str) -> str:
    """In-cluster URL of a session's server (its Service)."""
    return f"http://{session}-session.{namespace}.svc:{PORT}"


@dataclass(frozen=True)
class SessionParams:
    """Everything a session pod needs, resolved from the CodeSession and its Workspace."""

    name: str
    namespace: str
    uid: str
    workspace: str
    workspace_id: str
    prefix: str
    credentials_secret: str
    image: str
    image_pull_policy: str = "IfNotPresent"
    resources: dict[str, Any] = field(default_factory=dict)
    runtime_class_name: str | None = None
    default_timeout: float = 30.0
    max_execution_time: float = 300.0
    allow_runtime_deps: bool = False
    memory_limit_mb: int = 1024
    tools_config_map: str | None = None
    max_storage_bytes: int = parse_bytes(_DEFAULT_LIMITS.max_storage_bytes)
    max_artifact_bytes: int = parse_bytes(_DEFAULT_LIMITS.max_artifact_bytes)
    max_workflows: int = _DEFAULT_LIMITS.max_workflows
    agent_id: str | None = None
    state_id: str | None = None  # SESSION_STATE_ID: where its snapshots and history go
    fork_from: str | None = None  # SESSION_FORK_FROM: the state it starts from

    @property
    def token_secret(self) -> str:
        return f"{self.name}-token"

    @property
    def pod_name(self) -> str:
        return f"{self.name}-session"

    @property
    def service_name(self) -> str:
        return f"{self.name}-session"

    @property
    def endpoint(self) -> str:
        return session_endpoint(self.name, self.namespace)

    def labels(self) -> dict[str, str]:
        return labels("session", self.workspace, session=self.name)

    def owner(self) -> list[dict[str, Any]]:
        return [owner_reference("CodeSession", self.name, self.uid)]


def token_secret(p: SessionParams, token: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": p.token_secret,
            "namespace": p.namespace,
            "labels": p.labels(),
            "ownerReferences": p.owner(),
        },
        "type": "Opaque",
        "stringData": {"token": token, "endpoint": p.endpoint},
    }


def _seconds(value: float) -> str:
    return f"{value:g}"


def session_pod(p: SessionParams) -> dict[str, Any]:
    env_vars = [
        secret_env("REDIS_URL", p.credentials_secret, "url"),
        secret_env("CONTAINER_AUTH_TOKEN", p.token_secret, "token"),
        env("STORAGE_PREFIX", p.prefix),
        env("WORKSPACE_ID", p.workspace_id),
        env("DEFAULT_TIMEOUT", _seconds(p.default_timeout)),
        env("MAX_EXECUTION_TIME", _seconds(p.max_execution_time)),
        env("ALLOW_RUNTIME_DEPS", "true" if p.allow_runtime_deps else "false"),
        env("WORKER_MEMORY_MB", str(p.memory_limit_mb)),
        # Sessions of one server share its uid, which the restricted pod settings cannot
        # separate: one CodeSession = one pod = one server session.
        env("MAX_SESSIONS", "1"),
        env("STORAGE_MAX_BYTES", str(p.max_storage_bytes)),
        env("STORAGE_MAX_ARTIFACT_BYTES", str(p.max_artifact_bytes)),
        env("STORAGE_MAX_WORKFLOWS", str(p.max_workflows)),
        env("DEPS_DIR", "/tmp/deps"),
        env("HOME", "/tmp"),
    ]
    for name, value in (
        ("SESSION_STATE_ID", p.state_id),
        ("SESSION_FORK_FROM", p.fork_from),
        ("AGENT_ID", p.agent_id),
    ):
        if value:
            env_vars.append(env(name, value))
    mounts: list[dict[str, Any]] = [{"name": "tmp", "mountPath": "/tmp"}]
    volumes: list[dict[str, Any]] = [{"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}}]
    if p.tools_config_map:
        env_vars.append(env("TOOLS_PATH", TOOLS_DIR))
        mounts.append({"name": "tools", "mountPath": TOOLS_DIR, "readOnly": True})
        volumes.append({"name": "tools", "configMap": {"name": p.tools_config_map}})
    probe = {
        "httpGet": {"path": "/ready", "port": "http"},
        "periodSeconds": 1,
        "timeoutSeconds": 2,
        "failureThreshold": 3,
    }
    spec: dict[str, Any] = {
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "restartPolicy": "Always",
        "terminationGracePeriodSeconds": 5,
        "securityContext": pod_security_context(session_uid(p.uid)),
        "containers": [
            {
                "name": "session",
                "image": p.image,
                "imagePullPolicy": p.image_pull_policy,
                "args": ["serve"],
                "ports": [{"name": "http", "containerPort": PORT, "protocol": "TCP"}],
                "env": env_vars,
                "resources": p.resources or DEFAULT_RESOURCES,
                "securityContext": container_security_context(),
                "readinessProbe": probe,
                "livenessProbe": {
                    "httpGet": {"path": "/health", "port": "http"},
                    "periodSeconds": 10,
                    "failureThreshold": 6,
                },
                "volumeMounts": mounts,
            }
        ],
        "volumes": volumes,
    }
    if p.runtime_class_name:
        spec["runtimeClassName"] = p.runtime_class_name
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": p.pod_name,
            "namespace": p.namespace,
            "labels": p.labels(),
            "annotations": {f"{PREFIX}/session": p.name},
            "ownerReferences": p.owner(),
        },
        "spec": spec,
    }


def session_service(p: SessionParams) -> dict[str, Any]:
    """The session's stable address. It has no selector: its one endpoint is written by the
    operator (`endpoint_slice`) as the session becomes Ready, so the address answers by
    then, and Kubernetes' endpoint controllers write nothing per session (they wrote
    Endpoints and an EndpointSlice, each created and then updated: four requests)."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": p.service_name,
            "namespace": p.namespace,
            "labels": p.labels(),
            "ownerReferences": p.owner(),
        },
        "spec": {
            "type": "ClusterIP",
            "ports": [{"name": "http", "port": PORT, "targetPort": PORT, "protocol": "TCP"}],
        },
    }


ENDPOINTS_MANAGER = "codemode-operator"


def endpoint_slice(session: Obj, pod: Obj | None, ready: bool) -> dict[str, Any]:
    """The EndpointSlice of a session's Service (named as it): `pod`'s address, ready or
    not; no endpoint while the pod has no address. Owned by the CodeSession."""
    meta = session["metadata"]
    name = meta["name"]
    workspace = (session.get("spec") or {}).get("workspaceRef", "")
    pod_meta = (pod or {}).get("metadata") or {}
    ip = ((pod or {}).get("status") or {}).get("podIP")
    endpoints = []
    if ip:
        endpoints.append(
            {
                "addresses": [ip],
                "conditions": {"ready": ready},
                "targetRef": {
                    "kind": "Pod",
                    "namespace": meta["namespace"],
                    "name": pod_meta.get("name", ""),
                    "uid": pod_meta.get("uid", ""),
                },
            }
        )
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": f"{name}-session",
            "namespace": meta["namespace"],
            "labels": {
                **labels("session", workspace, session=name),
                "kubernetes.io/service-name": f"{name}-session",
                "endpointslice.kubernetes.io/managed-by": f"{PREFIX}-operator",
            },
            "ownerReferences": [owner_reference("CodeSession", name, meta.get("uid", ""))],
        },
        "addressType": "IPv6" if ip and ":" in ip else "IPv4",
        "endpoints": endpoints,
        "ports": [{"name": "http", "port": PORT, "protocol": "TCP"}],
    }
