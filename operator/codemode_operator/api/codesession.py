"""CodeSession: one sandboxed session pod of a Workspace."""

from __future__ import annotations

from pydantic import ConfigDict, Field

from codemode_operator.api.common import (
    NAME_PATTERN,
    Condition,
    Duration,
    Model,
    ResourceRequirements,
)
from codemode_operator.vocabulary import PHASES, Phase, condition_types

_PHASES = "; ".join(f"{p.value}: {p.doc}" for p in PHASES["CodeSession"])


class CodeSessionSpec(Model):
    workspace_ref: str = Field(
        alias="workspaceRef",
        max_length=253,
        pattern=NAME_PATTERN,
        json_schema_extra={
            "x-kubernetes-validations": [
                {"rule": "self == oldSelf", "message": "workspaceRef is immutable"}
            ]
        },
        description="Name of the Workspace (same namespace) this session belongs to. Immutable.",
    )
    image: str | None = Field(
        default=None, max_length=512, description="Overrides the workspace's session image."
    )
    resources: ResourceRequirements | None = Field(
        default=None, description="Overrides the workspace's session resources."
    )
    runtime_class_name: str | None = Field(
        default=None,
        alias="runtimeClassName",
        max_length=253,
        description="Overrides the workspace's RuntimeClass (gVisor, Kata).",
    )
    idle_timeout: str | None = Duration(
        "Overrides the workspace's idle timeout.", alias="idleTimeout"
    )
    max_lifetime: str | None = Duration(
        "Overrides the workspace's maximum lifetime.", alias="maxLifetime"
    )
    default_timeout: str | None = Duration(
        "Overrides the default time limit of one execution.", alias="defaultTimeout"
    )


class CodeSessionStatus(Model):
    model_config = ConfigDict(extra="allow")

    observed_generation: int | None = Field(
        default=None, alias="observedGeneration", description="Last generation reconciled."
    )
    phase: Phase | None = Field(
        default=None, description=f"Where the session is in its life. {_PHASES}."
    )
    reason: str | None = Field(default=None, description="Why the session is in this phase.")
    endpoint: str | None = Field(default=None, description="In-cluster URL of the session server.")
    token_secret: str | None = Field(
        default=None,
        alias="tokenSecret",
        description="Secret (key `token`) holding the bearer token of the session server.",
    )
    pod_name: str | None = Field(default=None, alias="podName", description="The session pod.")
    workspace_id: str | None = Field(
        default=None, alias="workspaceId", description="Effective workspace id of the session."
    )
    start_time: str | None = Field(
        default=None, alias="startTime", description="When the session became Ready (RFC 3339)."
    )
    last_activity_time: str | None = Field(
        default=None,
        alias="lastActivityTime",
        description="Last execution seen by the operator (RFC 3339).",
    )
    pod_resource_version: str | None = Field(
        default=None,
        alias="podResourceVersion",
        description="resourceVersion of the pod the phase was read from.",
    )
    pod_recreations: int | None = Field(
        default=None,
        alias="podRecreations",
        description="How often the operator replaced a failed or deleted pod.",
    )
    conditions: list[Condition] = Field(
        default_factory=list, description=condition_types("CodeSession") + "."
    )
