"""`codemode mcp`: the MCP server on stdio, for an agent to spawn.

Its arguments are checked before anything starts, so a bad one exits 2 with one line
(the agent's MCP client shows it) instead of a server that fails every call. The
session server itself is reached on the first call: a session that comes up later is
fine.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from codemode_session.errors import ValidationError

if TYPE_CHECKING:  # imported when run: `codemode --help` stays quick
    from codemode_session.mcp.backends import Backend, KubeBackend


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "mcp",
        help="MCP server (stdio) with py-code-mode's tools and session tools",
        description="An MCP server on stdin/stdout for a session server (--url, or "
        "CODEMODE_URL with CODEMODE_TOKEN) or a CodeSession (--codesession).",
    )
    parser.add_argument("--url", help="a session server's URL (default: $CODEMODE_URL)")
    parser.add_argument(
        "--token-file", help="file holding its bearer token (default: $CODEMODE_TOKEN)"
    )
    parser.add_argument("--codesession", metavar="NAME", help="a CodeSession on Kubernetes")
    parser.add_argument("-n", "--namespace", help="the CodeSession's namespace")
    parser.add_argument(
        "-w", "--workspace", help="workspace of new sessions (and of a missing --codesession)"
    )
    parser.add_argument("--agent", help="the agent new sessions belong to (history is by agent)")
    parser.add_argument(
        "--wait", type=float, default=120.0, help="seconds to wait for a CodeSession to be Ready"
    )
    parser.add_argument(
        "--no-session-argument",
        dest="session_argument",
        action="store_false",
        help="confine the server to its own session: a tool call naming another in "
        "`session` is an error",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    backend = make_backend(args)
    from codemode_session.mcp.server import build

    try:
        build(backend).run("stdio")
    finally:
        backend.close()
    return 0


def make_backend(args: argparse.Namespace) -> Backend:
    backend = _backend(args)
    backend.allow_session_argument = getattr(args, "session_argument", True)
    return backend


def _backend(args: argparse.Namespace) -> Backend:
    if args.codesession:
        if args.url or args.token_file:
            raise ValidationError(
                "--codesession reaches the session through Kubernetes (with its own token): "
                "leave out --url and --token-file"
            )
        return _kube_backend(args)
    url = args.url or os.environ.get("CODEMODE_URL")
    if not url:
        raise ValidationError(
            "name a session server: --url URL (or CODEMODE_URL), or a CodeSession: "
            "--codesession NAME"
        )
    if args.namespace:
        raise ValidationError("--namespace is for --codesession; a --url server has none")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValidationError(f"--url must be an http:// or https:// URL, not {url!r}")
    token = _token(args.token_file)
    from codemode_session.mcp.backends import ServerBackend

    return ServerBackend(url, token, args.workspace, args.agent)


def _token(path: str | None) -> str | None:
    """The token from a file (never the command line, where `ps` shows it) or env."""
    if path is None:
        return os.environ.get("CODEMODE_TOKEN") or None
    try:
        token = Path(path).read_text().strip()
    except OSError as exc:
        raise ValidationError(f"cannot read --token-file {path}: {exc.strerror}") from None
    if not token:
        raise ValidationError(f"--token-file {path} is empty")
    return token


def _kube_backend(args: argparse.Namespace) -> KubeBackend:
    from codemode_session.cli.main import operator_extra_installed

    if not operator_extra_installed():
        raise ValidationError(
            "--codesession needs the operator extra (the Kubernetes client): "
            "pip install 'codemode[operator]'"
        )
    if args.wait <= 0:
        raise ValidationError(f"--wait must be more than 0 seconds, not {args.wait:g}")
    from codemode_operator.exec_cmd import _kubernetes_errors, _namespace
    from codemode_operator.sessions import Sessions

    from codemode_session.mcp.backends import KubeBackend

    with _kubernetes_errors():
        sessions = Sessions(namespace=_namespace(args.namespace))
    return KubeBackend(sessions, args.codesession, args.workspace, args.agent, args.wait)
