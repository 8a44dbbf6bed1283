"""`codemode` entry point: dispatches to subcommands, turns errors into one line.

Each subcommand module exposes `register(subparsers)` and sets `func` on its
parser; a `CodemodeError` (or any expected failure) exits 2 with one readable
line instead of a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from codemode_session.errors import CodemodeError


def build_parser() -> argparse.ArgumentParser:
    from codemode_session.cli import dev_cmd, serve_cmd, store_cmd

    parser = argparse.ArgumentParser(
        prog="codemode", description="Sandboxed Python code-mode sessions for AI agents."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve_cmd.register(sub)
    store_cmd.register(sub)
    dev_cmd.register(sub)
    try:  # `exec` needs the operator extra (the Kubernetes client)
        from codemode_operator import exec_cmd
    except ImportError:
        pass
    else:
        exec_cmd.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
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
        if type(exc).__module__.split(".")[0] not in ("httpx", "kubernetes", "urllib3"):
            raise
        print(f"codemode: error: {type(exc).__name__}: {_first_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return code


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "reason", "") or exc).strip()
    return text.splitlines()[0] if text else "failed"


if __name__ == "__main__":
    sys.exit(main())
