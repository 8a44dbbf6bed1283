"""Argument parsing for the cluster tool; the work lives in the other modules."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import cast

from . import build, images, lifecycle, wait
from .layout import MODES, Mode


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.cluster", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="build pinned binaries into the cache (cached by version)")
    b.add_argument("names", nargs="*", help="only these binaries")
    for name in ("up", "down", "status"):
        s = sub.add_parser(name, help=f"{name} a local cluster")
        s.add_argument("--mode", choices=MODES, default="node" if name == "up" else None)
    im = sub.add_parser("images", help="build the pause and Debian base images")
    im.add_argument(
        "--project", action="store_true", help="also session-image/ and operator/ images"
    )
    im.add_argument("--force", action="store_true", help="rebuild project images even if fresh")
    bi = sub.add_parser(
        "build-image", help="buildah bud a Dockerfile on the base image and save it"
    )
    bi.add_argument("--file", required=True, type=Path)
    bi.add_argument("--tag", required=True)
    bi.add_argument("--build-arg", action="append", default=[])
    bi.add_argument("context", type=Path)
    args = p.parse_args(argv)

    if args.cmd == "build":
        build.build(args.names or None)
    elif args.cmd == "images":
        archives = images.build_defaults()
        if args.project:
            archives += images.build_project_images(force=args.force)
        print("\n".join(map(str, archives)))
        lifecycle.import_images_if_up()
    elif args.cmd == "build-image":
        build_args = dict(a.split("=", 1) for a in args.build_arg)
        print(images.build_image(args.file, args.context, args.tag, build_args))
        lifecycle.import_images_if_up()
    elif args.cmd == "up":
        try:
            lifecycle.up(cast(Mode, args.mode))
        except wait.ComponentFailed as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
    elif args.cmd == "down":
        for mode in [args.mode] if args.mode else MODES:
            lifecycle.down(mode)
    elif args.cmd == "status":
        healthy = [lifecycle.status(mode) for mode in ([args.mode] if args.mode else MODES)]
        return 0 if any(healthy) else 3
    return 0
