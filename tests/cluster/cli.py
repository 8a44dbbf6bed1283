"""Argument parsing for the cluster tool; the work lives in the other modules."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path
from typing import cast

from . import build, hostdeps, images, lifecycle, paths, tools, wait
from .layout import MODES, Mode, layout


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m tests.cluster",
        description="A real local Kubernetes for tests; see tests/cluster/README.md.",
    )
    sub = p.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="build pinned binaries into the cache (cached by version)")
    b.add_argument("names", nargs="*", help="only these binaries")
    helps = {
        "up": "start a cluster (default mode: node) or reuse a healthy one",
        "down": "stop a cluster (default: both modes) and undo its host changes",
        "status": "show processes, logs and kubeconfig (default: both modes)",
    }
    for name, text in helps.items():
        s = sub.add_parser(name, help=text)
        s.add_argument("--mode", choices=MODES, default="node" if name == "up" else None)
    ev = sub.add_parser(
        "env", help="print shell exports: KUBECONFIG and a PATH with the pinned kubectl and helm"
    )
    ev.add_argument("--mode", choices=MODES, default="node")
    kc = sub.add_parser("kubectl", help="the pinned kubectl with a mode's admin kubeconfig")
    kc.add_argument("--mode", choices=MODES, default="node")
    kc.add_argument("args", nargs=argparse.REMAINDER)
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
        hostdeps.install("node")  # buildah and debootstrap, on a fresh machine
        archives = images.build_defaults()
        if args.project:
            archives += images.build_project_images(force=args.force)
        print("\n".join(map(str, archives)))
        lifecycle.import_images_if_up()
    elif args.cmd == "build-image":
        hostdeps.install("node")
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
    elif args.cmd == "env":
        print(tools.shell_env(cast(Mode, args.mode)))
    elif args.cmd == "kubectl":
        lay = layout(cast(Mode, args.mode))
        kubectl = [str(paths.binary("kubectl")), f"--kubeconfig={lay.kubeconfig}", *args.args]
        return subprocess.run(kubectl).returncode
    elif args.cmd == "status":
        healthy = [lifecycle.status(mode) for mode in ([args.mode] if args.mode else MODES)]
        return 0 if any(healthy) else 3
    return 0
