"""`codemode serve`: run the session server with uvicorn."""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import os
import sys

from codemode_session.errors import CodemodeError
from codemode_session.server import init_guard

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


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from codemode_session.server.app import create_app
    from codemode_session.server.connections import uvicorn_options

    # First, before any worker exists: our memory, environ and fds are not theirs.
    _not_dumpable()
    try:
        app = create_app()
        bounds = uvicorn_options(os.environ)
    except CodemodeError as exc:
        print(f"codemode serve: {exc}", file=sys.stderr)
        return 2
    config = uvicorn.Config(
        app,
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        access_log=False,
        timeout_graceful_shutdown=10,
        **bounds,
    )
    server = uvicorn.Server(config)
    if os.getpid() == 1:
        init_guard.guard(server)
        return 0
    server.run()
    return 0
