"""The lexical half of search, kept fast (the query split once, documents lowered once
between searches) and scoring exactly as `tools.search_score` always did."""

from __future__ import annotations

import random

from codemode_session.search.ranking import Document, content_query, lexical
from codemode_session.tools import search_score

WORDS = [
    "count",
    "Words",
    "report",
    "sentiment",
    "Happy_Path",
    "csv",
    "parse",
    "fetch",
    "url",
    "the",
    "of",
    "and",
    "X-Ray",
]


def _text(rng: random.Random) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(0, 8)))


def test_scores_are_search_scores() -> None:
    rng = random.Random(7)
    docs = [Document(f"k{i}", rng.choice(WORDS).lower() + f"_{i}", _text(rng)) for i in range(300)]
    for _ in range(50):
        query = _text(rng)
        terms = content_query(query)
        expected = [search_score(terms, d.name.replace("_", " "), d.name, d.text) for d in docs]
        assert lexical(query, docs) == expected
        assert lexical(query, docs) == expected  # the second time from the lowered cache
