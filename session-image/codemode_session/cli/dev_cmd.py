"""`codemode dev ...`: the local development cluster of a codemode checkout.

The cluster tooling lives in the repository (tests/cluster), not in the
installed package, so this finds the checkout from the current directory and
hands over to `python -m tests.cluster`.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

from codemode_session.errors import CodemodeError


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("dev", help="local development cluster (run inside a checkout)")
    dev = parser.add_subparsers(dest="dev_command", required=True, metavar="COMMAND")
    cluster = dev.add_parser("cluster", help="a real local Kubernetes: up, down, status, env")
    cluster.add_argument("action", choices=["up", "down", "status", "build", "env"])
    cluster.add_argument("--mode", choices=["control-plane", "node"])
    cluster.set_defaults(func=run_cluster)
    images = dev.add_parser("images", help="(re)build the base, pause and codemode images")
    images.add_argument("--force", action="store_true")
    images.set_defaults(func=run_images)


def checkout_root(start: Path | None = None) -> Path:
    here = (start or Path.cwd()).resolve()
    for candidate in (here, *here.parents):
        if (candidate / "tests" / "cluster" / "__main__.py").exists():
            return candidate
    raise CodemodeError("`codemode dev` needs a codemode checkout: run it inside the repository")


def _tool(args: list[str]) -> int:
    root = checkout_root()
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(root), *filter(None, [os.environ.get("PYTHONPATH")])]),
    }
    return subprocess.run(
        [sys.executable, "-m", "tests.cluster", *args], cwd=root, env=env, check=False
    ).returncode


def run_cluster(args: argparse.Namespace) -> int:
    extra = ["--mode", args.mode] if args.mode else []
    return _tool([args.action, *extra])


def run_images(args: argparse.Namespace) -> int:
    return _tool(["images", "--project", *(["--force"] if args.force else [])])
