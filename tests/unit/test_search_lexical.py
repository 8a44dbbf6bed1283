"""The ranking of search: the lexical half scores exactly as `tools.search_score` always
did (now by one substring scan of all documents per query word), and the vector half
lets in what is close to a query that means something."""

from __future__ import annotations

import random

from codemode_session.search.ranking import Document, content_query, lexical, rank
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


def test_without_vectors_hits_rank_by_score_then_name() -> None:
    rng = random.Random(11)
    docs = [Document(f"k{i}", rng.choice(WORDS).lower() + f"_{i}", _text(rng)) for i in range(200)]
    for _ in range(30):
        query = _text(rng)
        scores = lexical(query, docs)
        expected = sorted((-s, d.name) for s, d in zip(scores, docs, strict=True) if s > 0)
        by_name = {d.name: d.key for d in docs}
        assert rank(query, docs, None, 0.0, 7) == [by_name[n] for _, n in expected[:7]]


def test_a_meaningful_query_lets_in_documents_just_below_its_bar() -> None:
    docs = [Document(n, n, n) for n in ("alpha", "beta", "gamma")]
    # beta clears the bar, so the query means something: alpha, just below it, counts
    # too; gamma, far below, does not.
    assert rank("zzz", docs, [0.79, 0.85, 0.6], 0.8, 3) == ["beta", "alpha"]
    # Nothing clears the bar: nothing is found, however close.
    assert rank("zzz", docs, [0.79, 0.78, 0.6], 0.8, 3) == []
