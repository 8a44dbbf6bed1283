"""CodeSession: one sandboxed session pod of a Workspace."""

from __future__ import annotations

from typing import Literal

from pydantic import ConfigDict, Field
from pydantic.config import JsonDict

from codemode_operator.api.common import (
    NAME_PATTERN,
    Condition,
    Duration,
    Model,
    ResourceRequirements,
)
from codemode_operator.vocabulary import PHASES, Phase, condition_types

_PHASES = "; ".join(f"{p.value}: {p.doc}" for p in PHASES["CodeSession"])
# A label value (it becomes codemode.dev/agent) that is also a valid history agent id.
AGENT_PATTERN = r"^[A-Za-z0-9]([A-Za-z0-9_.-]{0,61}[A-Za-z0-9])?$"


def _immutable(what: str) -> JsonDict:
    return {"x-kubernetes-validations": [{"rule": "self == oldSelf", "message": what}]}


class ForkSource(Model):
    session: str = Field(
        max_length=253,
        pattern=NAME_PATTERN,
        description="A CodeSession of the same namespace and workspace to start from.",
    )


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
    agent_id: str | None = Field(
        default=None,
        alias="agentId",
        max_length=63,
        pattern=AGENT_PATTERN,
        json_schema_extra=_immutable("agentId is immutable"),
        description="The agent this session's history is indexed under, also the label "
        "codemode.dev/agent (list with -l codemode.dev/agent=ID). Immutable.",
    )
    suspend: bool = Field(
        default=False,
        description="true saves the session's state, deletes its pod and Service and sets "
        "phase Suspended; false brings the pod back with the state restored.",
    )
    idle_action: Literal["Delete", "Suspend"] = Field(
        default="Delete",
        alias="idleAction",
        description="What the idle timeout does: Delete ends the session (Terminated); "
        "Suspend sets spec.suspend (resume by setting it false).",
    )
    suspended_retention: str | None = Duration(
        "How long a suspended session is kept before it is deleted with its state "
        "(default: the workspace's sessionDefaults.suspendedRetention).",
        alias="suspendedRetention",
    )
    fork_from: ForkSource | None = Field(
        default=None,
        alias="forkFrom",
        json_schema_extra=_immutable("forkFrom is immutable"),
        description="Start from another session's latest state and a copy of its history; "
        "the two then diverge. Immutable.",
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
    state_id: str | None = Field(
        default=None,
        alias="stateId",
        description="The id the session's snapshots and history are kept under in its "
        "workspace (P:snapshot:ID, P:session:ID).",
    )
    forked_from: str | None = Field(
        default=None, alias="forkedFrom", description="The state id this session started from."
    )
    suspended_at: str | None = Field(
        default=None, alias="suspendedAt", description="When it was suspended (RFC 3339)."
    )
    last_snapshot_time: str | None = Field(
        default=None,
        alias="lastSnapshotTime",
        description="When the server last stored the session's state (RFC 3339).",
    )
    snapshot_bytes: int | None = Field(
        default=None, alias="snapshotBytes", description="Size of the last stored state."
    )
    unsaved_names: list[str] | None = Field(
        default=None,
        alias="unsavedNames",
        description="Globals the last snapshot could not save (not picklable).",
    )
    restored_names: list[str] | None = Field(
        default=None,
        alias="restoredNames",
        description="Globals the current pod restored from the session's state.",
    )
    lost_names: list[str] | None = Field(
        default=None,
        alias="lostNames",
        description="Globals the current pod could not restore.",
    )
    history_messages: int | None = Field(
        default=None,
        alias="historyMessages",
        description="Messages the session's history keeps (two per run, the newest).",
    )
    conditions: list[Condition] = Field(
        default_factory=list, description=condition_types("CodeSession") + "."
    )
