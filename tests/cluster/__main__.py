"""Command line: ``python -m tests.cluster build|up|down|status|images``."""

from __future__ import annotations

from .cli import main

raise SystemExit(main())
