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
    from codemode_session.cli import serve_cmd, store_cmd

    parser = argparse.ArgumentParser(
        prog="codemode", description="Sandboxed Python code-mode sessions for AI agents."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve_cmd.register(sub)
    store_cmd.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.func(args)
    except CodemodeError as exc:
        print(f"codemode: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
