"""The one search behind `workflows.search`, `tools.search`, `/api/workflows/search` and
`/api/tools/search`, and the upkeep of its vectors on create, delete and bootstrap.

Vectors live in three layers: this process's memory (a search embeds nothing it has
seen), the storage's cache (search/vectors.py, shared by every server and the store
CLI of the workspace), and the model, for a text neither has. Embedding runs in a
thread: a search never stalls the server's event loop for longer than a read.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import time
from collections.abc import Collection, Iterable, Mapping
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any

from codemode_session.errors import CodemodeError
from codemode_session.search import pool, vectors
from codemode_session.search.embedder import Embedder, get_embedder
from codemode_session.search.ranking import Document, Index
from codemode_session.storage.base import Storage
from codemode_session.tools import AnyToolSpec
from codemode_session.workflow_model import Workflow

log = logging.getLogger(__name__)

# (storage description, index) -> name -> (content hash, vector, the text it is of)
_memory: dict[tuple[str, str], dict[str, tuple[str, Any, str]]] = {}


def _clean(text: str) -> str:
    """Text as the model and the hash take it: stored text that is not Unicode (another
    client's bytes) has its undecodable parts replaced."""
    return text.encode("utf-8", "replace").decode()


def workflow_text(workflow: Workflow) -> str:
    """What a workflow is found by: its name and description (parameters made recall
    worse on tests/search_quality.py)."""
    return _clean(f"{workflow.name.replace('_', ' ')}. {workflow.description}")


def tool_text(spec: AnyToolSpec) -> str:
    return _clean(f"{spec.name.replace('_', ' ')}. {spec.search_text()}")


def content_hash(model: str, text: str) -> str:
    return hashlib.sha256(f"{model}\n{text}".encode()).hexdigest()[:32]


async def _vectors(
    storage: Storage,
    index: str,
    texts: Mapping[str, str],
    embedder: Embedder,
    bulk: bool = False,
) -> dict[str, Any]:
    """A vector for every text: from memory, else the storage's cache, else the model
    (then written to the cache). Memory forgets names that are gone. `bulk` (a
    bootstrap) spreads the model's work over processes (search/pool.py) and writes
    the cache chunk by chunk as they finish."""
    import numpy as np

    memory = _memory.setdefault((storage.description, index), {})
    for name in set(memory) - set(texts):
        del memory[name]
    # A text as it was last time keeps its hash and vector (no sha256 of 5,000 texts a search).
    hashes = {
        name: memory[name][0]
        if name in memory and memory[name][2] == text
        else content_hash(embedder.name, text)
        for name, text in texts.items()
    }
    found = {n: memory[n][1] for n, h in hashes.items() if n in memory and memory[n][0] == h}
    # Only names of the shapes we write are cached (another client's odd name is embedded
    # for this search and kept in memory only).
    missing = [n for n in texts if n not in found and vectors.NAME_RE.match(n)]
    store = vectors.vector_store(storage, index)
    if missing and store is not None:
        for name, record in (await _guarded(store.get(missing), {})).items():
            parts = vectors.decode(record)
            if parts is None or parts[:2] != (embedder.name, hashes[name]):
                continue
            vector = np.frombuffer(parts[2], dtype=np.float32)
            if vector.shape == (embedder.dimension,):
                found[name] = vector
                memory[name] = (hashes[name], vector, texts[name])
    todo = [n for n in texts if n not in found]
    if not todo:
        return found

    async def keep(names: list[str], embedded: Any) -> None:
        records: dict[str, bytes] = {}
        for name, vector in zip(names, embedded, strict=True):
            vector = np.ascontiguousarray(vector, dtype=np.float32)
            found[name] = vector
            memory[name] = (hashes[name], vector, texts[name])
            if vectors.NAME_RE.match(name):
                records[name] = vectors.encode(embedder.name, hashes[name], vector.tobytes())
        if store is not None and records:
            await _guarded(store.put(records), None)

    if not bulk:
        await keep(todo, await asyncio.to_thread(embedder.documents, [texts[n] for n in todo]))
        return found
    async with aclosing(pool.embed_chunks([texts[n] for n in todo], embedder)) as chunks:
        async for start, embedded in chunks:
            await keep(todo[start : start + len(embedded)], embedded)
    return found


async def _guarded(call: Any, default: Any) -> Any:
    """The cache is a cache: a storage error is logged and the search goes on without it."""
    try:
        return await call
    except (CodemodeError, OSError, ValueError) as exc:
        log.warning("vector cache unavailable: %s", exc)
        return default
    except Exception as exc:  # redis-py's own errors, when the storage layer did not map them
        log.warning("vector cache unavailable: %s", exc)
        return default


@dataclass
class _Built:
    """An index and what it was built from: its documents' (key, text) pairs and the
    model, so it is rebuilt only when one of them changes."""

    index: Index
    texts: tuple[tuple[str, str], ...]
    model: str | None
    items: Mapping[str, Any] = field(default_factory=dict)
    read_at: float = 0.0


# (storage description, index name) -> the index last built for it.
_indexes: dict[tuple[str, str], _Built] = {}
# How long this server answers workflow searches from its index before it lists the
# workspace's workflows again (reading 5,000 workflows takes 15-40 ms here, more than
# the rest of a search): another writer's change shows within this time; this server's
# own creates, deletes and bootstraps go through workflows_changed and show at once.
REFRESH_ENV = "CODEMODE_SEARCH_REFRESH_SECONDS"
DEFAULT_REFRESH = 1.0


def _refresh_seconds() -> float:
    try:
        return max(0.0, float(os.environ.get(REFRESH_ENV) or DEFAULT_REFRESH))
    except ValueError:
        return DEFAULT_REFRESH


async def _built(
    storage: Storage, name: str, docs: list[Document], items: Mapping[str, Any]
) -> _Built:
    """The index of `docs`: the last one built when nothing changed, else a new one
    (its vectors from memory, the storage's cache or the model, in one matrix)."""
    embedder = get_embedder()
    model = embedder.name if embedder is not None else None
    texts = tuple((d.key, d.text) for d in docs)
    key = (storage.description, name)
    last = _indexes.get(key)
    if last is not None and last.texts == texts and last.model == model:
        last.items = items
        return last
    matrix = None
    if embedder is not None and docs:
        import numpy as np

        found = await _vectors(storage, name, {d.key: d.text for d in docs}, embedder)
        matrix = np.stack([found[d.key] for d in docs])
    built = _indexes[key] = _Built(Index(docs, matrix), texts, model, items)
    return built


async def _ranked(built: _Built, query: str, limit: int) -> list[str]:
    embedder = get_embedder()
    index = built.index
    if embedder is None or built.model != embedder.name or not index or limit <= 0:
        return index.rank(query, None, 0.0, limit)
    if not query.strip():
        return index.rank(query, None, 0.0, limit)
    q = await asyncio.to_thread(embedder.query, query)
    bar = float(embedder.background_max(q))
    return index.rank(query, q, bar, limit)


# A workflow's search text, by its name and description (most are the same each search).
_TEXTS: dict[tuple[str, str], str] = {}
MAX_TEXTS = 20_000


def _workflow_text(workflow: Workflow) -> str:
    key = (workflow.name, workflow.description)
    found = _TEXTS.get(key)
    if found is None:
        if len(_TEXTS) > MAX_TEXTS:
            _TEXTS.clear()
        found = _TEXTS[key] = workflow_text(workflow)
    return found


# Bumped by each write this process makes: a listing read before it is not fresh.
_generation: dict[str, int] = {}


def _stale(storage: Storage) -> None:
    """The next search lists the workflows again (and rebuilds only if they changed)."""
    _generation[storage.description] = _generation.get(storage.description, 0) + 1
    last = _indexes.get((storage.description, vectors.WORKFLOWS))
    if last is not None:
        last.read_at = 0.0


# Background re-listings under way, by storage description (one at a time each).
_relisting: dict[str, asyncio.Task[_Built]] = {}


async def _workflow_index(storage: Storage) -> _Built:
    """The index to search: the last one while it is younger than the refresh time; up
    to twice that age, the last one too while one background task lists the workflows
    again (the listing, 15-40 ms here, is then on no search's path); else (an older one,
    or one this server's own write made stale) listed again now."""
    last = _indexes.get((storage.description, vectors.WORKFLOWS))
    if last is not None and last.read_at > 0:
        age, refresh = time.monotonic() - last.read_at, _refresh_seconds()
        if age < refresh:
            return last
        if age < 2 * refresh:
            _relist_soon(storage)
            return last
    return await _relist(storage)


def _relist_soon(storage: Storage) -> None:
    if storage.description in _relisting:
        return
    task = asyncio.get_running_loop().create_task(_relist(storage))
    _relisting[storage.description] = task

    def done(finished: asyncio.Task[_Built]) -> None:
        _relisting.pop(storage.description, None)
        if not finished.cancelled() and finished.exception() is not None:
            # The next search lists again inline (and answers the error, if it lasts).
            log.warning("search index not refreshed: %s", finished.exception())

    task.add_done_callback(done)


async def _relist(storage: Storage) -> _Built:
    generation = _generation.get(storage.description, 0)
    read_at = time.monotonic()
    workflows = {w.name: w for w in await storage.list_workflows()}
    docs = [Document(w.name, w.name, _workflow_text(w)) for w in workflows.values()]
    built = await _built(storage, vectors.WORKFLOWS, docs, workflows)
    if _generation.get(storage.description, 0) == generation:
        built.read_at = read_at
    return built


async def search_workflows(storage: Storage, query: str, limit: int = 10) -> list[Workflow]:
    built = await _workflow_index(storage)
    return [built.items[k] for k in await _ranked(built, query, limit)]


async def search_tools(
    storage: Storage, specs: Mapping[str, AnyToolSpec], query: str, limit: int = 10
) -> list[AnyToolSpec]:
    docs = [Document(s.name, s.name, tool_text(s)) for s in specs.values()]
    built = await _built(storage, vectors.TOOLS, docs, specs)
    return [specs[k] for k in await _ranked(built, query, limit)]


async def workflows_changed(
    storage: Storage,
    saved: Iterable[Workflow] = (),
    deleted: Collection[str] = (),
    bulk: bool = False,
) -> None:
    """Keep the workflow vectors in step with a create, delete or bootstrap: new texts
    are embedded now (not by the next search), deleted names leave the cache; `bulk`
    (a bootstrap: no query waits on this process) over several processes. Never fails
    the write it follows: a vector missed here is made by the next search."""
    try:
        await _workflows_changed(storage, saved, deleted, bulk)
    except Exception:
        log.exception("search vectors not updated")


async def _workflows_changed(
    storage: Storage, saved: Iterable[Workflow], deleted: Collection[str], bulk: bool
) -> None:
    _stale(storage)
    store = vectors.vector_store(storage, vectors.WORKFLOWS)
    memory = _memory.get((storage.description, vectors.WORKFLOWS), {})
    for name in deleted:
        memory.pop(name, None)
    cached = [n for n in deleted if vectors.NAME_RE.match(n)]
    if store is not None and cached:
        await _guarded(store.delete(cached), None)
    embedder = get_embedder()
    texts = {w.name: workflow_text(w) for w in saved}
    if embedder is not None and texts:
        await _vectors_only(storage, texts, embedder, bulk)


async def _vectors_only(
    storage: Storage, texts: Mapping[str, str], embedder: Embedder, bulk: bool
) -> None:
    """_vectors for some names, keeping what memory holds for the others."""
    key = (storage.description, vectors.WORKFLOWS)
    kept = dict(_memory.get(key, {}))
    await _vectors(storage, vectors.WORKFLOWS, texts, embedder, bulk)
    _memory[key] = {**kept, **_memory.get(key, {})}


async def prune_workflow_vectors(storage: Storage, keep: Collection[str]) -> int:
    """Drop cached vectors of workflows that no longer exist (after a bootstrap)."""
    store = vectors.vector_store(storage, vectors.WORKFLOWS)
    if store is None:
        return 0
    stale = await _guarded(store.names(), set()) - set(keep)
    if stale:
        await _guarded(store.delete(stale), None)
    return len(stale)
