"""File backend: the same namespaces as Redis, mirrored as a directory tree.

Layout: base/[workspaces/{id}/]{workflows,artifacts,libraries,deps.txt}, plus the
prefix-wide base/deps.txt and base/tools/. Every write goes to a temp file and
is renamed into place, and index updates hold an flock, so concurrent workers
never see torn files. A multi-file change (a library, a tools sync) holds the
folder's lock exclusively and stages every temp file before the first rename;
readers of workflows and tools take the same lock shared, so they see the
folder before or after such a change, never half of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import functools
import json
import os
import tempfile
import time
from collections.abc import Awaitable, Callable, Collection, Coroutine, Iterator, Mapping
from pathlib import Path
from typing import IO, Any, ParamSpec, TypeVar

from codemode_session.errors import (
    ConflictError,
    ForbiddenError,
    StorageUnavailableError,
    ValidationError,
)
from codemode_session.names import (
    validate_artifact_name,
    validate_library_name,
    validate_workflow_name,
    validate_workspace_id,
)
from codemode_session.storage.base import (
    TRANSACTION_ATTEMPTS,
    ArtifactInfo,
    LibraryRecord,
    StorageTransaction,
)
from codemode_session.storage.quota import Quota
from codemode_session.workflow_model import Workflow, parse_workflow

T = TypeVar("T")
P = ParamSpec("P")
R = TypeVar("R")

# How long a writer waits for a folder's lock before it answers "busy": agent code
# can hold the lock file (it shares the disk), and must not stall the server.
LOCK_TIMEOUT = 5.0


def _in_thread(fn: Callable[P, R]) -> Callable[P, Coroutine[Any, Any, R]]:
    """Run a blocking file operation off the event loop (file locks can wait)."""

    @functools.wraps(fn)
    async def run(*args: P.args, **kwargs: P.kwargs) -> R:
        return await asyncio.to_thread(fn, *args, **kwargs)

    return run


def _flock(fh: IO[Any], mode: int, path: Path) -> None:
    """flock with a deadline: StorageUnavailableError when someone holds it too long."""
    deadline = time.monotonic() + LOCK_TIMEOUT
    while True:
        try:
            fcntl.flock(fh, mode | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise StorageUnavailableError(
                    f"{path} has been locked by another process for {LOCK_TIMEOUT:g}s; try again"
                ) from None
            time.sleep(0.01)


def atomic_write(path: Path, data: bytes) -> None:
    """Write `data` to `path` through a temp file and a rename: readers see old or new."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _publish(writes: Mapping[Path, bytes], deletes: Collection[Path] = ()) -> None:
    """Write several files with as little room for a partial result as files allow:
    every temp file is written first (a failure there changes nothing), then all are
    renamed into place (in `writes` order), then `deletes` are removed."""
    staged: list[tuple[str, Path]] = []
    try:
        for path, data in writes.items():
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
            staged.append((tmp, path))
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
    except BaseException:
        for tmp, _ in staged:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        raise
    for tmp, path in staged:
        os.replace(tmp, path)
    for path in deletes:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _deps_text(specs: Collection[str]) -> bytes:
    return ("\n".join(sorted(specs)) + "\n" if specs else "").encode()


INDEX_FILE = "__index__.json"


def _size(path: Path) -> int:
    try:
        return path.stat().st_size if path.is_file() else 0
    except OSError:
        return 0


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_bytes())
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        return {}
    except (ValueError, RecursionError):
        raise StorageUnavailableError(
            f"{path} is corrupt (not JSON); restore or remove it"
        ) from None
    return data if isinstance(data, dict) else {}


class FileStorage:
    def __init__(
        self,
        base_path: str | os.PathLike[str],
        workspace_id: str | None = None,
        quota: Quota | None = None,
    ) -> None:
        validate_workspace_id(workspace_id)
        self.quota = quota or Quota()
        self.base = Path(base_path)
        self.prefix = str(self.base)
        self.workspace_id = workspace_id
        self.scope = self.base if workspace_id is None else self.base / "workspaces" / workspace_id
        self.workflows_dir = self.scope / "workflows"
        self.artifacts_dir = self.scope / "artifacts"
        self.libraries_dir = self.scope / "libraries"
        self.tools_dir = self.base / "tools"
        self.deps_file = self.base / "deps.txt"
        self.workspace_deps_file = self.scope / "deps.txt"  # deps_file when unscoped

    @property
    def description(self) -> str:
        ws = self.workspace_id if self.workspace_id is not None else "(unscoped)"
        return f"file://{self.base} workspace={ws}"

    @contextlib.contextmanager
    def _lock(self, directory: Path) -> Iterator[None]:
        directory.mkdir(parents=True, exist_ok=True)
        with open(directory / ".lock", "a") as fh:
            _flock(fh, fcntl.LOCK_EX, directory / ".lock")
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    @contextlib.contextmanager
    def _shared(self, directory: Path) -> Iterator[None]:
        """Read `directory` while no multi-file change is half done. Never creates
        anything: a folder without a lock file has never had a locked writer."""
        try:
            fh = open(directory / ".lock")  # noqa: SIM115
        except OSError:
            yield
            return
        with fh:
            _flock(fh, fcntl.LOCK_SH, directory / ".lock")
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    @_in_thread
    def ping(self) -> None:
        self.scope.mkdir(parents=True, exist_ok=True)

    @_in_thread
    def close(self) -> None:
        return None

    # ---- workflows -------------------------------------------------------------------

    def _read_workflow(self, name: str) -> Workflow | None:
        try:
            source = (self.workflows_dir / f"{name}.py").read_text()
        except FileNotFoundError:
            return None
        meta = _read_json(self.workflows_dir / f"{name}.meta.json")
        return parse_workflow(name, source, meta.get("description"))

    def _write_workflow(self, workflow: Workflow) -> None:
        atomic_write(
            self.workflows_dir / f"{workflow.name}.meta.json",
            json.dumps({"description": workflow.description}).encode(),
        )
        atomic_write(self.workflows_dir / f"{workflow.name}.py", workflow.source.encode())

    def _remove_workflow(self, name: str) -> bool:
        existed = False
        for suffix in (".py", ".meta.json"):
            with contextlib.suppress(FileNotFoundError):
                (self.workflows_dir / f"{name}{suffix}").unlink()
                existed = existed or suffix == ".py"
        return existed

    @_in_thread
    def list_workflows(self) -> list[Workflow]:
        if not self.workflows_dir.is_dir():
            return []
        found = []
        with self._shared(self.workflows_dir):
            for path in sorted(self.workflows_dir.glob("*.py")):
                try:
                    workflow = self._read_workflow(path.stem)
                except (ValidationError, StorageUnavailableError, UnicodeDecodeError):
                    continue  # not a workflow (a stray or broken file): list the others
                if workflow is not None:
                    found.append(workflow)
        return found

    @_in_thread
    def get_workflow(self, name: str) -> Workflow | None:
        validate_workflow_name(name)
        with self._shared(self.workflows_dir):
            return self._read_workflow(name)

    def _owner(self, name: str) -> str | None:
        owner = _read_json(self.workflows_dir / "__owners__.json").get(name)
        return str(owner) if owner is not None else None

    def _check_not_owned(self, name: str, verb: str) -> None:
        owner = self._owner(name)
        if owner is not None:
            raise ConflictError(
                f"cannot {verb} workflow {name!r}: it is managed by WorkflowLibrary {owner!r}"
            )

    @_in_thread
    def save_workflow(self, workflow: Workflow) -> None:
        validate_workflow_name(workflow.name)
        with self._lock(self.workflows_dir):
            self._check_not_owned(workflow.name, "overwrite")
            path = self.workflows_dir / f"{workflow.name}.py"
            old = _size(path)
            if self.quota.max_workflows is not None and not path.exists():
                count = sum(1 for _ in self.workflows_dir.glob("*.py")) + 1
                self.quota.check_workflows(count, grows=True)
            delta = len(workflow.source.encode()) - old
            if delta > 0 and self.quota.max_bytes is not None:
                self.quota.check_bytes(self._usage() + delta, grows=True)
            self._write_workflow(workflow)

    @_in_thread
    def delete_workflow(self, name: str) -> bool:
        validate_workflow_name(name)
        with self._lock(self.workflows_dir):
            self._check_not_owned(name, "delete")
            return self._remove_workflow(name)

    def _owners(self) -> dict[str, str]:
        return {k: str(v) for k, v in _read_json(self.workflows_dir / "__owners__.json").items()}

    @_in_thread
    def workflow_owners(self) -> dict[str, str]:
        with self._shared(self.workflows_dir):
            return self._owners()

    @_in_thread
    def apply_library(
        self,
        library: str,
        upserts: list[Workflow],
        removals: list[str],
        record: LibraryRecord | None,
    ) -> None:
        validate_library_name(library)
        with self._lock(self.workflows_dir):
            self._apply_library_locked(library, upserts, removals, record)

    def _apply_library_locked(
        self,
        library: str,
        upserts: list[Workflow],
        removals: list[str],
        record: LibraryRecord | None,
    ) -> None:
        """Stage every file, then rename: a failure while writing changes nothing."""
        owners: dict[str, Any] = _read_json(self.workflows_dir / "__owners__.json")
        writes: dict[Path, bytes] = {}
        deletes: list[Path] = []
        for workflow in upserts:
            writes[self.workflows_dir / f"{workflow.name}.meta.json"] = json.dumps(
                {"description": workflow.description}
            ).encode()
            writes[self.workflows_dir / f"{workflow.name}.py"] = workflow.source.encode()
            owners[workflow.name] = library
        for name in removals:
            deletes += [self.workflows_dir / f"{name}.py", self.workflows_dir / f"{name}.meta.json"]
            owners.pop(name, None)
        writes[self.workflows_dir / "__owners__.json"] = json.dumps(owners).encode()
        path = self.libraries_dir / f"{library}.json"
        if record is None:
            deletes.append(path)
        else:
            writes[path] = json.dumps(record.to_mapping()).encode()
        _publish(writes, deletes)

    def _library(self, library: str) -> LibraryRecord | None:
        validate_library_name(library)
        data = _read_json(self.libraries_dir / f"{library}.json")
        return LibraryRecord.from_mapping({k: str(v) for k, v in data.items()}) if data else None

    @_in_thread
    def get_library(self, library: str) -> LibraryRecord | None:
        with self._shared(self.workflows_dir):
            return self._library(library)

    async def transaction(
        self,
        body: Callable[[StorageTransaction], Awaitable[T]],
        what: str,
        attempts: int = TRANSACTION_ATTEMPTS,
    ) -> T:
        """Hold the lock of every folder `body` reads until its writes are done: other
        writers wait, so nothing can change in between and `body` runs once."""
        with contextlib.ExitStack() as stack:
            txn = _FileTransaction(self, stack)
            result = await body(txn)
            for write in txn.writes:
                write()
            return result

    # ---- artifacts -------------------------------------------------------------------

    def _index(self) -> dict[str, Any]:
        return _read_json(self.artifacts_dir / INDEX_FILE)

    def _usage(self) -> int:
        """Artifact data and index (descriptions, metadata), agent workflow sources, session
        snapshots and history, measured (files have no counter)."""
        owned = self._owners()
        total = sum(
            _size(p)
            for p in self.artifacts_dir.rglob("*")
            if p.is_file() and p.name != ".lock" and not p.name.startswith(".tmp-")
        )
        total += sum(_size(p) for p in self.workflows_dir.glob("*.py") if p.stem not in owned)
        # Session snapshots and history (storage/snapshots.py, storage/history.py) count too.
        for folder in (self.scope / "snapshots", self.scope / "history"):
            total += sum(_size(p) for p in folder.rglob("*") if p.is_file() and p.name != ".lock")
        return total

    @_in_thread
    def usage_bytes(self) -> int:
        return self._usage()

    def _artifact_path(self, name: str) -> Path:
        validate_artifact_name(name)
        if name == INDEX_FILE:
            raise ValidationError(
                f"invalid artifact name {name!r}: reserved for the artifacts index"
            )
        return self.artifacts_dir / name

    @_in_thread
    def save_artifact(self, info: ArtifactInfo, data: bytes) -> None:
        path = self._artifact_path(info.name)
        entry = info.index_entry()
        size = len(data) + len(json.dumps(entry).encode())  # the description counts too
        self.quota.check_artifact(info.name, size)
        with self._lock(self.artifacts_dir):
            old = self._index().get(info.name)
            old_entry = len(json.dumps(old).encode()) if old is not None else 0
            delta = size - _size(path) - old_entry
            if delta > 0 and self.quota.max_bytes is not None:
                with self._lock(self.workflows_dir):
                    self.quota.check_bytes(self._usage() + delta, grows=True)
            try:
                atomic_write(path, data)
            except (NotADirectoryError, FileExistsError):
                raise ConflictError(
                    f"cannot save artifact {info.name!r}: a part of its path is an artifact, "
                    "not a folder (pick another name or delete that artifact)"
                ) from None
            except IsADirectoryError:
                raise ConflictError(
                    f"cannot save artifact {info.name!r}: it is a folder of other artifacts "
                    f"(names starting with '{info.name}/')"
                ) from None
            index = self._index()
            index[info.name] = entry
            atomic_write(self.artifacts_dir / INDEX_FILE, json.dumps(index).encode())

    @_in_thread
    def load_artifact(self, name: str) -> tuple[ArtifactInfo, bytes] | None:
        path = self._artifact_path(name)
        try:
            data = path.read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            return None
        return ArtifactInfo.from_index_entry(name, self._index().get(name) or {}), data

    @_in_thread
    def get_artifact(self, name: str) -> ArtifactInfo | None:
        self._artifact_path(name)
        entry = self._index().get(name)
        return ArtifactInfo.from_index_entry(name, entry) if entry is not None else None

    @_in_thread
    def list_artifacts(self) -> list[ArtifactInfo]:
        return [ArtifactInfo.from_index_entry(k, v) for k, v in sorted(self._index().items())]

    @_in_thread
    def delete_artifact(self, name: str) -> bool:
        path = self._artifact_path(name)
        with self._lock(self.artifacts_dir):
            existed = False
            with contextlib.suppress(FileNotFoundError, IsADirectoryError, NotADirectoryError):
                path.unlink()
                existed = True
            # Folders left empty by this delete go too, so the name is free for a file.
            parent = path.parent
            while parent != self.artifacts_dir and self.artifacts_dir in parent.parents:
                try:
                    parent.rmdir()
                except OSError:
                    break
                parent = parent.parent
            index = self._index()
            if index.pop(name, None) is not None:
                existed = True
                atomic_write(self.artifacts_dir / INDEX_FILE, json.dumps(index).encode())
            return existed

    # ---- deps and tools ----------------------------------------------------------------

    def _deps(self, path: Path | None = None) -> list[str]:
        try:
            lines = (path or self.deps_file).read_text().splitlines()
        except FileNotFoundError:
            return []
        return sorted({line.strip() for line in lines if line.strip()})

    @_in_thread
    def list_deps(self) -> list[str]:
        """The shared specs and this workspace's own (each file replaced by rename)."""
        return sorted({*self._deps(), *self._deps(self.workspace_deps_file)})

    @_in_thread
    def add_dep(self, spec: str) -> bool:
        """Added to this workspace's own file (never the shared one), within the quota."""
        with self._lock(self.scope):
            own = self._deps(self.workspace_deps_file)
            if spec in own or spec in self._deps():
                return False
            self.quota.check_deps(len(own) + 1)
            atomic_write(self.workspace_deps_file, _deps_text([*own, spec]))
            return True

    @_in_thread
    def remove_dep(self, spec: str) -> bool:
        """Only this workspace's own specs can go; a shared one belongs to the store."""
        with self._lock(self.scope):
            own = self._deps(self.workspace_deps_file)
            if spec in own:
                atomic_write(self.workspace_deps_file, _deps_text([d for d in own if d != spec]))
                return True
        if spec in self._deps():
            raise ForbiddenError(
                f"package {spec!r} is shared by every workspace under {self.base}; it can "
                "only be removed from the store (the library's deps), not by a session"
            )
        return False

    def _tools(self) -> dict[str, str]:
        if not self.tools_dir.is_dir():
            return {}
        return {
            p.stem: p.read_text()
            for p in sorted([*self.tools_dir.glob("*.yaml"), *self.tools_dir.glob("*.yml")])
        }

    @_in_thread
    def list_tools(self) -> dict[str, str]:
        with self._shared(self.tools_dir):
            return self._tools()

    @_in_thread
    def save_tool(self, name: str, yaml_text: str) -> None:
        with self._lock(self.tools_dir):
            atomic_write(self.tools_dir / f"{name}.yaml", yaml_text.encode())

    @_in_thread
    def delete_tool(self, name: str) -> bool:
        with self._lock(self.tools_dir):
            try:
                (self.tools_dir / f"{name}.yaml").unlink()
            except FileNotFoundError:
                return False
            return True


class _FileTransaction:
    """`FileStorage.transaction`'s view: each read first takes (and keeps) the
    exclusive lock of its folder; writes run, staged, once the body returned."""

    def __init__(self, storage: FileStorage, stack: contextlib.ExitStack) -> None:
        self._st = storage
        self._stack = stack
        self._held: set[Path] = set()
        self.writes: list[Callable[[], None]] = []

    def _hold(self, directory: Path) -> None:
        if directory not in self._held:
            self._stack.enter_context(self._st._lock(directory))
            self._held.add(directory)

    async def workflow_owners(self) -> dict[str, str]:
        self._hold(self._st.workflows_dir)
        return self._st._owners()

    async def get_library(self, library: str) -> LibraryRecord | None:
        self._hold(self._st.workflows_dir)
        return self._st._library(library)

    async def get_workflows(self, names: Collection[str]) -> dict[str, Workflow | None]:
        self._hold(self._st.workflows_dir)
        found: dict[str, Workflow | None] = {}
        for name in sorted(set(names)):
            try:
                workflow = self._st._read_workflow(name)
            except (ValidationError, StorageUnavailableError, UnicodeDecodeError):
                found[name] = None
                continue
            if workflow is not None:
                found[name] = workflow
        return found

    async def list_tools(self) -> dict[str, str]:
        self._hold(self._st.tools_dir)
        return self._st._tools()

    async def list_deps(self) -> list[str]:
        self._hold(self._st.base)
        return self._st._deps()

    def apply_library(
        self,
        library: str,
        upserts: list[Workflow],
        removals: list[str],
        record: LibraryRecord | None,
    ) -> None:
        validate_library_name(library)
        self._hold(self._st.workflows_dir)
        ups, rems = list(upserts), list(removals)
        self.writes.append(lambda: self._st._apply_library_locked(library, ups, rems, record))

    def update_tools(self, save: Mapping[str, str], delete: Collection[str]) -> None:
        self._hold(self._st.tools_dir)
        tools = self._st.tools_dir
        writes = {tools / f"{name}.yaml": text.encode() for name, text in save.items()}
        deletes = [tools / f"{name}{ext}" for name in delete for ext in (".yaml", ".yml")]
        self.writes.append(lambda: _publish(writes, deletes))

    def update_deps(self, add: Collection[str], remove: Collection[str]) -> None:
        self._hold(self._st.base)
        added, removed = set(add), set(remove)

        def write() -> None:
            specs = (set(self._st._deps()) | added) - removed
            atomic_write(self._st.deps_file, _deps_text(specs))

        self.writes.append(write)
