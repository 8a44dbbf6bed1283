"""Hybrid ranking: lexical word matches plus the vector similarity, gated per query.

A search runs over an `Index` built once per set of documents (search/service.py keeps
it between searches), so it costs a few substring scans of one joined text and one
matrix-vector product, not a Python loop over every document.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

# Words that match everything and mean nothing to a search.
_STOPWORDS = """a an and are as at be by can do does for from how i in is it me my of on or
so that the this to was what when where which who why will with you your"""
STOPWORDS = frozenset(_STOPWORDS.split())
VECTOR_WEIGHT = 0.6
# Similarity above the query's bar that counts as a full match (e5's band is narrow).
VECTOR_SPAN = 0.08
# Once a query clears its bar (some document is closer to it than any unrelated phrase
# is), documents this far below the bar still count: on tests/search_quality.py the
# right workflow sat up to 0.055 below it (6 of 52) while the query, as a whole, cleared
# it; gibberish ("zzzz-qqqq") does not clear it at all, so it still finds nothing.
BELOW_BAR = 0.06


@dataclass(frozen=True)
class Document:
    key: str
    name: str
    text: str


def content_query(query: str) -> str:
    """The query without stop words (all of it when nothing else is left)."""
    words = [w for w in re.split(r"\W+", query.lower()) if w]
    kept = [w for w in words if w not in STOPWORDS and len(w) > 1]
    return " ".join(kept or words)


def query_words(query: str) -> list[str]:
    return [w for w in re.split(r"\W+", content_query(query).lower()) if w]


def _lowered(name: str, text: str) -> tuple[str, str]:
    """A document's name (underscores as spaces) and body as the word match reads them."""
    return name.replace("_", " ").lower(), f"{name.lower()} {text.lower()}"


class _Joined:
    """Texts joined by a newline: a query word is made of word characters only, so a
    match never spans two texts, and one regex scan (C speed) finds every text that
    contains the word. Pure Python: lexical search needs no numpy (no search extra)."""

    def __init__(self, texts: Sequence[str]) -> None:
        self.text = "\n".join(texts)
        self.starts: list[int] = []
        at = 0
        for text in texts:
            self.starts.append(at)
            at += len(text) + 1

    def containing(self, word: str) -> set[int]:
        """Positions of the texts that contain `word` (as a substring, like `in`)."""
        found: set[int] = set()
        starts, last = self.starts, -1
        for match in re.finditer(re.escape(word), self.text):
            at = match.start()
            if last >= 0 and at < (starts[last + 1] if last + 1 < len(starts) else at + 1):
                continue  # this text is already found
            last = bisect.bisect_right(starts, at) - 1
            found.add(last)
        return found


class Index:
    """Documents ready to rank: lowered and joined once, in name order (ties rank by
    name), with their vectors as one float32 matrix when the model is there."""

    def __init__(self, docs: Sequence[Document], matrix: Any = None) -> None:
        order = sorted(range(len(docs)), key=lambda i: (docs[i].name, docs[i].key))
        self.docs = [docs[i] for i in order]
        self.matrix = None if matrix is None else matrix[order]
        lowered = [_lowered(d.name, d.text) for d in self.docs]
        self._names = _Joined([n for n, _ in lowered])
        self._bodies = _Joined([b for _, b in lowered])

    def __len__(self) -> int:
        return len(self.docs)

    def lexical(self, query: str) -> dict[int, float]:
        """`tools.search_score(terms, name, name, text)` of the documents that score
        (by position): 2 per query word in the name, 1 per word in name or text, over
        3 per word."""
        words = query_words(query)
        scores: dict[int, float] = {}
        if not words or not self.docs:
            return scores
        for word in dict.fromkeys(words):
            times = words.count(word)
            for i in self._names.containing(word):
                scores[i] = scores.get(i, 0.0) + 2.0 * times
            for i in self._bodies.containing(word):
                scores[i] = scores.get(i, 0.0) + 1.0 * times
        scale = 3.0 * len(words)
        return {i: score / scale for i, score in scores.items()}

    def rank(self, query: str, vector: Any = None, bar: float = 0.0, limit: int = 10) -> list[str]:
        """Keys of the hits, best first. Without a query vector (no model) a hit shares a
        word with the query. With one, a query that some document is closer to than
        `bar` is a meaningful one: then documents within BELOW_BAR of the bar are hits
        too, ranked by lexical and vector scores together."""
        if limit <= 0 or not self.docs:
            return []
        lex = self.lexical(query)
        if vector is None or self.matrix is None:
            found = sorted(lex, key=lambda i: (-lex[i], i))[:limit]
            return [self.docs[i].key for i in found]
        import numpy as np

        sims = self.matrix @ vector
        semantic = np.clip((sims - bar) / VECTOR_SPAN, 0.0, 1.0)
        # Below the bar a document still ranks by how close it is (not by name).
        score = VECTOR_WEIGHT * semantic + 1e-3 * sims
        hit = sims > (bar - BELOW_BAR if bool(sims.max() > bar) else bar)
        if lex:
            at = np.fromiter(lex, dtype=np.int64, count=len(lex))
            score[at] += (1 - VECTOR_WEIGHT) * np.fromiter(lex.values(), np.float64, len(lex))
            hit[at] = True
        candidates = np.flatnonzero(hit)
        best = candidates[np.argsort(-score[candidates], kind="stable")][:limit]
        return [self.docs[i].key for i in best]


def lexical(query: str, docs: Sequence[Document]) -> list[float]:
    """The lexical score of each of `docs` (in their order), as `tools.search_score`."""
    index = Index(docs)
    scores = index.lexical(query)
    by_key = {d.key: scores.get(i, 0.0) for i, d in enumerate(index.docs)}
    return [by_key[d.key] for d in docs]


def rank(
    query: str,
    docs: Sequence[Document],
    similarities: Sequence[float] | None,
    bar: float,
    limit: int,
) -> list[str]:
    """`Index.rank` over `docs` with precomputed similarities (tests, bench)."""
    import numpy as np

    if similarities is None:
        return Index(docs).rank(query, None, bar, limit)
    # Similarities as a one-column matrix against the vector [1]: the same arithmetic.
    matrix = np.asarray(similarities, dtype=np.float64).reshape(-1, 1)
    return Index(docs, matrix).rank(query, np.ones(1), bar, limit)


def as_floats(values: Any) -> list[float]:
    return [float(v) for v in values]
