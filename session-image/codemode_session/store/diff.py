"""Compare a source catalog with what storage holds, the way bootstrap would see it.

With a library, only workflows that library owns can show as removed (those
are what a pruning bootstrap would delete); without one, everything the
target holds that the source lacks does.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from codemode_session.storage import Storage
from codemode_session.store.catalog import Catalog, Kind, parse_workflows
from codemode_session.store.pull import stored_workflows
from codemode_session.tools import stored_tool_value


@dataclass
class Diff:
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)

    @property
    def differs(self) -> bool:
        return bool(self.added or self.removed or self.changed)

    def to_dict(self) -> dict[str, list[str]]:
        return {
            "added": self.added,
            "removed": self.removed,
            "changed": self.changed,
            "unchanged": self.unchanged,
        }

    def lines(self) -> list[str]:
        marked = [("+", n) for n in self.added] + [("-", n) for n in self.removed]
        marked += [("~", n) for n in self.changed] + [("=", n) for n in self.unchanged]
        return [f"{mark} {name}" for mark, name in sorted(marked, key=lambda m: (m[1], m[0]))]


def comparable_source(catalog: Catalog) -> dict[str, str]:
    """name -> the text storage would hold after a bootstrap (validates workflows)."""
    if catalog.kind == "workflows":
        return {n: w.to_json() for n, w in parse_workflows(catalog).items()}
    if catalog.kind == "tools":
        return {n: stored_tool_value(t) for n, t in catalog.texts.items()}
    return dict(catalog.texts)


async def comparable_target(storage: Storage, kind: Kind) -> dict[str, str]:
    if kind == "workflows":
        return {w.name: w.to_json() for w in await stored_workflows(storage)}
    if kind == "tools":  # older values are YAML: compared as what a bootstrap would write
        return {n: stored_tool_value(t) for n, t in (await storage.list_tools()).items()}
    return {spec: spec for spec in await storage.list_deps()}


async def diff_catalog(storage: Storage, catalog: Catalog, library: str | None = None) -> Diff:
    source = comparable_source(catalog)
    target = await comparable_target(storage, catalog.kind)
    removable = set(target)
    if library is not None and catalog.kind == "workflows":
        owners = await storage.workflow_owners()
        removable = {n for n, lib in owners.items() if lib == library} & set(target)
    diff = Diff()
    for name in sorted(source):
        if name not in target:
            diff.added.append(name)
        elif target[name] == source[name]:
            diff.unchanged.append(name)
        else:
            diff.changed.append(name)
    diff.removed = sorted(removable - set(source))
    return diff
