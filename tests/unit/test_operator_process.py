"""The operator process's resource bounds: API connection pool, list paging, allocator."""

from __future__ import annotations

import ctypes.util
from typing import Any

import pytest
from codemode_operator import allocator, api_session
from codemode_operator.kube import Kube


def test_connection_limit_covers_every_watch_plus_requests() -> None:
    one = api_session.connection_limit(1)
    assert one == api_session.WATCHED_KINDS + 4 + api_session.REQUEST_CONNECTIONS
    # cluster-wide (0 namespaces) needs as many watches as one namespace
    assert api_session.connection_limit(0) == one
    # each further namespace adds a watch per kind, never fewer request slots
    assert api_session.connection_limit(3) - one == 2 * api_session.WATCHED_KINDS
    assert api_session.connection_limit(1, requests=4) == one - 12


class PagedCustom:
    """CustomObjectsApi's list call answering `limit`/`_continue` like the API server."""

    def __init__(self, names: list[str]) -> None:
        self.names = names
        self.calls: list[dict[str, Any]] = []

    def list_namespaced_custom_object(
        self, group: str, version: str, namespace: str, plural: str, **kwargs: Any
    ) -> dict[str, Any]:
        self.calls.append(kwargs)
        start = int(kwargs.get("_continue", 0))
        end = start + kwargs["limit"]
        items = [{"metadata": {"name": n}} for n in self.names[start:end]]
        meta = {"continue": str(end)} if end < len(self.names) else {}
        return {"items": items, "metadata": meta}


def test_list_custom_pages_through_every_object() -> None:
    kube = Kube.__new__(Kube)
    fake = PagedCustom([f"s{i}" for i in range(450)])
    kube.custom = fake  # type: ignore[assignment]
    names = [o["metadata"]["name"] for o in kube.list_custom("codesessions", "ns", page=200)]
    assert names == fake.names
    assert [c["limit"] for c in fake.calls] == [200, 200, 200]
    assert [c.get("_continue") for c in fake.calls] == [None, "200", "400"]


def test_list_custom_of_nothing_is_one_call() -> None:
    kube = Kube.__new__(Kube)
    fake = PagedCustom([])
    kube.custom = fake  # type: ignore[assignment]
    assert list(kube.list_custom("codesessions", "ns")) == []
    assert len(fake.calls) == 1


def test_arena_cap_yields_to_an_explicit_environment() -> None:
    assert allocator.limit_arenas(env={"MALLOC_ARENA_MAX": "4"}) is False


@pytest.mark.skipif(not ctypes.util.find_library("c"), reason="no C library to configure")
def test_arena_cap_applies_on_glibc() -> None:
    assert allocator.limit_arenas(env={}) is True


class CountingKube:
    def __init__(self) -> None:
        self.reads = 0

    def get_custom(self, plural: str, namespace: str, name: str) -> dict[str, Any]:
        self.reads += 1
        return {"metadata": {"name": name}, "read": self.reads}


def test_watchdog_reads_a_workspace_once_per_ttl(monkeypatch: pytest.MonkeyPatch) -> None:
    from codemode_operator.reconcile import session as session_rec

    kube = CountingKube()
    now = [1000.0]
    monkeypatch.setattr(session_rec.time, "monotonic", lambda: now[0])
    monkeypatch.setattr(session_rec, "_workspaces", {})
    first = session_rec._recent_workspace(kube, "ns", "ws")  # type: ignore[arg-type]
    for _ in range(50):  # a thousand sessions' checks within the TTL: one read
        assert session_rec._recent_workspace(kube, "ns", "ws") is first  # type: ignore[arg-type]
    assert kube.reads == 1
    now[0] += session_rec.WORKSPACE_TTL_SECONDS + 0.1
    assert session_rec._recent_workspace(kube, "ns", "ws")["read"] == 2  # type: ignore[arg-type,index]
    # the create path always reads, and refreshes what the watchdog sees
    session_rec._read_workspace(kube, "ns", "ws")  # type: ignore[arg-type]
    assert session_rec._recent_workspace(kube, "ns", "ws")["read"] == 3  # type: ignore[arg-type,index]
