"""Hybrid ranking: lexical word matches plus the vector similarity above a per-query bar."""

from __future__ import annotations

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


def _lowered(key: tuple[str, str]) -> tuple[str, str]:
    """A document's name (underscores as spaces) and body as the word match reads them."""
    name, text = key
    return name.replace("_", " ").lower(), f"{name.lower()} {text.lower()}"


# Documents are mostly the same from one search to the next: lowered once.
_LOWERED: dict[tuple[str, str], tuple[str, str]] = {}
MAX_LOWERED = 20_000


def lexical(query: str, docs: Sequence[Document]) -> list[float]:
    """`tools.search_score(terms, name, name, text)` for each document (the same scores),
    with the query split once and each document's lowered text kept between searches."""
    words = [w for w in re.split(r"\W+", content_query(query).lower()) if w]
    if not words:
        return [0.0] * len(docs)
    if len(_LOWERED) > MAX_LOWERED:
        _LOWERED.clear()
    scale = 3.0 * len(words)
    scores = []
    for doc in docs:
        key = (doc.name, doc.text)
        lowered = _LOWERED.get(key)
        if lowered is None:
            lowered = _LOWERED[key] = _lowered(key)
        name, body = lowered
        score = 0.0
        for word in words:
            if word in name:
                score += 2.0
            if word in body:
                score += 1.0
        scores.append(score / scale)
    return scores


def rank(
    query: str,
    docs: Sequence[Document],
    similarities: Sequence[float] | None,
    bar: float,
    limit: int,
) -> list[str]:
    """Keys of the hits, best first. Without similarities (no model) a hit shares a word
    with the query; with them, a document whose similarity clears `bar` is one too."""
    lex = lexical(query, docs)
    scored: list[tuple[float, str, str]] = []
    for i, doc in enumerate(docs):
        semantic = 0.0
        if similarities is not None:
            semantic = min(1.0, max(0.0, (similarities[i] - bar) / VECTOR_SPAN))
            if similarities[i] <= bar and lex[i] <= 0:
                continue
        elif lex[i] <= 0:
            continue
        score = (1 - VECTOR_WEIGHT) * lex[i] + VECTOR_WEIGHT * semantic
        scored.append((-score, doc.name, doc.key))
    return [key for _, _, key in sorted(scored)[: max(0, limit)]]


def as_floats(values: Any) -> list[float]:
    return [float(v) for v in values]
