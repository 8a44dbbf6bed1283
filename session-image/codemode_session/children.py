"""Child processes of a server that may be PID 1 of its container.

As PID 1 the server inherits every orphan of agent code (a double fork, a
daemon), and a zombie still counts against the uid's process limit, so orphans
are reaped here. Children the server waits for itself (workers, pip) are
registered first, so the reaper never takes their exit status from them.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

_managed: set[int] = set()


def manage(pid: int) -> None:
    _managed.add(pid)


def release(pid: int) -> None:
    _managed.discard(pid)


def managed() -> frozenset[int]:
    return frozenset(_managed)


def _state_and_parent(pid: str) -> tuple[str, int] | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rfind(")") + 2 :].split()
    return (fields[0], int(fields[1])) if len(fields) > 1 else None


def reap_orphans() -> int:
    """waitpid every zombie child we did not start ourselves; returns how many."""
    me = os.getpid()
    reaped = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) in _managed:
            continue
        found = _state_and_parent(entry)
        if found is None or found[0] != "Z" or found[1] != me:
            continue
        with contextlib.suppress(ChildProcessError, OSError):
            if os.waitpid(int(entry), os.WNOHANG)[0]:
                reaped += 1
    return reaped
