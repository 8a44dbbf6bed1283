"""Workspace: the tenant boundary (a Redis namespace and session defaults)."""

from __future__ import annotations

from typing import Literal

from pydantic import ConfigDict, Field

from codemode_operator.api.common import (
    Bytes,
    Condition,
    Duration,
    Model,
    ResourceRequirements,
    SecretKeyRef,
)
from codemode_operator.vocabulary import condition_types

IMMUTABLE = [{"rule": "self == oldSelf", "message": "is immutable"}]


class RedisTarget(Model):
    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "has(self.url) != has(self.urlSecretRef)",
                    "message": "set exactly one of redis.url or redis.urlSecretRef",
                }
            ]
        }
    )

    url: str | None = Field(
        default=None,
        pattern=r"^rediss?://[^\s]+$",
        max_length=2048,
        description="Admin URL of the Redis server (redis:// or rediss://). Prefer urlSecretRef "
        "when the URL carries a password.",
    )
    url_secret_ref: SecretKeyRef | None = Field(
        default=None, alias="urlSecretRef", description="A Secret key holding the admin Redis URL."
    )
    acl: bool = Field(
        default=True,
        description="Provision a Redis ACL user whose keys are only this workspace's; sessions "
        "and Jobs get that user, never the admin URL. Needs Redis 6.2+.",
    )


class EgressRule(Model):
    cidr: str = Field(
        description="Destination CIDR, e.g. 10.0.0.0/8 or 203.0.113.7/32.",
        pattern=r"^[0-9a-fA-F:.]+/[0-9]{1,3}$",
        max_length=64,
    )
    ports: list[int] = Field(
        default_factory=list, description="TCP ports allowed (empty: every port)."
    )


class NetworkSpec(Model):
    egress: list[EgressRule] = Field(
        default_factory=list,
        description="Destinations session pods may reach besides Redis and cluster DNS.",
    )
    ingress_from_namespaces: list[str] = Field(
        default_factory=list,
        alias="ingressFromNamespaces",
        description="Namespaces (by name) whose pods may call session servers; the workspace's "
        "own namespace and the operator's are always allowed.",
    )


class SessionDefaults(Model):
    image: str | None = Field(
        default=None,
        max_length=512,
        description="Session image; defaults to the operator's configured session image.",
    )
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = Field(
        default="IfNotPresent", alias="imagePullPolicy", description="Pull policy of the image."
    )
    resources: ResourceRequirements | None = Field(
        default=None, description="Resources of each session container."
    )
    runtime_class_name: str | None = Field(
        default=None,
        alias="runtimeClassName",
        max_length=253,
        description="RuntimeClass for session pods, e.g. gvisor or kata.",
    )
    default_timeout: str = Duration("Default time limit of one execution.", "30s", "defaultTimeout")
    max_execution_time: str = Duration(
        "Largest time limit a caller may ask for.", "5m", "maxExecutionTime"
    )
    idle_timeout: str = Duration(
        "A session with no execution for this long is ended (or suspended: idleAction).",
        "30m",
        "idleTimeout",
    )
    suspended_retention: str = Duration(
        "How long a suspended session is kept before it is deleted with its state.",
        "168h",
        "suspendedRetention",
    )
    max_lifetime: str = Duration(
        "A session is ended this long after it started.", "12h", "maxLifetime"
    )
    allow_runtime_deps: bool = Field(
        default=False,
        alias="allowRuntimeDeps",
        description="Allow code to install Python packages at run time (deps.add).",
    )
    tools_config_map: str | None = Field(
        default=None,
        alias="toolsConfigMap",
        max_length=253,
        description="A ConfigMap of tool YAML files mounted as the sessions' TOOLS_PATH.",
    )
    memory_limit_mb: int = Field(
        default=1024,
        ge=64,
        le=65536,
        alias="memoryLimitMB",
        description="Address-space limit of each worker process, in MiB.",
    )


class WorkspaceLimits(Model):
    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    # isQuantity first: a value the pattern refuses must not also fail
                    # this rule's call
                    "rule": (
                        "!isQuantity(self.maxArtifactBytes) || "
                        "!isQuantity(self.maxStorageBytes) || "
                        "quantity(self.maxArtifactBytes)"
                        ".compareTo(quantity(self.maxStorageBytes)) <= 0"
                    ),
                    "message": "limits.maxArtifactBytes must not exceed limits.maxStorageBytes",
                    "fieldPath": ".maxArtifactBytes",
                }
            ]
        }
    )

    max_sessions: int = Field(
        default=10,
        ge=0,
        le=10000,
        alias="maxSessions",
        description="Most CodeSessions that may run at once.",
    )
    max_storage_bytes: str = Bytes(
        "Most bytes the workspace may store: artifact data plus the sources of workflows "
        "agents saved (library workflows are not counted), e.g. 1Gi. A write past it is "
        "refused by the session server.",
        "1Gi",
        "maxStorageBytes",
    )
    max_artifact_bytes: str = Bytes(
        "Largest single artifact, e.g. 64Mi.", "64Mi", "maxArtifactBytes"
    )
    max_workflows: int = Field(
        default=1000,
        ge=1,
        le=1000000,
        alias="maxWorkflows",
        description="Most workflows the workspace may hold; an agent saving one more is refused.",
    )


class WarmPool(Model):
    size: int = Field(
        default=0,
        ge=0,
        le=1000,
        description="Session pods kept started and unbound, built from sessionDefaults and "
        "wired to the workspace's Redis user. A CodeSession whose pod would be the same (no "
        "image, resources, runtimeClassName or defaultTimeout of its own that differs from "
        "sessionDefaults) binds one without a restart, and the pool starts another. They "
        "count against limits.maxSessions: the pool keeps at most maxSessions minus the "
        "workspace's running session pods. Pods of older sessionDefaults are replaced.",
    )


class WorkspaceSpec(Model):
    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "has(self.workspaceId) == has(oldSelf.workspaceId) && "
                    "(!has(self.workspaceId) || self.workspaceId == oldSelf.workspaceId)",
                    "message": "workspaceId is immutable",
                }
            ]
        }
    )

    workspace_id: str | None = Field(
        default=None,
        alias="workspaceId",
        pattern=r"^[A-Za-z0-9_-]{1,128}$",
        description="Namespace of this tenant's keys inside the prefix; defaults to the "
        "Workspace's name. Immutable.",
    )
    prefix: str = Field(
        default="codemode",
        max_length=64,
        pattern=r"^[A-Za-z0-9_.-]{1,64}$",
        json_schema_extra={
            "x-kubernetes-validations": [
                {"rule": "self == oldSelf", "message": "prefix is immutable"}
            ]
        },
        description="Redis key prefix shared by workspaces of one installation. Immutable.",
    )
    redis: RedisTarget = Field(description="Where this workspace keeps its data.")
    session_defaults: SessionDefaults = Field(
        default_factory=SessionDefaults,
        alias="sessionDefaults",
        description="Settings every CodeSession of this workspace starts from.",
    )
    network: NetworkSpec = Field(
        default_factory=NetworkSpec, description="Network policy of session pods."
    )
    limits: WorkspaceLimits = Field(
        default_factory=WorkspaceLimits, description="Quotas of this workspace."
    )
    warm_pool: WarmPool = Field(
        default_factory=WarmPool,
        alias="warmPool",
        description="Pre-started session pods that new CodeSessions bind instead of starting one.",
    )
    deletion_policy: Literal["Refuse", "Cascade"] = Field(
        default="Refuse",
        alias="deletionPolicy",
        description="Refuse: deleting the Workspace waits until its CodeSessions and "
        "WorkflowLibraries are gone. Cascade: deleting it deletes them.",
    )
    data_policy: Literal["Retain", "Delete"] = Field(
        default="Retain",
        alias="dataPolicy",
        description="What happens to the workspace's Redis keys when it is deleted.",
    )


class WorkspaceUsage(Model):
    storage_bytes: int = Field(
        alias="storageBytes",
        description="Bytes counted against limits.maxStorageBytes, as the session servers "
        "account them (0 until their first counted write).",
    )
    artifacts: int = Field(description="Artifacts stored.")
    workflows: int = Field(description="Workflows stored, counted against limits.maxWorkflows.")


class WarmPoolStatus(Model):
    desired: int = Field(
        description="Pods the pool keeps: warmPool.size, less what limits.maxSessions leaves."
    )
    ready: int = Field(description="Pool pods started and ready to be bound.")


class WorkspaceStatus(Model):
    model_config = ConfigDict(extra="allow")

    observed_generation: int | None = Field(
        default=None, alias="observedGeneration", description="Last generation reconciled."
    )
    workspace_id: str | None = Field(
        default=None, alias="workspaceId", description="The effective workspace id."
    )
    redis_reachable: bool | None = Field(
        default=None, alias="redisReachable", description="Whether Redis answered the last check."
    )
    credentials_secret: str | None = Field(
        default=None,
        alias="credentialsSecret",
        description="Secret with the workspace-scoped Redis URL given to sessions and Jobs.",
    )
    sessions: int | None = Field(default=None, description="CodeSessions of this workspace.")
    libraries: int | None = Field(default=None, description="WorkflowLibraries of this workspace.")
    usage: WorkspaceUsage | None = Field(
        default=None,
        description="What the workspace stores, read from Redis on each reconcile (every 30s).",
    )
    warm_pool: WarmPoolStatus | None = Field(
        default=None, alias="warmPool", description="The warm pool's pods (spec.warmPool)."
    )
    conditions: list[Condition] = Field(
        default_factory=list, description=condition_types("Workspace") + "."
    )
