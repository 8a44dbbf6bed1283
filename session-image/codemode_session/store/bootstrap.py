"""Publish a catalog into storage: the library bootstrap a WorkflowLibrary Job runs.

Every sync reads what is stored, decides, and publishes its writes in one
storage transaction (Redis: WATCH on what was read, then one MULTI/EXEC;
re-decided when another writer got in between), so readers see all or none of
it and a concurrent agent or bootstrap is never overwritten on a stale view.
Ownership decides what may be touched:

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
from codemode_session.search.service import prune_workflow_vectors, workflows_changed
from codemode_session.storage import LibraryRecord, Storage, StorageTransaction
from codemode_session.store.catalog import Catalog, parse_workflows
from codemode_session.tools import stored_tool_value
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


async def _read_record(txn: StorageTransaction, library: str) -> LibraryRecord | None:
    try:
        return await txn.get_library(library)
    except CodemodeError:
        raise
    except (ValueError, TypeError, KeyError):
        return None  # unreadable record (another client wrote it): compare everything


async def bootstrap_workflows(
    storage: Storage,
    library: str,
    catalog: Catalog,
    revision: str,
    prune: bool = True,
    force: bool = False,
    adopt: bool = False,
) -> SyncResult:
    """Make the workflows `library` owns equal the catalog, in one atomic write.

    What is stored is read and the writes decided inside one storage transaction:
    when an agent or another bootstrap changes the owners, the workflows or the
    library record in between, the decision is made again on fresh data (so an
    agent's workflow saved meanwhile is never overwritten or pruned, and two
    libraries cannot both claim a name); after a few such rounds it gives up
    with a ConflictError and writes nothing.

    Unless `force`, unchanged content (same digest as the stored record, same
    owned names) is recognised without reading or parsing any workflow.
    """
    validate_library_name(library)
    digest = catalog.digest
    wanted: dict[str, Workflow] | None = None  # parsed once, however often we re-decide
    removed: list[str] = []

    async def decide(txn: StorageTransaction) -> SyncResult:
        nonlocal wanted
        removed.clear()
        result = SyncResult(
            revision=revision,
            digest=digest,
            count=len(catalog),
            library=library,
            workspace_id=storage.workspace_id,
        )
        fresh = LibraryRecord(
            revision=revision, digest=digest, count=len(catalog), synced_at=time.time()
        )
        owners = await txn.workflow_owners()
        record = await _read_record(txn, library)
        owned = {n for n, lib in owners.items() if lib == library}
        if (
            not force
            and record is not None
            and record.digest == digest
            and owned == set(catalog.texts)
        ):
            txn.apply_library(library, [], [], fresh)
            result.unchanged = len(catalog)
            return result
        if wanted is None:
            wanted = parse_workflows(catalog)
        existing = await txn.get_workflows(sorted(wanted))
        plan = plan_workflows(library, wanted, existing, owners, prune, adopt)
        txn.apply_library(library, plan.upserts, plan.removals, fresh)
        removed[:] = plan.removals
        result.added, result.updated, result.unchanged = (plan.added, plan.updated, plan.unchanged)
        result.removed, result.adopted = len(plan.removals), plan.adopted
        return result

    result = await storage.transaction(decide, f"bootstrap of library {library!r}")
    if wanted is not None:  # published something: its search vectors follow
        await workflows_changed(storage, saved=wanted.values(), deleted=removed, bulk=True)
        await prune_workflow_vectors(storage, [w.name for w in await storage.list_workflows()])
    return result


async def unpublish_library(storage: Storage, library: str) -> SyncResult:
    """Remove every workflow `library` owns and its record (the library was deleted)."""
    validate_library_name(library)

    async def decide(txn: StorageTransaction) -> SyncResult:
        record = await txn.get_library(library)
        owners = await txn.workflow_owners()
        owned = sorted(n for n, lib in owners.items() if lib == library)
        txn.apply_library(library, [], owned, None)
        return SyncResult(
            revision=record.revision if record else "",
            digest=record.digest if record else "",
            removed=len(owned),
            library=library,
            workspace_id=storage.workspace_id,
            deleted=True,
        )

    result = await storage.transaction(decide, f"removal of library {library!r}")
    await prune_workflow_vectors(storage, [w.name for w in await storage.list_workflows()])
    return result


async def sync_tools(storage: Storage, catalog: Catalog, revision: str, prune: bool) -> SyncResult:
    """Add and update (and with `prune` remove) tools in one atomic write."""

    async def decide(txn: StorageTransaction) -> SyncResult:
        current = await txn.list_tools()
        result = SyncResult(
            revision=revision,
            digest=catalog.digest,
            count=len(catalog),
            workspace_id=None,
            type="tools",
        )
        save: dict[str, str] = {}
        for name, text in sorted(catalog.texts.items()):
            value = stored_tool_value(text)
            if current.get(name) == value:
                result.unchanged += 1
                continue
            if name in current:
                result.updated += 1
            else:
                result.added += 1
            save[name] = value
        delete = sorted(set(current) - set(catalog.texts)) if prune else []
        result.removed = len(delete)
        if save or delete:
            txn.update_tools(save, delete)
        return result

    return await storage.transaction(decide, "tools sync")


async def sync_deps(storage: Storage, catalog: Catalog, revision: str, prune: bool) -> SyncResult:
    """Add (and with `prune` remove) package specs in one atomic write."""

    async def decide(txn: StorageTransaction) -> SyncResult:
        current = set(await txn.list_deps())
        result = SyncResult(
            revision=revision,
            digest=catalog.digest,
            count=len(catalog),
            workspace_id=None,
            type="deps",
        )
        add = sorted(set(catalog.texts) - current)
        remove = sorted(current - set(catalog.texts)) if prune else []
        result.unchanged = len(catalog) - len(add)
        result.added, result.removed = len(add), len(remove)
        if add or remove:
            txn.update_deps(add, remove)
        return result

    return await storage.transaction(decide, "deps sync")
