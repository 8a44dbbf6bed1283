"""Read what storage holds: list it, or write it out as files a source can use again.

Pulled folders have the same shape bootstrap reads (`name.py`, `name.yaml`,
`requirements.txt`), so `pull` then `bootstrap --folder` round-trips.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from codemode_session.errors import CodemodeError, StorageUnavailableError, ValidationError
from codemode_session.names import validate_tool_name, validate_workflow_name
from codemode_session.storage import Storage
from codemode_session.storage.file_storage import atomic_write
from codemode_session.store.catalog import REQUIREMENTS, Kind
from codemode_session.tools import tool_yaml
from codemode_session.workflow_model import Workflow


@dataclass(frozen=True)
class Entry:
    name: str
    description: str = ""
    owner: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "description": self.description, "owner": self.owner}


def _tool_description(text: str) -> str:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError:
        return ""
    return str(data.get("description", "")) if isinstance(data, dict) else ""


async def stored_workflows(storage: Storage) -> list[Workflow]:
    """Every workflow the target holds; an entry another client stored in a shape
    this version cannot decode is one readable error, not a traceback."""
    try:
        return await storage.list_workflows()
    except CodemodeError:
        raise
    except (ValueError, TypeError, KeyError) as exc:
        raise StorageUnavailableError(
            f"{storage.description} holds a workflow entry that cannot be decoded "
            f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else '?'}); "
            "repair or delete it"
        ) from None


async def list_entries(storage: Storage, kind: Kind, library: str | None = None) -> list[Entry]:
    """Names and descriptions in the target; with a library, only what it owns."""
    if kind == "workflows":
        owners = await storage.workflow_owners()
        entries = [
            Entry(w.name, w.description, owners.get(w.name))
            for w in await stored_workflows(storage)
        ]
        if library is not None:
            entries = [e for e in entries if e.owner == library]
        return entries
    if kind == "tools":
        return [Entry(n, _tool_description(t)) for n, t in (await storage.list_tools()).items()]
    return [Entry(spec) for spec in await storage.list_deps()]


async def pull_to_folder(
    storage: Storage, kind: Kind, folder: str, library: str | None = None
) -> list[str]:
    """Write the target's items into `folder`; returns the file names written.

    Same-named files in `folder` are replaced, other files are left alone.
    Everything is read (and every name checked) before the first file is written.
    """
    dest = Path(folder).expanduser()
    files: dict[str, str] = {}
    if kind == "workflows":
        owners = await storage.workflow_owners() if library is not None else {}
        for workflow in await stored_workflows(storage):
            if library is None or owners.get(workflow.name) == library:
                files[f"{_checked(kind, workflow.name)}.py"] = workflow.source
    elif kind == "tools":
        files = {
            f"{_checked(kind, n)}.yaml": tool_yaml(t)
            for n, t in (await storage.list_tools()).items()
        }
    else:
        specs = await storage.list_deps()
        files = {REQUIREMENTS: "".join(f"{s}\n" for s in specs)}
    if dest.exists() and not dest.is_dir():
        raise ValidationError(f"cannot write to {dest}: it is not a folder")
    try:
        dest.mkdir(parents=True, exist_ok=True)
        for name, text in files.items():
            atomic_write(dest / name, text.encode())
    except OSError as exc:
        raise ValidationError(f"cannot write to {dest}: {exc.strerror or exc}") from None
    return sorted(files)


def _checked(kind: Kind, name: str) -> str:
    """Storage may hold names written by other clients: never let one escape `folder`."""
    try:
        (validate_workflow_name if kind == "workflows" else validate_tool_name)(name)
    except ValidationError as exc:
        raise ValidationError(f"cannot pull {kind[:-1]} {name!r}: {exc}") from None
    return name
