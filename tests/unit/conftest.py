"""Fixtures shared by the operator's fast tier (tests/unit/test_reconcile_*.py)."""

from __future__ import annotations

import pytest
from codemode_operator.reconcile import session as session_rec

from tests.unit.fake_kube import Events, FakeKube, workspace


@pytest.fixture
def fresh_caches(monkeypatch: pytest.MonkeyPatch) -> None:
    """The session reconciler's module caches, empty for each test."""
    monkeypatch.setattr(session_rec, "_admitted", {})
    monkeypatch.setattr(session_rec, "_workspaces", {})


@pytest.fixture
def kube() -> FakeKube:
    """A fake API holding one Ready-able Workspace."""
    fake = FakeKube()
    fake.put("workspaces", workspace())
    return fake


@pytest.fixture
def events() -> Events:
    return []
