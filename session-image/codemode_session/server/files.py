"""Each session's working folder: files uploaded and downloaded over HTTP (`/files`).

A session's worker runs in its folder (its current directory), so agent code opens an
uploaded `data.csv` by that name and a file it writes is there to download. The folder
is the agent's, and so is everything in it: agent code may leave a symlink, a FIFO or a
hard-to-read tree there. So the server never resolves a path by name: it walks from the
folder one component at a time with O_NOFOLLOW (a symlink anywhere is refused, never
followed, so `/proc/1/environ` or another session's folder cannot be reached through
one), opens without blocking and serves regular files only, and writes an upload to a
fresh file that replaces the target by rename, so nothing half-written is ever seen.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import secrets
import shutil
import stat
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

from anyio import to_thread

from codemode_session.errors import (
    ConflictError,
    NotFoundError,
    QuotaExceededError,
    ValidationError,
)

CHUNK = 1024 * 1024
MAX_FILE_BYTES_DEFAULT = 256 * 1024 * 1024
MAX_FOLDER_BYTES_DEFAULT = 512 * 1024 * 1024  # the session pod's /tmp holds 1 GiB
# One path component: letters, digits, ".", "_", "-" and spaces inside; not "." or "..".
_COMPONENT = re.compile(r"^[A-Za-z0-9_.-]([A-Za-z0-9_. -]{0,253}[A-Za-z0-9_.-])?$")
MAX_DEPTH = 16
MAX_PATH = 1024
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
UPLOAD_PREFIX = ".codemode-upload-"
FOLDER_ID = re.compile(r"[^A-Za-z0-9_.-]")

FILE_NAME_HELP = (
    "A path relative to the session's working folder: components of letters, digits, "
    "'.', '_', '-' (and inner spaces) separated by '/', at most 16 deep; no '.' or '..'."
)


def check_path(path: str) -> list[str]:
    """The components of a file's path in a session folder, or a 400 saying why not."""
    if not path or len(path) > MAX_PATH:
        raise ValidationError(f"a file path has 1 to {MAX_PATH} characters")
    parts = path.split("/")
    if len(parts) > MAX_DEPTH:
        raise ValidationError(f"file path {path!r} is more than {MAX_DEPTH} folders deep")
    for part in parts:
        if part in ("", ".", "..") or not _COMPONENT.match(part):
            raise ValidationError(f"file path {path!r}: {part!r} is not allowed. {FILE_NAME_HELP}")
        if part.startswith(UPLOAD_PREFIX):
            raise ValidationError(f"file path {path!r}: names starting {UPLOAD_PREFIX} are ours")
    return parts


@dataclass(frozen=True)
class FileInfo:
    path: str
    bytes: int
    modified: float

    def to_dict(self) -> dict[str, object]:
        return {"path": self.path, "bytes": self.bytes, "modified": self.modified}


def _open_dir(parent: int, name: str, create: bool) -> int:
    try:
        return os.open(name, _DIR_FLAGS, dir_fd=parent)
    except FileNotFoundError:
        if not create:
            raise NotFoundError(f"no folder {name!r}") from None
        with contextlib.suppress(FileExistsError):
            os.mkdir(name, 0o700, dir_fd=parent)
        return _open_dir(parent, name, create=False)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise ConflictError(f"{name!r} is not a folder (a file or a symlink)") from None
        raise


@contextlib.contextmanager
def _walk(root: str, parts: list[str], create: bool) -> Iterator[int]:
    """The folder holding the last of `parts`, opened component by component with no
    symlink followed; the caller gets its descriptor."""
    fd = os.open(root, _DIR_FLAGS)
    try:
        for part in parts[:-1]:
            child = _open_dir(fd, part, create)
            os.close(fd)
            fd = child
        yield fd
    finally:
        os.close(fd)


class SessionFolders:
    """Where each session's folder is (`root/<folder id>`), and the limits of uploads."""

    def __init__(self, root: str, max_file_bytes: int, max_folder_bytes: int) -> None:
        self.root = root
        self.max_file_bytes = max_file_bytes
        self.max_folder_bytes = max_folder_bytes

    def folder(self, folder_id: str) -> str:
        """The folder (made, private to the server's user, on first use)."""
        path = os.path.join(self.root, FOLDER_ID.sub("_", folder_id) or "_")
        os.makedirs(path, mode=0o700, exist_ok=True)
        return path

    def remove(self, folder_id: str) -> None:
        path = os.path.join(self.root, FOLDER_ID.sub("_", folder_id) or "_")
        shutil.rmtree(path, ignore_errors=True)

    # reading
    def open_file(self, folder: str, path: str) -> tuple[int, int]:
        """A descriptor of the regular file at `path` and its size (404 for anything else)."""
        parts = check_path(path)
        with _walk(folder, parts, create=False) as parent:
            try:
                fd = os.open(
                    parts[-1],
                    os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                    dir_fd=parent,
                )
            except FileNotFoundError:
                raise NotFoundError(f"no file {path!r} in the session's folder") from None
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.EISDIR, errno.ENXIO):
                    raise NotFoundError(f"{path!r} is not a regular file") from None
                raise
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            os.close(fd)
            raise NotFoundError(f"{path!r} is not a regular file")
        return fd, info.st_size

    def files(self, folder: str) -> list[FileInfo]:
        """Regular files under the folder (symlinks and other kinds left out)."""
        found: list[FileInfo] = []
        for top, dirs, files in os.walk(folder, followlinks=False):
            rel = os.path.relpath(top, folder)
            dirs.sort()
            for name in sorted(files):
                if name.startswith(UPLOAD_PREFIX):
                    continue
                with contextlib.suppress(OSError):
                    info = os.lstat(os.path.join(top, name))
                    if stat.S_ISREG(info.st_mode):
                        path = name if rel == "." else f"{rel}/{name}"
                        found.append(FileInfo(path, info.st_size, info.st_mtime))
        return found

    def delete(self, folder: str, path: str) -> None:
        parts = check_path(path)
        with _walk(folder, parts, create=False) as parent:
            try:
                info = os.stat(parts[-1], dir_fd=parent, follow_symlinks=False)
            except FileNotFoundError:
                raise NotFoundError(f"no file {path!r} in the session's folder") from None
            if stat.S_ISDIR(info.st_mode):
                raise ConflictError(f"{path!r} is a folder")
            os.unlink(parts[-1], dir_fd=parent)

    # writing
    async def listing(self, folder: str) -> list[FileInfo]:
        """`files` off the event loop: agent code may have left a tree of any size."""
        return await to_thread.run_sync(self.files, folder)

    async def check_size(self, folder: str, declared: int | None) -> None:
        if declared is not None and declared > self.max_file_bytes:
            raise QuotaExceededError(self._too_big())
        used = sum(f.bytes for f in await self.listing(folder))
        if declared is not None and used + declared > self.max_folder_bytes:
            raise QuotaExceededError(self._folder_full())

    def _too_big(self) -> str:
        return f"a file may have at most {self.max_file_bytes} bytes (MAX_FILE_BYTES)"

    def _folder_full(self) -> str:
        return (
            f"the session's folder may hold at most {self.max_folder_bytes} bytes "
            "(MAX_FOLDER_BYTES)"
        )

    async def write(self, folder: str, path: str, chunks: AsyncIterator[bytes]) -> FileInfo:
        """Stream `chunks` into `path` (folders made as needed), replacing what was there
        only once every byte is written; over a limit, nothing is left behind."""
        parts = check_path(path)
        used = sum(f.bytes for f in await self.listing(folder))
        room = min(self.max_file_bytes, self.max_folder_bytes - used)
        temp = f"{UPLOAD_PREFIX}{secrets.token_hex(8)}"
        with _walk(folder, parts, create=True) as parent:
            fd = os.open(
                temp,
                os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                0o600,
                dir_fd=parent,
            )
            written = 0
            try:
                try:
                    async for chunk in chunks:
                        written += len(chunk)
                        if written > room:
                            raise QuotaExceededError(
                                self._too_big()
                                if written > self.max_file_bytes
                                else self._folder_full()
                            )
                        await to_thread.run_sync(_write_all, fd, chunk)
                except OSError as exc:
                    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                        raise QuotaExceededError("the session pod's disk is full") from None
                    raise
                finally:
                    os.close(fd)
                try:
                    os.rename(temp, parts[-1], src_dir_fd=parent, dst_dir_fd=parent)
                except IsADirectoryError:
                    raise ConflictError(f"{path!r} is a folder") from None
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(temp, dir_fd=parent)
                raise
            info = os.stat(parts[-1], dir_fd=parent, follow_symlinks=False)
        return FileInfo(path, written, info.st_mtime)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


async def read_chunks(fd: int) -> AsyncIterator[bytes]:
    """A file's bytes in CHUNK pieces, read off the event loop; closes `fd` at the end."""
    try:
        while True:
            chunk = await to_thread.run_sync(os.read, fd, CHUNK)
            if not chunk:
                return
            yield chunk
    finally:
        os.close(fd)
