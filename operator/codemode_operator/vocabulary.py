"""The words of codemode's status: phases, condition types and reasons, in one place.

The operator writes them, the clients (`Sessions`, `codemode exec`) read them and the
CRD reference in README.md is generated from them, so each is spelled once, here.

Every kind follows kstatus (what Argo CD and Flux read): `status.observedGeneration`
is the generation the status was computed from; `Reconciling` is True while the
operator is still working towards the spec (or waiting to retry), `Stalled` is True
when it cannot get there without a change by someone else, and `Ready` is True when
the object is usable. At most one of Reconciling and Stalled is True.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Phase(StrEnum):
    """Where a CodeSession is in its life (`status.phase`)."""

    PENDING = "Pending"
    STARTING = "Starting"
    READY = "Ready"
    SUSPENDED = "Suspended"
    TERMINATED = "Terminated"
    FAILED = "Failed"

    @property
    def final(self) -> bool:
        """Whether the session can never become Ready again. Only Terminated is: a failed
        pod is replaced by the operator, so Failed (which it reports at most for a moment)
        is not final, and neither is Pending (waiting for a workspace or a free slot)."""
        return self in FINAL_PHASES

    @property
    def doc(self) -> str:
        return _PHASE_DOCS[self]


FINAL_PHASES = frozenset({Phase.TERMINATED})

_PHASE_DOCS = {
    Phase.PENDING: "waiting for its Workspace or for a free slot (limits.maxSessions)",
    Phase.STARTING: "its pod is being created, scheduled or started",
    Phase.READY: "its server answers at status.endpoint",
    Phase.SUSPENDED: "its state is saved and its pod deleted (spec.suspend); false resumes it",
    Phase.TERMINATED: "ended by its idle timeout or maximum lifetime; final",
    Phase.FAILED: "its pod failed; the operator replaces it (not final)",
}


def is_final(phase: str | None) -> bool:
    """Whether a `status.phase` as read from the API is final (see Phase.final)."""
    return phase in FINAL_PHASES


class ConditionType(StrEnum):
    READY = "Ready"
    RECONCILING = "Reconciling"
    STALLED = "Stalled"
    REDIS_REACHABLE = "RedisReachable"
    WORKSPACE_FOUND = "WorkspaceFound"
    ADMITTED = "Admitted"


class EventType(StrEnum):
    NORMAL = "Normal"
    WARNING = "Warning"


class Reason(StrEnum):
    """Reasons of conditions and of a CodeSession's phase."""

    # kstatus
    PROGRESSING = "Progressing"
    NOT_STALLED = "NotStalled"
    # Workspace
    PROVISIONED = "Provisioned"
    PINGED = "Pinged"
    REDIS_CONFIG_INVALID = "RedisConfigInvalid"
    REDIS_UNREACHABLE = "RedisUnreachable"
    ACL_PROVISIONING_FAILED = "AclProvisioningFailed"
    # shared by CodeSession and WorkflowLibrary
    WORKSPACE_NOT_FOUND = "WorkspaceNotFound"
    WORKSPACE_NOT_READY = "WorkspaceNotReady"
    FOUND = "Found"
    # CodeSession
    SESSION_LIMIT_REACHED = "SessionLimitReached"
    WITHIN_LIMIT = "WithinLimit"
    POD_MISSING = "PodMissing"
    POD_TERMINATING = "PodTerminating"
    POD_STARTING = "PodStarting"
    POD_READY = "PodReady"
    POD_FAILED = "PodFailed"
    POD_SUCCEEDED = "PodSucceeded"
    IDLE_TIMEOUT = "IdleTimeout"
    MAX_LIFETIME_EXCEEDED = "MaxLifetimeExceeded"
    FORK_SOURCE_NOT_FOUND = "ForkSourceNotFound"
    RETENTION_EXPIRED = "RetentionExpired"
    # container waiting reasons the kubelet reports, passed through as they are
    ERR_IMAGE_PULL = "ErrImagePull"
    ERR_IMAGE_NEVER_PULL = "ErrImageNeverPull"
    IMAGE_PULL_BACK_OFF = "ImagePullBackOff"
    CRASH_LOOP_BACK_OFF = "CrashLoopBackOff"
    CREATE_CONTAINER_CONFIG_ERROR = "CreateContainerConfigError"
    INVALID_IMAGE_NAME = "InvalidImageName"
    # WorkflowLibrary
    SYNCING = "Syncing"
    SUCCEEDED = "Succeeded"
    SYNC_FAILED = "SyncFailed"
    SECRET_NOT_FOUND = "SecretNotFound"
    SUSPENDED = "Suspended"
    # Events only
    DELETED = "Deleted"
    DELETION_BLOCKED = "DeletionBlocked"
    NOT_READY = "NotReady"


# A pod whose container waits for one of these needs someone to fix the image or the
# configuration: the session is Stalled, not Reconciling.
STALLED_POD_REASONS = frozenset(
    {
        Reason.ERR_IMAGE_PULL,
        Reason.ERR_IMAGE_NEVER_PULL,
        Reason.IMAGE_PULL_BACK_OFF,
        Reason.CRASH_LOOP_BACK_OFF,
        Reason.CREATE_CONTAINER_CONFIG_ERROR,
        Reason.INVALID_IMAGE_NAME,
    }
)


@dataclass(frozen=True)
class ConditionDoc:
    type: ConditionType
    meaning: str
    reasons: tuple[Reason, ...]


KSTATUS = (
    ConditionDoc(
        ConditionType.RECONCILING,
        "True while the operator works towards the spec or waits to retry; when "
        "False its reason is Ready's",
        (Reason.PROGRESSING, Reason.SUSPENDED),
    ),
    ConditionDoc(
        ConditionType.STALLED,
        "True when it cannot go on without a change by someone else; when True "
        "its reason is Ready's",
        (Reason.NOT_STALLED,),
    ),
)

# Per kind: its conditions, their reasons (what the operator writes) and, for
# CodeSession, its phases. The README's CRD reference is generated from this.
CONDITIONS: dict[str, tuple[ConditionDoc, ...]] = {
    "Workspace": (
        ConditionDoc(
            ConditionType.READY,
            "Redis answered and the scoped credentials exist",
            (
                Reason.PROVISIONED,
                Reason.REDIS_CONFIG_INVALID,
                Reason.REDIS_UNREACHABLE,
                Reason.ACL_PROVISIONING_FAILED,
            ),
        ),
        ConditionDoc(
            ConditionType.REDIS_REACHABLE,
            "Redis answered the last check",
            (Reason.PINGED, Reason.REDIS_CONFIG_INVALID, Reason.REDIS_UNREACHABLE),
        ),
        *KSTATUS,
    ),
    "CodeSession": (
        ConditionDoc(
            ConditionType.READY,
            "the session server answers at status.endpoint",
            (
                Reason.POD_READY,
                Reason.POD_STARTING,
                Reason.POD_MISSING,
                Reason.POD_TERMINATING,
                Reason.WORKSPACE_NOT_FOUND,
                Reason.WORKSPACE_NOT_READY,
                Reason.SESSION_LIMIT_REACHED,
                Reason.IDLE_TIMEOUT,
                Reason.MAX_LIFETIME_EXCEEDED,
                Reason.SUSPENDED,
                Reason.FORK_SOURCE_NOT_FOUND,
                *sorted(STALLED_POD_REASONS),
            ),
        ),
        ConditionDoc(
            ConditionType.WORKSPACE_FOUND,
            "the Workspace of spec.workspaceRef exists",
            (Reason.FOUND, Reason.WORKSPACE_NOT_FOUND),
        ),
        ConditionDoc(
            ConditionType.ADMITTED,
            "counted within the workspace's maxSessions",
            (Reason.WITHIN_LIMIT, Reason.SESSION_LIMIT_REACHED),
        ),
        *KSTATUS,
    ),
    "WorkflowLibrary": (
        ConditionDoc(
            ConditionType.READY,
            "a sync has published the library",
            (
                Reason.SUCCEEDED,
                Reason.SYNCING,
                Reason.SYNC_FAILED,
                Reason.SECRET_NOT_FOUND,
                Reason.WORKSPACE_NOT_FOUND,
                Reason.WORKSPACE_NOT_READY,
            ),
        ),
        *KSTATUS,
    ),
}

PHASES: dict[str, tuple[Phase, ...]] = {"CodeSession": tuple(Phase)}


def condition_types(kind: str) -> str:
    """`Ready, Reconciling, ...`: the condition types of a kind, for descriptions."""
    return ", ".join(doc.type.value for doc in CONDITIONS[kind])
