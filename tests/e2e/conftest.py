"""Fixtures shared by e2e test modules."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.e2e import hostredis


@pytest.fixture(scope="module")
def host_redis() -> Iterator[hostredis.HostRedis]:
    """redis-server on this host, where pods reach it (the node's host address), with an
    admin password; one per test module."""
    with hostredis.host_redis("e2e-admin-secret") as server:
        yield server
