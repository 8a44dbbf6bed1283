"""Stored records parsed once: a listing of 5,000 workflows re-read from Redis on every
search spent most of its time decoding the same JSON again. The memo is keyed by the
stored bytes themselves, so a record another client changed is a new key (parsed anew)
and nothing can be stale; it is bounded, dropping the oldest entries first."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")
MAX_ENTRIES = 20_000


class ParseMemo(Generic[T]):
    def __init__(self, parse: Callable[[bytes | str], T], max_entries: int = MAX_ENTRIES) -> None:
        self._parse = parse
        self._max = max_entries
        self._seen: OrderedDict[bytes | str, T] = OrderedDict()

    def __call__(self, raw: bytes | str) -> T:
        try:
            found = self._seen[raw]
        except KeyError:
            found = self._seen[raw] = self._parse(raw)  # may raise: nothing is kept then
            if len(self._seen) > self._max:
                self._seen.popitem(last=False)
        return found
