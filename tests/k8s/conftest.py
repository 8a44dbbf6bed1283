"""The k8s tier's `env`: per test module, a namespace watched by the real operator on the
control-plane cluster, with the session's loopback redis-server (tests/k8s/operator_env.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.cluster.pytest_plugin import Cluster
from tests.conftest import RedisServer
from tests.k8s.operator_env import Env, operator_env


@pytest.fixture(scope="module")
def env(
    k8s_cluster: Cluster,
    redis_server: RedisServer,
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Env]:
    module = request.module.__name__.rsplit(".", 1)[-1].removeprefix("test_")
    with operator_env(
        k8s_cluster,
        redis_server,
        request,
        tmp_path_factory.mktemp("operator"),
        f"t-{module.replace('_', '-')}"[:40],
        {"SESSION_POLL_SECONDS": "1", "LIBRARY_POLL_SECONDS": "1"},
    ) as made:
        yield made
