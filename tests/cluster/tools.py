"""The pinned kubectl and helm on a user's PATH, for following the README by hand.

kubectl is built with the cluster and helm comes from a PyPI wheel, so neither is
on a fresh machine's PATH. ``shell_env`` links both into one cache folder and
returns the exports that ``eval "$(python -m tests.cluster env)"`` applies.
"""

from __future__ import annotations

import shlex
from pathlib import Path

from . import paths
from .helm import helm_binary
from .layout import Mode, layout


def tools_dir() -> Path:
    """A folder holding exactly ``kubectl`` and ``helm`` (links into the cache)."""
    kubectl = paths.binary("kubectl")
    if not kubectl.exists():
        raise SystemExit(f"error: {kubectl} is not built yet: run `python -m tests.cluster up`")
    folder = paths.cache_root() / "bin"
    folder.mkdir(parents=True, exist_ok=True)
    for name, target in (("kubectl", kubectl), ("helm", helm_binary())):
        link = folder / name
        if link.is_symlink() and link.resolve() == target.resolve():
            continue
        link.unlink(missing_ok=True)
        link.symlink_to(target)
    return folder


def shell_env(mode: Mode) -> str:
    """POSIX shell lines exporting KUBECONFIG of ``mode`` and PATH with the tools."""
    folder = shlex.quote(str(tools_dir()))
    kubeconfig = shlex.quote(str(layout(mode).kubeconfig))
    return f'export KUBECONFIG={kubeconfig}\nexport PATH={folder}:"$PATH"'
