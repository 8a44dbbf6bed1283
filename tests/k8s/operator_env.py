"""One namespace watched by the real operator (a `python -m codemode_operator` subprocess on
this host), with a Redis it can reach, and the helpers the operator tests use on it.

`operator_env()` makes one: a fresh namespace, the CRDs, the operator watching only that
namespace, and at the end every CR deleted (the operator removes its finalizers first) and
the operator stopped, its log printed if a test of the scope failed. The k8s tier's `env`
fixture (tests/k8s/conftest.py) is one per test module on the control-plane cluster; the
e2e tier makes its own on the node cluster, with a Redis that pods reach.
"""

from __future__ import annotations

import base64
import contextlib
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import pytest
from kubernetes import client
from redis import Redis

from tests.cluster.pytest_plugin import Cluster
from tests.k8s.operator_fixture import (
    GROUP,
    VERSION,
    Kinds,
    OperatorProcess,
    install_crds,
    report_log_on_failure,
    stays_true_for,
    temp_namespace,
    wait_for,
)

PLURALS = ("codesessions", "workflowlibraries", "workspaces")


class AdminRedis(Protocol):
    """A Redis the operator reaches with its admin URL (tests.conftest.RedisServer on
    loopback, or tests.e2e.hostredis.HostRedis where pods reach it too)."""

    @property
    def port(self) -> int: ...

    @property
    def url(self) -> str: ...


@dataclass
class Env:
    cluster: Cluster
    api: Any
    kinds: Kinds
    core: Any
    batch: Any
    net: Any
    op: OperatorProcess
    redis: AdminRedis

    @property
    def ns(self) -> str:
        return self.kinds.namespace

    def wait(self, predicate: Any, timeout: float, what: str) -> Any:
        return wait_for(predicate, timeout, what, op=self.op)

    def stays(self, predicate: Any, seconds: float, what: str) -> None:
        """A negative check: `predicate` keeps holding for `seconds` (fails at once if not)."""
        stays_true_for(predicate, seconds, what, op=self.op)

    def workspace(self, name: str, **spec: Any) -> dict[str, Any]:
        body: dict[str, Any] = {
            "redis": {"url": self.redis.url},
            "prefix": f"t{uuid.uuid4().hex[:10]}",
            **spec,
        }
        self.kinds.create("workspaces", name, body)
        return body

    def ready(self, plural: str, name: str, timeout: float = 30) -> dict[str, Any]:
        self.wait(
            lambda: self.kinds.condition(plural, name, "Ready").get("status") == "True",
            timeout,
            f"{plural}/{name} Ready",
        )
        return self.kinds.status(plural, name)

    def phase(self, name: str, phase: str, timeout: float = 30) -> dict[str, Any]:
        self.wait(
            lambda: self.kinds.status("codesessions", name).get("phase") == phase,
            timeout,
            f"codesession/{name} phase {phase}",
        )
        return self.kinds.status("codesessions", name)

    def secret(self, name: str) -> dict[str, str]:
        data = self.core.read_namespaced_secret(name, self.ns).data or {}
        return {k: base64.b64decode(v).decode() for k, v in data.items()}

    def pod(self, name: str) -> Any | None:
        try:
            return self.core.read_namespaced_pod(name, self.ns)
        except client.ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def gone(self, plural: str, name: str, timeout: float = 30) -> None:
        self.wait(lambda: self.kinds.get(plural, name) is None, timeout, f"{plural}/{name} gone")

    def admin(self) -> Redis:
        return Redis.from_url(self.redis.url)


@contextlib.contextmanager
def operator_env(
    cluster: Cluster,
    admin_redis: AdminRedis,
    request: pytest.FixtureRequest,
    log_dir: Path,
    namespace_base: str,
    operator_vars: Mapping[str, str],
) -> Iterator[Env]:
    """A fresh namespace watched by the operator (run with `operator_vars` added to its
    environment); everything in it is released and the operator stopped afterwards."""
    api = cluster.api_client()
    install_crds(cluster.kubeconfig, api)
    failed_before = request.session.testsfailed
    with temp_namespace(api, namespace_base) as ns:
        op = OperatorProcess(cluster.kubeconfig, [ns], operator_vars, log_dir=log_dir)
        op.start().wait_started()
        kinds = Kinds(api, ns)
        try:
            yield Env(
                cluster,
                api,
                kinds,
                client.CoreV1Api(api),
                client.BatchV1Api(api),
                client.NetworkingV1Api(api),
                op,
                admin_redis,
            )
        finally:
            _release(kinds)
            op.stop()
            report_log_on_failure(request, op, failed_before)


def _names(kinds: Kinds, plural: str) -> list[str]:
    listed: Any = kinds.custom.list_namespaced_custom_object(
        GROUP, VERSION, kinds.namespace, plural
    )
    return [o["metadata"]["name"] for o in listed["items"]]


def _release(kinds: Kinds) -> None:
    """Delete every CR of the namespace and let the running operator remove its finalizers."""
    for plural in PLURALS:
        for name in _names(kinds, plural):
            if plural == "workspaces":
                kinds.patch(plural, name, {"spec": {"deletionPolicy": "Cascade"}})
            kinds.delete(plural, name)

    def leftovers() -> list[tuple[str, str]]:
        return [(plural, name) for plural in PLURALS for name in _names(kinds, plural)]

    try:
        wait_for(lambda: not leftovers(), 30, "operator released its objects")
    except AssertionError:
        # e.g. a Workspace whose Redis is unreachable keeps retrying its cleanup
        for plural, name in leftovers():
            kinds.patch(plural, name, {"metadata": {"finalizers": None}})
