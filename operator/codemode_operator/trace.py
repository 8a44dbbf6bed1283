"""Wall-clock marks along one session's start, logged as one line once it is Ready.

The warm path has a latency budget of 100 ms; where it goes is measured, not guessed:
each step marks the time it finished (`mark`), and when the session's Ready status is
written `flush` logs every mark as milliseconds after the first (the watch event that
brought the CodeSession) plus the absolute start, so a client on the same host can put
its own timestamps beside them (bench/session_start.py does). A few dict operations
per step; marks of sessions that never become Ready are dropped past `LIMIT`.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import OrderedDict

log = logging.getLogger("codemode.operator.trace")
LIMIT = 2000  # sessions with marks held at once
_marks: OrderedDict[tuple[str, str], list[tuple[str, float]]] = OrderedDict()
_lock = threading.Lock()


def begin(namespace: str, name: str) -> None:
    """The CodeSession's watch event arrived: the first mark (a later one restarts)."""
    with _lock:
        _marks[(namespace, name)] = [("seen", time.time())]
        while len(_marks) > LIMIT:
            _marks.popitem(last=False)


def mark(namespace: str, name: str, step: str) -> None:
    with _lock:
        steps = _marks.get((namespace, name))
        if steps is not None:
            steps.append((step, time.time()))


def flush(namespace: str, name: str, step: str) -> dict[str, float] | None:
    """Mark `step`, log the session's marks and forget them; None when it had none."""
    now = time.time()
    with _lock:
        steps = _marks.pop((namespace, name), None)
    if not steps:
        return None
    steps.append((step, now))
    start = steps[0][1]
    out = {"start": round(start, 4), **{s: round((t - start) * 1000, 1) for s, t in steps[1:]}}
    log.info("session start %s/%s %s", namespace, name, json.dumps(out))
    return out


def forget(namespace: str, name: str) -> None:
    with _lock:
        _marks.pop((namespace, name), None)
