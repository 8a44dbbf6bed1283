"""`codemode serve`: run the session server with uvicorn."""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import os
import signal
import sys

from codemode_session.errors import CodemodeError

PR_SET_DUMPABLE = 4


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("serve", help="run the session server (configured by environment)")
    parser.add_argument("--host", default=os.environ.get("HOST", "0.0.0.0"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8080")))
    parser.add_argument("--log-level", default=os.environ.get("LOG_LEVEL", "info"))
    parser.set_defaults(func=run)


def _not_dumpable() -> None:
    """Workers share our uid; non-dumpable hides our memory and environ from them."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)


def _reap_as_init() -> None:
    """As PID 1 in a container, fork: the child serves, the parent reaps orphans."""
    child = os.fork()
    if child == 0:
        return
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, lambda s, _f: os.kill(child, s))
    while True:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            os._exit(0)
        except InterruptedError:
            continue
        if pid == child:
            os._exit(os.waitstatus_to_exitcode(status) & 0xFF)


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from codemode_session.server.app import create_app

    try:
        app = create_app()
    except CodemodeError as exc:
        print(f"codemode serve: {exc}", file=sys.stderr)
        return 2
    if os.getpid() == 1:
        _reap_as_init()
    _not_dumpable()
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level,
                access_log=False, timeout_graceful_shutdown=10)
    return 0
