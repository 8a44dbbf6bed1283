"""WorkflowLibrary: a git source of workflows published into a Workspace (GitOps)."""

from __future__ import annotations

from pydantic import ConfigDict, Field

from codemode_operator.api.common import (
    NAME_PATTERN,
    Condition,
    Duration,
    Model,
    SecretRef,
)
from codemode_operator.vocabulary import condition_types


class GitRef(Model):
    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "(has(self.branch) ? 1 : 0) + (has(self.tag) ? 1 : 0) + "
                    "(has(self.commit) ? 1 : 0) == 1",
                    "message": "ref must name exactly one of branch, tag or commit",
                }
            ]
        }
    )

    branch: str | None = Field(
        default=None,
        max_length=255,
        pattern=r"^[^\s~^:?*\[\\]+$",
        description="Branch to follow, e.g. main.",
    )
    tag: str | None = Field(
        default=None,
        max_length=255,
        pattern=r"^[^\s~^:?*\[\\]+$",
        description="Tag to pin, e.g. v1.2.0.",
    )
    commit: str | None = Field(
        default=None,
        pattern=r"^[0-9a-f]{7,40}$",
        description="Commit SHA (7-40 hex digits) to pin.",
    )


class GitSource(Model):
    url: str = Field(
        pattern=r"^(https?|file)://[^\s]+$",
        max_length=2048,
        description="Repository URL (https://, http:// or file://).",
    )
    ref: GitRef = Field(
        default_factory=lambda: GitRef(branch="main"),
        description="What to check out; defaults to branch main.",
    )
    path: str = Field(
        default=".",
        max_length=1024,
        pattern=r"^[^\s]*$",
        json_schema_extra={
            "x-kubernetes-validations": [
                {"rule": "!self.contains('..')", "message": "path must not contain '..'"}
            ]
        },
        description="Folder of *.py workflows inside the repository.",
    )
    secret_ref: SecretRef | None = Field(
        default=None,
        alias="secretRef",
        description="Secret with `token`, or `username` and `password`, for http(s) git.",
    )


class WorkflowLibrarySpec(Model):
    workspace_ref: str = Field(
        alias="workspaceRef",
        max_length=253,
        pattern=NAME_PATTERN,
        json_schema_extra={
            "x-kubernetes-validations": [
                {"rule": "self == oldSelf", "message": "workspaceRef is immutable"}
            ]
        },
        description="Workspace (same namespace) the workflows are published into. Immutable.",
    )
    source: GitSource = Field(description="Where the workflows come from.")
    interval: str = Duration("How often to re-sync from git.", "5m")
    timeout: str = Duration("Deadline of one sync Job.", "5m")
    suspend: bool = Field(default=False, description="Stop syncing (what is published stays).")
    prune: bool = Field(
        default=True,
        description="Remove workflows this library published that left git, and all of them "
        "when the library is deleted. Agent-created workflows are never touched.",
    )


class SyncedArtifact(Model):
    revision: str = Field(description="Commit SHA that was published.")
    digest: str = Field(description="sha256 of the published workflow set.")
    count: int = Field(description="Workflows the library publishes.")


class WorkflowLibraryStatus(Model):
    model_config = ConfigDict(extra="allow")

    observed_generation: int | None = Field(
        default=None, alias="observedGeneration", description="Last generation reconciled."
    )
    artifact: SyncedArtifact | None = Field(
        default=None, description="What the last good sync published."
    )
    last_sync_time: str | None = Field(
        default=None, alias="lastSyncTime", description="When the last good sync finished."
    )
    last_attempt_time: str | None = Field(
        default=None, alias="lastAttemptTime", description="When the last sync Job started."
    )
    added: int | None = Field(default=None, description="Workflows added by the last sync.")
    updated: int | None = Field(default=None, description="Workflows changed by the last sync.")
    removed: int | None = Field(default=None, description="Workflows pruned by the last sync.")
    failures: int | None = Field(
        default=None, description="Consecutive failed syncs (drives the backoff)."
    )
    job_name: str | None = Field(
        default=None, alias="jobName", description="The sync Job in flight, if any."
    )
    attempts: int | None = Field(
        default=None, description="Sync Jobs started so far (names the next one)."
    )
    conditions: list[Condition] = Field(
        default_factory=list, description=condition_types("WorkflowLibrary") + "."
    )
