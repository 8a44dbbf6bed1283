"""The whole path on a real node: operator, Workspaces, a WorkflowLibrary from a local
git server, CodeSession pods of our image, code that invokes a library workflow and
saves an artifact, a second session that reads it, and a session of another
workspace that cannot; its agent code holds no Redis credentials, and even its
workspace's Redis user cannot reach the first workspace's keys with raw commands."""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from codemode_operator.sessions import Sessions

from tests.cluster.layout import NODE_HOST_IP
from tests.cluster.pytest_plugin import Cluster
from tests.e2e.host_operator import admin_secret, host_operator, workspace_spec
from tests.e2e.hostredis import HostRedis
from tests.integration.gitserver import GitHTTPServer, GitRepo
from tests.k8s.operator_fixture import Kinds, install_crds, wait_for

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def library_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """examples/workflows in a git repository behind a token-protected HTTP server."""
    base = tmp_path_factory.mktemp("git")
    repo = GitRepo(base / "work")
    repo.write(
        {p.name: p.read_text() for p in (ROOT / "examples" / "workflows").glob("*.py")},
        sub="workflows",
    )
    repo.commit("sample workflows")
    served = base / "served"
    served.mkdir()
    repo.bare_copy(served / "workflows.git")
    with GitHTTPServer(served, token="git-token", host=NODE_HOST_IP) as server:
        yield server.url("workflows.git")


def _ready(kinds: Kinds, plural: str, name: str) -> dict[str, Any] | None:
    obj = kinds.get(plural, name)
    conds = ((obj or {}).get("status") or {}).get("conditions") or []
    return (
        obj if any(c.get("type") == "Ready" and c.get("status") == "True" for c in conds) else None
    )


def test_library_sessions_and_isolation(
    cluster: Cluster,
    namespace: str,
    project_images: dict[str, str],
    host_redis: HostRedis,
    library_url: str,
    tmp_path: Path,
) -> None:
    api = cluster.api_client()
    install_crds(cluster.kubeconfig, api)
    kinds = Kinds(api, namespace)
    redis_ref = admin_secret(kinds, host_redis.url)
    kinds.core.create_namespaced_secret(
        namespace, {"metadata": {"name": "git-auth"}, "stringData": {"token": "git-token"}}
    )
    operator = host_operator(
        cluster, namespace, project_images["session"], tmp_path, LIBRARY_POLL_SECONDS="2"
    )
    with operator:
        for ws in ("client-a", "client-b"):
            kinds.create("workspaces", ws, workspace_spec(redis_ref))
        kinds.create(
            "workflowlibraries",
            "team",
            {
                "workspaceRef": "client-a",
                "source": {
                    "url": library_url,
                    "ref": {"branch": "main"},
                    "path": "workflows",
                    "secretRef": {"name": "git-auth"},
                },
                "interval": "10m",
            },
        )
        for name, ws in (("a1", "client-a"), ("a2", "client-a"), ("b1", "client-b")):
            kinds.create("codesessions", name, {"workspaceRef": ws})

        library = wait_for(
            lambda: _ready(kinds, "workflowlibraries", "team"), 180, "library synced", op=operator
        )
        assert library["status"]["artifact"]["count"] == 2
        assert library["status"]["added"] == 2
        for name in ("a1", "a2", "b1"):
            wait_for(
                lambda n=name: _ready(kinds, "codesessions", n),
                180,  # type: ignore[misc]
                f"session {name} Ready",
                op=operator,
            )

        sessions = Sessions(namespace=namespace, api=api)
        try:
            with sessions.connect("a1") as a1:
                result = a1.execute(
                    'top = workflows.top_words(text="b a b c b a", n=2)\n'
                    'artifacts.save("report", {"top": top}, description="from a1")\n'
                    "top"
                )
                assert result.error is None, result.error
                assert result.value == ["b", "a"]
            with sessions.connect("a2") as a2:
                shared = a2.execute('artifacts.load("report")')
                assert shared.error is None and shared.value == {"top": ["b", "a"]}
                names = a2.execute("sorted(w['name'] for w in workflows.list())")
                assert names.value == ["top_words", "word_count"]
            with sessions.connect("b1") as b1:
                assert b1.execute('artifacts.exists("report")').value is False
                assert b1.execute("workflows.list()").value == []
                # Agent code holds no storage credentials (the server brokers storage)...
                env = b1.execute(
                    "import os\n"
                    "sorted(k for k, v in os.environ.items()\n"
                    "       if k in ('REDIS_URL', 'STORAGE_DIR', 'CONTAINER_AUTH_TOKEN')\n"
                    "       or 'redis://' in v or 'rediss://' in v)"
                )
                assert env.error is None, env.error
                assert env.value == [], f"agent code sees credentials: {env.value}"
        finally:
            sessions.close()

        # ...and whoever holds the workspace's Redis user (its Secret) cannot reach
        # another workspace's keys or list the keyspace with raw commands.
        scoped: Any = kinds.core.read_namespaced_secret("client-b-redis", namespace)
        as_b = redis.Redis.from_url(base64.b64decode(scoped.data["url"]).decode(), socket_timeout=5)
        attacks: dict[str, Callable[[], Any]] = {
            "get": lambda: as_b.get("codemode:ws:client-a:artifacts:report"),
            "hgetall": lambda: as_b.hgetall("codemode:ws:client-a:workflows:__workflows__"),
            "keys": lambda: as_b.keys("*"),
            "scan": lambda: as_b.scan(0),
            "flushall": lambda: as_b.flushall(),
            "acl": lambda: as_b.acl_list(),
        }
        for label, call in attacks.items():
            try:
                outcome = f"ALLOWED {call()!r}"
            except redis.RedisError as exc:
                outcome = f"DENIED {type(exc).__name__} {exc}"
            assert "NOPERM" in outcome.upper() or "permission" in outcome.lower(), (label, outcome)
        as_b.close()

        admin = redis.Redis.from_url(host_redis.url.replace(NODE_HOST_IP, "127.0.0.1"))
        assert admin.exists("codemode:ws:client-a:artifacts:report") == 1
        assert admin.hget("codemode:ws:client-a:workflows:__owners__", "top_words") == b"team"
        assert not admin.keys("codemode:ws:client-b:artifacts:*")

        # Cascade + dataPolicy Delete: deleting the workspace removes sessions, library and keys.
        kinds.delete("workspaces", "client-a")
        wait_for(
            lambda: kinds.get("workspaces", "client-a") is None,
            120,
            "workspace client-a deleted",
            op=operator,
        )
        assert kinds.get("codesessions", "a1") is None
        assert not admin.keys("codemode:ws:client-a:*")
        admin.close()
