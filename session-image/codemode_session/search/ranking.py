"""Hybrid ranking: lexical word matches plus the vector similarity above a per-query bar."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from codemode_session.tools import search_score

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


def lexical(query: str, docs: Sequence[Document]) -> list[float]:
    terms = content_query(query)
    return [search_score(terms, d.name.replace("_", " "), d.name, d.text) for d in docs]


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
