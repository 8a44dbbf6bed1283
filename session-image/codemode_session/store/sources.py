"""Where a library comes from: a local folder or a folder of a git commit.

Both kinds yield a `Snapshot`: the raw files of one folder (not recursive) and
a revision. For git the revision is the commit sha; for a folder it is
"folder:" + the content digest, so unchanged folders report the same revision.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from codemode_session.errors import NotFoundError, ValidationError
from codemode_session.store.gitfetch import (
    DEFAULT_TIMEOUT,
    GitAuth,
    fetch_folder,
    validate_subpath,
)


@dataclass(frozen=True)
class Snapshot:
    """Raw files (name -> bytes) of one source folder, and where they came from."""

    files: dict[str, bytes]
    revision: str  # commit sha, or "" until the caller fills in the folder digest
    origin: str


@dataclass(frozen=True)
class SourceSpec:
    """What the user pointed at: exactly one of `folder` or `git_url`."""

    folder: str | None = None
    git_url: str | None = None
    ref: str | None = None
    path: str = ""
    auth: GitAuth = field(default_factory=GitAuth)
    timeout: float = DEFAULT_TIMEOUT

    def __post_init__(self) -> None:
        if (self.folder is None) == (self.git_url is None):
            raise ValidationError("give exactly one source: --folder DIR or --git URL")
        if self.folder is not None and self.ref:
            raise ValidationError("--ref only applies to --git sources")


def _read_local(root: Path) -> dict[str, bytes]:
    if root.is_file():
        return {root.name: root.read_bytes()}
    files = {}
    with os.scandir(root) as entries:
        for entry in entries:
            # Symlinks are followed: Kubernetes mounts ConfigMap files as symlinks.
            if entry.is_file():
                files[entry.name] = Path(entry.path).read_bytes()
    return files


def load_snapshot(spec: SourceSpec) -> Snapshot:
    """Read the source's files; git sources are fetched into a temporary repository."""
    if spec.git_url is not None:
        tree = fetch_folder(spec.git_url, spec.ref, spec.path, spec.auth, spec.timeout)
        return Snapshot(files=tree.files, revision=tree.commit, origin=spec.git_url)
    assert spec.folder is not None
    sub = validate_subpath(spec.path)
    root = Path(spec.folder).expanduser() / sub if sub else Path(spec.folder).expanduser()
    if not root.exists():
        raise NotFoundError(f"source folder not found: {root}")
    try:
        files = _read_local(root)
    except OSError as exc:
        raise ValidationError(f"cannot read source folder {root}: {exc.strerror}") from None
    return Snapshot(files=files, revision="", origin=str(root))
