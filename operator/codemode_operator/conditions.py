"""Kubernetes-style status conditions and timestamps."""

from __future__ import annotations

import datetime as dt
from typing import Any


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


def set_condition(conditions: list[dict[str, Any]] | None, type_: str, status: bool | None,
                  reason: str, message: str = "", generation: int | None = None
                  ) -> list[dict[str, Any]]:
    """Upsert one condition; lastTransitionTime moves only when the status changes."""
    text = "Unknown" if status is None else ("True" if status else "False")
    out = [dict(c) for c in conditions or []]
    for cond in out:
        if cond.get("type") == type_:
            if cond.get("status") != text:
                cond["lastTransitionTime"] = now_iso()
            cond.update(status=text, reason=reason, message=message[:1000])
            if generation is not None:
                cond["observedGeneration"] = generation
            return out
    new: dict[str, Any] = {"type": type_, "status": text, "reason": reason,
                           "message": message[:1000], "lastTransitionTime": now_iso()}
    if generation is not None:
        new["observedGeneration"] = generation
    out.append(new)
    return out


def condition(conditions: list[dict[str, Any]] | None, type_: str) -> dict[str, Any] | None:
    return next((c for c in conditions or [] if c.get("type") == type_), None)


def is_true(conditions: list[dict[str, Any]] | None, type_: str) -> bool:
    cond = condition(conditions, type_)
    return bool(cond and cond.get("status") == "True")
