"""Where a library comes from: a local folder or a folder of a git commit.

Both kinds yield a `Snapshot`: the raw files of one folder (not recursive) and
a revision. For git the revision is the commit sha; for a folder it is
"folder:" + the content digest, so unchanged folders report the same revision.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from codemode_session.errors import NotFoundError, ValidationError
from codemode_session.store.gitfetch import (
    DEFAULT_TIMEOUT,
    MAX_FILE_BYTES,
    GitAuth,
    check_utf8_name,
    fetch_folder,
    validate_subpath,
)

NameFilter = Callable[[str], bool]


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


def _inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def _read_file(path: Path, shown: str) -> bytes:
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise ValidationError(f"{shown}: larger than {MAX_FILE_BYTES} bytes")
        return path.read_bytes()
    except OSError as exc:
        raise ValidationError(f"cannot read {shown}: {exc.strerror or exc}") from None


def _read_local(root: Path, boundary: Path, wanted: NameFilter) -> dict[str, bytes]:
    """The regular files directly in `root` whose names `wanted` accepts.

    Symlinks are followed (Kubernetes mounts ConfigMap files as symlinks into a
    hidden folder beside them) but only while they stay inside the source
    folder: a link to /etc/passwd or a service-account token is refused, since
    what is read here is published to every agent of the workspace.
    """
    if root.is_file():
        return {root.name: _read_file(root, root.name)} if wanted(root.name) else {}
    files = {}
    with os.scandir(root) as entries:
        for entry in entries:
            if not wanted(entry.name):
                continue
            check_utf8_name(entry.name)
            path = Path(entry.path)
            if entry.is_symlink():
                try:
                    target = path.resolve(strict=True)
                except (OSError, RuntimeError):
                    continue  # dangling or looping: not a file, like any other non-file
                if not _inside(target, boundary):
                    raise ValidationError(
                        f"{entry.name}: symlink points outside the source folder {boundary}"
                    )
                if not target.is_file():
                    continue
            elif not entry.is_file():
                continue
            files[entry.name] = _read_file(path, entry.name)
    return files


def _everything(name: str) -> bool:
    return True


def load_snapshot(spec: SourceSpec, wanted: NameFilter = _everything) -> Snapshot:
    """Read the source's files (only those `wanted` names, so a large unrelated file
    beside the workflows is never read); git sources are fetched first."""
    if spec.git_url is not None:
        tree = fetch_folder(
            spec.git_url, spec.ref, spec.path, spec.auth, spec.timeout, wanted=wanted
        )
        return Snapshot(files=tree.files, revision=tree.commit, origin=spec.git_url)
    assert spec.folder is not None
    sub = validate_subpath(spec.path)
    folder = Path(spec.folder).expanduser()
    root = folder / sub if sub else folder
    if not root.exists():
        raise NotFoundError(f"source folder not found: {root}")
    boundary = folder.resolve()
    if not _inside(root.resolve(), boundary):
        raise ValidationError(f"--path {spec.path!r} leads outside the source folder {folder}")
    try:
        files = _read_local(root, boundary, wanted)
    except OSError as exc:
        raise ValidationError(f"cannot read source folder {root}: {exc.strerror}") from None
    return Snapshot(files=files, revision="", origin=str(root))
