"""Publish a catalog into storage: the library bootstrap a WorkflowLibrary Job runs.

Workflows are published per library, atomically (one `apply_library` call is
one MULTI/EXEC), and ownership decides what may be touched:

- a workflow this library owns is updated, or removed when it left the source
  (unless pruning is off);
- a workflow nobody owns (created by an agent) is never touched: when the
  source defines the same name that is a conflict and nothing is written,
  unless `adopt` is asked for, then the library takes it over ("adopted") and
  from then on owns it;
- a workflow another library owns is a conflict: nothing is written.

A re-sync whose raw-content digest equals the stored record's, with the owner
map still matching, reads and parses no workflow and only refreshes the record
(`force` compares every workflow anyway, e.g. after a client that ignores owner
records, such as py-code-mode's, changed one).

Tools and deps are prefix-wide and have no owner records, so their sync adds
and updates, and removes entries missing from the source only when pruning
is asked for explicitly.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from codemode_session.errors import CodemodeError, ConflictError, ForbiddenError
from codemode_session.names import validate_library_name
from codemode_session.storage import LibraryRecord, Storage
from codemode_session.store.catalog import Catalog, parse_workflows
from codemode_session.workflow_model import Workflow


@dataclass
class SyncResult:
    """What a bootstrap did; printed as JSON and read back by the operator."""

    revision: str
    digest: str
    added: int = 0
    updated: int = 0
    removed: int = 0
    unchanged: int = 0
    count: int = 0
    library: str | None = None
    workspace_id: str | None = None
    type: str = "workflows"
    adopted: int = 0
    deleted: bool = False

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        if not self.deleted:
            del data["deleted"]
        return data


@dataclass(frozen=True)
class WorkflowPlan:
    upserts: list[Workflow]
    removals: list[str]
    added: int
    updated: int
    unchanged: int
    adopted: int


def plan_workflows(
    library: str,
    wanted: dict[str, Workflow],
    existing: Mapping[str, Workflow | None],
    owners: dict[str, str],
    prune: bool,
    adopt: bool = False,
) -> WorkflowPlan:
    """Decide the writes that make `library`'s share of storage equal `wanted`.

    Raises (and so writes nothing) when a wanted name belongs to another library,
    or, unless `adopt`, to nobody (a workflow an agent created).
    """
    conflicts = sorted(n for n in wanted if owners.get(n) not in (None, library))
    if conflicts:
        first = conflicts[0]
        more = f" (and {len(conflicts) - 1} more)" if len(conflicts) > 1 else ""
        raise ForbiddenError(
            f"workflow {first!r}{more} is owned by WorkflowLibrary {owners[first]!r}; "
            f"library {library!r} will not take it over"
        )
    unowned = sorted(n for n in wanted if n in existing and n not in owners)
    if unowned and not adopt:
        first = unowned[0]
        more = f" (and {len(unowned) - 1} more)" if len(unowned) > 1 else ""
        raise ConflictError(
            f"workflow {first!r}{more} already exists and was not published by a "
            f"WorkflowLibrary (an agent created it); library {library!r} leaves it alone: "
            "rename or remove one of them, or pass --adopt to take it over"
        )
    upserts: list[Workflow] = []
    added = updated = unchanged = adopted = 0
    for name, workflow in wanted.items():
        current = existing.get(name)
        owned = owners.get(name) == library
        if name not in existing:
            added += 1
        elif owned and current is not None and current.to_json() == workflow.to_json():
            unchanged += 1
            continue
        else:
            updated += 1
            adopted += 0 if owned else 1
        upserts.append(workflow)
    removals: list[str] = []
    if prune:
        removals = sorted(n for n, lib in owners.items() if lib == library and n not in wanted)
    return WorkflowPlan(upserts, removals, added, updated, unchanged, adopted)


@dataclass(frozen=True)
class StoredState:
    """What a bootstrap of one library reads first (small; can overlap the git fetch)."""

    owners: dict[str, str]
    record: LibraryRecord | None


async def read_state(storage: Storage, library: str) -> StoredState:
    validate_library_name(library)
    owners = await storage.workflow_owners()
    try:
        record = await storage.get_library(library)
    except CodemodeError:
        raise
    except (ValueError, TypeError, KeyError):
        record = None  # unreadable record (another client wrote it): compare everything
    return StoredState(owners, record)


async def _existing(storage: Storage, names: list[str]) -> dict[str, Workflow | None]:
    """What storage holds under `names`; None for an entry it cannot decode.

    Reads everything in one call when it can; when some other client stored an
    entry this version cannot decode, falls back to reading only `names`, so a
    broken workflow the library does not define cannot block its sync.
    """
    try:
        return {w.name: w for w in await storage.list_workflows()}
    except CodemodeError:
        raise
    except (ValueError, TypeError, KeyError):
        pass
    found: dict[str, Workflow | None] = {}
    for name in names:
        try:
            workflow = await storage.get_workflow(name)
        except CodemodeError:
            raise
        except (ValueError, TypeError, KeyError):
            found[name] = None
            continue
        if workflow is not None:
            found[name] = workflow
    return found


async def bootstrap_workflows(
    storage: Storage,
    library: str,
    catalog: Catalog,
    revision: str,
    prune: bool = True,
    state: StoredState | None = None,
    force: bool = False,
    adopt: bool = False,
) -> SyncResult:
    """Make the workflows `library` owns equal the catalog, in one atomic write.

    Unless `force`, unchanged content (same digest as the stored record, same
    owned names) is recognised without reading or parsing any workflow.
    """
    validate_library_name(library)
    if state is None:
        state = await read_state(storage, library)
    digest = catalog.digest
    result = SyncResult(revision=revision, digest=digest, count=len(catalog),
                        library=library, workspace_id=storage.workspace_id)
    fresh = LibraryRecord(revision=revision, digest=digest, count=len(catalog),
                          synced_at=time.time())
    owned = {n for n, lib in state.owners.items() if lib == library}
    if (not force and state.record is not None and state.record.digest == digest
            and owned == set(catalog.texts)):
        await storage.apply_library(library, [], [], fresh)
        result.unchanged = len(catalog)
        return result
    wanted = parse_workflows(catalog)
    existing = await _existing(storage, sorted(wanted))
    plan = plan_workflows(library, wanted, existing, state.owners, prune, adopt)
    await storage.apply_library(library, plan.upserts, plan.removals, fresh)
    result.added, result.updated, result.unchanged = plan.added, plan.updated, plan.unchanged
    result.removed, result.adopted = len(plan.removals), plan.adopted
    return result


async def unpublish_library(storage: Storage, library: str) -> SyncResult:
    """Remove every workflow `library` owns and its record (the library was deleted)."""
    validate_library_name(library)
    record = await storage.get_library(library)
    owners = await storage.workflow_owners()
    owned = sorted(n for n, lib in owners.items() if lib == library)
    await storage.apply_library(library, [], owned, None)
    return SyncResult(
        revision=record.revision if record else "",
        digest=record.digest if record else "",
        removed=len(owned),
        library=library,
        workspace_id=storage.workspace_id,
        deleted=True,
    )


async def sync_tools(storage: Storage, catalog: Catalog, revision: str, prune: bool
                     ) -> SyncResult:
    current = await storage.list_tools()
    result = SyncResult(revision=revision, digest=catalog.digest, count=len(catalog),
                        workspace_id=None, type="tools")
    for name, text in sorted(catalog.texts.items()):
        if current.get(name) == text:
            result.unchanged += 1
            continue
        if name in current:
            result.updated += 1
        else:
            result.added += 1
        await storage.save_tool(name, text)
    if prune:
        for name in sorted(set(current) - set(catalog.texts)):
            result.removed += int(await storage.delete_tool(name))
    return result


async def sync_deps(storage: Storage, catalog: Catalog, revision: str, prune: bool
                    ) -> SyncResult:
    current = set(await storage.list_deps())
    result = SyncResult(revision=revision, digest=catalog.digest, count=len(catalog),
                        workspace_id=None, type="deps")
    for spec in sorted(catalog.texts):
        if spec in current:
            result.unchanged += 1
        else:
            result.added += int(await storage.add_dep(spec))
    if prune:
        for spec in sorted(current - set(catalog.texts)):
            result.removed += int(await storage.remove_dep(spec))
    return result
