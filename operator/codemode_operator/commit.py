"""The one writer of status: commit a computed status and announce what changed.

Reconcile functions compute an `Outcome` (a typed status, from the same models that
generate the CRDs, plus what to do once it is written) and write nothing. `Committer`
writes the fields that differ from the status the outcome was computed from, and only
on that object's resourceVersion: when someone wrote in between, the API server answers
409 Conflict, the object is read again and the status computed again from it. So no
writer undoes a newer one, and a status is never a mix of two computations.

Once a status is written (or found already in place), the outcome's `after` actions
run: deleting a pod after Terminated is recorded, or a finished sync Job after its
result is, so a failed or conflicting write never loses what only the deleted object
still showed. Transitions of Ready or phase are posted as Events.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from kubernetes.client.exceptions import ApiException
from pydantic import BaseModel

from codemode_operator.api.common import Condition
from codemode_operator.api.workflowlibrary import WorkflowLibraryStatus
from codemode_operator.api.workspace import WorkspaceStatus
from codemode_operator.kube import KubeAPI, Obj
from codemode_operator.reconcile import Retry
from codemode_operator.vocabulary import ConditionType, EventType, Reason

log = logging.getLogger("codemode.operator")
S = TypeVar("S", bound=BaseModel)

CONFLICT_ATTEMPTS = 5
MAX_STEPS = 3  # outcomes with `again` in a row (admission, then the rest)


@dataclass(frozen=True)
class Outcome(Generic[S]):
    """What a reconcile decided: the status, and what to do once it is written."""

    status: S
    after: Sequence[Callable[[], None]] = ()
    # Commit this status, then reconcile again from the object as written (a decision
    # that must be on record before anything is created on its strength: admission).
    again: bool = False


@dataclass(frozen=True)
class StatusKind(Generic[S]):
    kind: str
    plural: str
    model: type[S]
    what: str  # how Event messages name one
    # (status in the object, computed status) -> what may be written
    guard: Callable[[S, S], S] | None = None
    # (old, new) -> whether a transition between them is news worth an Event; routine
    # ones (a new session starting, then Ready) are in the status and nowhere else
    news: Callable[[S, S], bool] | None = None

    def read(self, obj: Obj) -> S:
        return self.model.model_validate(obj.get("status") or {})


WORKSPACE = StatusKind("Workspace", "workspaces", WorkspaceStatus, "workspace")
LIBRARY = StatusKind("WorkflowLibrary", "workflowlibraries", WorkflowLibraryStatus, "library")
# CodeSession's guard lives with its reconcile: reconcile.session.SESSION


def wire(status: BaseModel) -> Obj:
    """A status as it is stored: camelCase, no nulls."""
    out: Obj = status.model_dump(by_alias=True, mode="json", exclude_none=True)
    return out


def changes(old: Obj, new: Obj) -> Obj:
    """The merge patch from `old` to `new`: changed fields, and null for removed ones."""
    return {
        key: new.get(key) for key in sorted(old.keys() | new.keys()) if old.get(key) != new.get(key)
    }


# (object, EventType, reason, message): posts one Event
EventSink = Callable[[Obj, str, str, str], None]


def _ready(status: BaseModel) -> Condition | None:
    conditions: list[Condition] = getattr(status, "conditions", [])
    return next((c for c in conditions if c.type == ConditionType.READY), None)


def transition(old: BaseModel, new: BaseModel, what: str) -> tuple[str, str, str] | None:
    """(event type, reason, message) when Ready or the phase changed, else None."""
    before, after = _ready(old), _ready(new)
    key_before = (before.status, before.reason) if before else (None, None)
    key_after = (after.status, after.reason) if after else (None, None)
    phase_before, phase_after = getattr(old, "phase", None), getattr(new, "phase", None)
    if key_before == key_after and phase_before == phase_after:
        return None
    message = (after.message if after else "") or f"{what} is {phase_after or key_after[0]}"
    if key_after[0] == "True":
        return EventType.NORMAL, key_after[1] or str(ConditionType.READY), message
    return EventType.WARNING, key_after[1] or str(Reason.NOT_READY), message


@dataclass
class Committed(Generic[S]):
    old: S  # the status before the first write
    new: S  # the status now in the object
    obj: Obj  # the object as last written or read
    written: bool = False
    transitions: list[tuple[str, str, str]] = field(default_factory=list)


class Committer:
    """Writes statuses for every handler; see the module's docstring."""

    def __init__(
        self,
        kube: KubeAPI,
        post: EventSink | None = None,
        attempts: int = CONFLICT_ATTEMPTS,
        written: Callable[[Obj], None] | None = None,
    ) -> None:
        self.kube = kube
        self.post = post
        self.attempts = attempts
        # told each object as written, before its `after` actions run: a copy kept from
        # the watch is then never older than what those actions cause (a pod's events)
        self.written = written

    def commit(
        self, kind: StatusKind[S], obj: Obj | None, compute: Callable[[Obj], Outcome[S]]
    ) -> Committed[S] | None:
        """Compute the status of `obj` and write it on obj's resourceVersion.

        None when the object is gone. Raises Retry when it keeps changing under us.
        """
        first: Committed[S] | None = None
        conflicts = steps = 0
        while obj is not None:
            meta = obj["metadata"]
            outcome = compute(obj)
            old = kind.read(obj)
            new = kind.guard(old, outcome.status) if kind.guard else outcome.status
            patch = changes(wire(old), wire(new))
            written: Obj = obj
            if patch:
                try:
                    after_write = self.kube.patch_status(
                        kind.plural,
                        meta["namespace"],
                        meta["name"],
                        patch,
                        resource_version=meta.get("resourceVersion"),
                    )
                except ApiException as exc:
                    if exc.status != 409:
                        raise
                    conflicts += 1
                    if conflicts >= self.attempts:
                        raise Retry(
                            f"status of {kind.kind} {meta['name']!r} keeps changing under us", 1
                        ) from None
                    obj = self.kube.get_custom(kind.plural, meta["namespace"], meta["name"])
                    continue
                if after_write is None:
                    return None
                written = after_write
                if self.written is not None:
                    self.written(written)
            if first is None:
                first = Committed(old=old, new=new, obj=written)
            first.new, first.obj = new, written
            first.written = first.written or bool(patch)
            if patch:
                self._announce(kind, obj, old, new, first)
            for action in outcome.after:
                action()
            steps += 1
            if not outcome.again or steps >= MAX_STEPS:
                return first
            obj = written
        return None

    def _announce(self, kind: StatusKind[S], obj: Obj, old: S, new: S, done: Committed[S]) -> None:
        event = transition(old, new, kind.what)
        if event is None or (kind.news is not None and not kind.news(old, new)):
            return
        done.transitions.append(event)
        if self.post is not None:
            try:
                self.post(obj, *event)
            except Exception:  # an Event is news, never a reason to fail the reconcile
                log.exception(
                    "posting an Event for %s %s failed", kind.kind, obj["metadata"].get("name")
                )


def as_obj(body: Any) -> Obj:
    """A plain dict of a kopf Body (or any mapping) for the reconcile functions."""
    return dict(body)
