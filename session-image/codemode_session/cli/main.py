"""`codemode` entry point: dispatches to subcommands, turns errors into one line.

Each subcommand module exposes `register(subparsers)` and sets `func` on its
parser; a `CodemodeError` (or any expected failure) exits 2 with one readable
line instead of a traceback. So do usage errors, and anything unexpected
(CODEMODE_DEBUG=1 shows its traceback).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
from collections.abc import Sequence
from typing import NoReturn, cast

from codemode_session.errors import CodemodeError


class OneLineParser(argparse.ArgumentParser):
    """Usage errors as one line (`--help` still prints the full usage)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser(only_exec: bool = False) -> argparse.ArgumentParser:
    """Every command's parser; with `only_exec`, `exec`'s alone: the other commands'
    modules import the storage stack (about a tenth of a second), and `codemode exec`
    is meant to answer in a few."""
    parser = OneLineParser(
        prog="codemode", description="Sandboxed Python code-mode sessions for AI agents."
    )
    # Subcommand parsers are OneLineParsers too (argparse makes them of the parent's type).
    sub = cast(
        "argparse._SubParsersAction[argparse.ArgumentParser]",
        parser.add_subparsers(dest="command", required=True, metavar="COMMAND"),
    )
    if only_exec:
        from codemode_operator import exec_cmd

        exec_cmd.register(sub)
        return parser
    from codemode_session.cli import dev_cmd, serve_cmd, store_cmd
    from codemode_session.mcp import cli as mcp_cmd  # imports the MCP SDK only when run

    serve_cmd.register(sub)
    store_cmd.register(sub)
    dev_cmd.register(sub)
    mcp_cmd.register(sub)
    if operator_extra_installed():
        from codemode_operator import exec_cmd, sessions_cmd

        exec_cmd.register(sub)
        sessions_cmd.register(sub)
    else:
        parser.epilog = EXEC_MISSING
    return parser


EXEC_MISSING = (
    "codemode exec and codemode sessions (CodeSessions on Kubernetes) need the operator "
    "extra: pip install 'codemode[operator]'"
)


MCP_MISSING = "codemode mcp needs the mcp extra (the MCP SDK): pip install 'codemode[mcp]'"


def operator_extra_installed() -> bool:
    """Whether `codemode exec` can work: it needs the Kubernetes client of the operator
    extra. codemode_operator itself is in every install (one distribution) and exec_cmd
    imports the client only when it runs, so importing exec_cmd proves nothing; the
    client is looked up without importing it (that takes about a second)."""
    try:
        return importlib.util.find_spec("kubernetes") is not None
    except (ImportError, ValueError):  # a broken or half-imported installation
        return False


def mcp_extra_installed() -> bool:
    """Whether the MCP SDK is there, looked up without importing it."""
    try:
        return importlib.util.find_spec("mcp") is not None
    except (ImportError, ValueError):
        return False


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] in (["exec"], ["sessions"]) and not operator_extra_installed():
        print(f"codemode: error: {EXEC_MISSING}", file=sys.stderr)
        return 2
    if argv[:1] == ["mcp"] and not mcp_extra_installed():
        print(f"codemode: error: {MCP_MISSING}", file=sys.stderr)
        return 2
    parser = build_parser(only_exec=argv[:1] == ["exec"] and "--help" not in argv[1:2])
    args = parser.parse_args(argv)
    try:
        code: int = args.func(args)
    except CodemodeError as exc:
        print(f"codemode: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # includes httpx's and urllib's connection errors
        print(f"codemode: error: {exc.strerror or exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        expected = type(exc).__module__.split(".")[0] in ("httpx", "kubernetes", "urllib3")
        if not expected and os.environ.get("CODEMODE_DEBUG"):
            raise
        hint = "" if expected else " (unexpected; CODEMODE_DEBUG=1 shows the traceback)"
        print(f"codemode: error: {type(exc).__name__}: {_first_line(exc)}{hint}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return code


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "reason", "") or exc).strip()
    return text.splitlines()[0] if text else "failed"


if __name__ == "__main__":
    sys.exit(main())
