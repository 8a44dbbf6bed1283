"""Command line: ``python -m tests.cluster build|up|down|status|images|kind``."""

from __future__ import annotations

import os
import sys

from .cli import main

try:
    if sys.argv[1:2] == ["kind"]:
        from . import kind

        code = kind.main(sys.argv[2:])
    else:
        code = main()
    sys.stdout.flush()
except BrokenPipeError:
    # `status | head`: the reader is gone; exit quietly like any Unix tool.
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    code = 141
raise SystemExit(code)
