"""Kubernetes-style status conditions (typed) and timestamps."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from enum import Enum
from typing import Any

from codemode_operator.api.common import Condition
from codemode_operator.vocabulary import ConditionType, Reason


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_iso(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return dt.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def iso(epoch: float) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _text(status: bool | None) -> Any:
    return "Unknown" if status is None else ("True" if status else "False")


def set_condition(
    conditions: Iterable[Condition],
    type_: ConditionType,
    status: bool | None,
    reason: str,
    message: str = "",
    generation: int | None = None,
) -> list[Condition]:
    """Upsert one condition; lastTransitionTime moves only when the status changes."""
    text = _text(status)
    out = [c.model_copy() for c in conditions]
    for i, cond in enumerate(out):
        if cond.type == type_:
            moved = now_iso() if cond.status != text else cond.last_transition_time
            out[i] = cond.model_copy(
                update={
                    "status": text,
                    "reason": str(reason),
                    "message": message[:1000],
                    "last_transition_time": moved,
                    "observed_generation": cond.observed_generation
                    if generation is None
                    else generation,
                }
            )
            return out
    out.append(
        Condition(
            type=str(type_),
            status=text,
            reason=str(reason),
            message=message[:1000],
            lastTransitionTime=now_iso(),
            observedGeneration=generation,
        )
    )
    return out


def condition(conditions: Iterable[Condition], type_: ConditionType) -> Condition | None:
    return next((c for c in conditions if c.type == type_), None)


def is_true(conditions: Iterable[Condition], type_: ConditionType) -> bool:
    cond = condition(conditions, type_)
    return bool(cond and cond.status == "True")


def raw_is_true(status: Mapping[str, Any] | None, type_: ConditionType) -> bool:
    """is_true() on a status as the API returns it (listing many objects needs no models)."""
    return any(
        c.get("type") == type_ and c.get("status") == "True"
        for c in (status or {}).get("conditions") or []
    )


class Progress(Enum):
    """What kstatus makes of an object: done, still working, or stuck."""

    CURRENT = "Current"
    RECONCILING = "Reconciling"
    STALLED = "Stalled"


def set_kstatus(
    conditions: Iterable[Condition],
    generation: int | None,
    *,
    ready: bool | None,
    reason: str,
    message: str,
    progress: Progress,
) -> list[Condition]:
    """Ready, Reconciling and Stalled together, so they never disagree.

    Reconciling, when True, says Progressing with the message; Stalled, when True, has
    Ready's reason and message. At most one of the two is True.
    """
    reconciling = progress is Progress.RECONCILING
    stalled = progress is Progress.STALLED
    out = set_condition(conditions, ConditionType.READY, ready, reason, message, generation)
    out = set_condition(
        out,
        ConditionType.RECONCILING,
        reconciling,
        Reason.PROGRESSING if reconciling else reason,
        message if reconciling else "",
        generation,
    )
    return set_condition(
        out,
        ConditionType.STALLED,
        stalled,
        reason if stalled else Reason.NOT_STALLED,
        message if stalled else "",
        generation,
    )
