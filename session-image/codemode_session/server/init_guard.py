"""The server as PID 1 of its container, out of reach of the agent code it runs.

Workers share the server's uid, so any process signal would reach the server
if it were an ordinary process. As PID 1 of a PID namespace the kernel already
drops SIGKILL and SIGSTOP sent from inside the namespace, and every signal
without a handler. The handled ones (SIGTERM, SIGINT, SIGHUP, SIGQUIT) are
blocked in every thread and taken here with sigwaitinfo: one sent from inside
the container carries the sender's pid and is ignored; one from the kubelet or
the runtime (an ancestor namespace) carries pid 0 and stops the server
gracefully. PID 1 also inherits every orphan, so it reaps them.
"""

from __future__ import annotations

import signal
import sys
import threading
import time
from typing import Protocol

from codemode_session.children import reap_orphans

STOP_SIGNALS = {signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT}
REAP_INTERVAL = 2.0


class _Server(Protocol):
    should_exit: bool
    force_exit: bool

    def run(self) -> None: ...


def _from_outside(info: signal.struct_siginfo) -> bool:
    """si_pid is 0 when the sender is not in our PID namespace (kubelet, runtime)."""
    return info.si_pid == 0


def _watch_signals(server: _Server) -> None:
    stops = 0
    while True:
        info = signal.sigwaitinfo(STOP_SIGNALS)
        if not _from_outside(info):
            print(
                f"codemode serve: ignored signal {info.si_signo} from pid {info.si_pid} "
                "inside the sandbox",
                file=sys.stderr,
                flush=True,
            )
            continue
        stops += 1
        server.should_exit = True
        if stops > 1:
            server.force_exit = True


def _reap_forever() -> None:
    while True:
        time.sleep(REAP_INTERVAL)
        reap_orphans()


def guard(server: _Server) -> None:
    """Serve as PID 1: filter stop signals by sender and reap orphans."""
    # Blocked before any other thread starts, so every thread inherits the mask and
    # only sigwaitinfo ever sees these signals.
    signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    threading.Thread(target=_watch_signals, args=(server,), name="signals", daemon=True).start()
    threading.Thread(target=_reap_forever, name="reaper", daemon=True).start()
    server.run()
