"""The chart's bundled Redis keeps the workspaces' ACL users across a restart (README,
Bundled Redis): the operator saves them to an aclfile on Redis's data volume, so after
Redis restarts (its pod deleted and created again on the same volume, or its process
SIGKILLed and the container restarted) a session's storage works at once, without the
operator provisioning the user again. The operator's Workspace timer is set to an hour
here (`operator.workspacePollSeconds`), so it cannot be what brings the user back.

The admin (default) user's password is the chart Secret's after every start: Redis
ignores `requirepass` once it loads an aclfile, and the chart writes that user itself.
"""

from __future__ import annotations

import base64
import contextlib
import os
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from codemode_operator.sessions import Sessions
from kubernetes import client

from tests.cluster.helm import helm_binary
from tests.cluster.pytest_plugin import Cluster
from tests.e2e.faults_support import kill_container
from tests.k8s.operator_fixture import Kinds, cluster_values, image_values, wait_for

pytestmark = pytest.mark.e2e

CHART = Path(__file__).resolve().parents[2] / "helm" / "codemode"
RELEASE = "rr"
TIMER = 3600  # the operator's Workspace timer: nothing it does can help within the test


def _helm(cluster: Cluster, system: str, *args: str, check: bool = True) -> str:
    proc = subprocess.run(
        [str(helm_binary()), f"--kubeconfig={cluster.kubeconfig}", "--namespace", system, *args],
        capture_output=True,
        text=True,
        timeout=600,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)}:\n{proc.stdout}\n{proc.stderr}")
    return proc.stdout


def _ready(pod: Any) -> bool:
    return any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])


def _cr_ready(kinds: Kinds, plural: str, name: str) -> bool:
    return kinds.condition(plural, name, "Ready").get("status") == "True"


class RedisPod:
    """The release's Redis pod, reached with `kubectl exec` and redis-cli."""

    def __init__(self, cluster: Cluster, core: Any, system: str, name: str) -> None:
        self.cluster, self.core, self.system, self.name = cluster, core, system, name

    def read(self) -> Any:
        return self.core.read_namespaced_pod(self.name, self.system)

    def cli(self, *args: str, auth: bool = True) -> str:
        login = 'REDISCLI_AUTH="$REDIS_PASSWORD" ' if auth else ""
        quoted = " ".join(f"'{a}'" for a in args)
        return self.cluster.kubectl(
            "-n", self.system, "exec", self.name, "--", "sh", "-c", f"{login}redis-cli {quoted}"
        ).strip()

    def wait_ready(self, after_uid: str | None = None, restarts: int | None = None) -> Any:
        def ready() -> Any:
            try:
                pod = self.read()
            except client.ApiException as exc:
                if exc.status == 404:
                    return None
                raise
            if after_uid is not None and pod.metadata.uid == after_uid:
                return None
            statuses = pod.status.container_statuses or []
            if restarts is not None and (not statuses or statuses[0].restart_count <= restarts):
                return None
            return pod if _ready(pod) else None

        return wait_for(ready, 180, f"pod {self.name} Ready again")


def test_workspace_users_survive_a_redis_restart(
    cluster: Cluster, namespace: str, project_images: dict[str, str]
) -> None:
    from tests.cluster import images, lifecycle

    if not os.environ.get("CODEMODE_KUBECONFIG"):
        images.build_redis()
        lifecycle.import_images_if_up()
    api = cluster.api_client()
    core: Any = client.CoreV1Api(api)
    kinds = Kinds(api, namespace)
    system = f"cm-rr-{uuid.uuid4().hex[:6]}"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=system)))
    sessions = Sessions(namespace=namespace, api=api)
    try:
        _helm(
            cluster,
            system,
            "install",
            RELEASE,
            str(CHART),
            "--wait",
            "--timeout",
            "4m",
            "--force-conflicts",  # CRDs another test applied already: take them over
            "--set",
            f"watchNamespaces={{{namespace}}}",
            *image_values(project_images["operator"], project_images["session"], images.REDIS),
            "--set",
            "redis.persistence.whenDeleted=Delete",
            "--set",
            f"operator.workspacePollSeconds={TIMER}",
            *cluster_values(),
        )
        [secret] = [
            s
            for s in core.list_namespaced_secret(system).items
            if s.metadata.name.endswith("-redis") and "url" in (s.data or {})
        ]
        url = base64.b64decode(secret.data["url"]).decode()
        core.create_namespaced_secret(
            namespace, {"metadata": {"name": "admin-redis"}, "stringData": {"url": url}}
        )
        [sts] = client.AppsV1Api(api).list_namespaced_stateful_set(system).items
        redis = RedisPod(cluster, core, system, f"{sts.metadata.name}-0")
        kinds.create(
            "workspaces",
            "ws",
            {
                "redis": {"urlSecretRef": {"name": "admin-redis", "key": "url"}},
                "dataPolicy": "Delete",
            },
        )
        kinds.create("codesessions", "s1", {"workspaceRef": "ws"})
        wait_for(lambda: _cr_ready(kinds, "workspaces", "ws"), 120, "workspace Ready")
        user = f"codemode:{namespace}:ws"
        assert user in redis.cli("ACL", "USERS").split()
        with sessions.connect("s1") as agent:
            saved = agent.execute("artifacts.save('before', {'n': 1})\nartifacts.load('before')")
            assert saved.error is None and saved.value == {"n": 1}, saved

        # 1. The pod deleted: a new pod on the same volume (a reschedule, a node drain).
        old_uid = redis.read().metadata.uid
        redis.core.delete_namespaced_pod(redis.name, system, grace_period_seconds=0)
        redis.wait_ready(after_uid=old_uid)
        back_at = time.monotonic()
        assert user in redis.cli("ACL", "USERS").split(), "the user is not back at once"
        assert "NOAUTH" in redis.cli("PING", auth=False), "the default user lost its password"
        with sessions.connect("s1") as agent:
            loaded = agent.execute("artifacts.load('before')")
        assert loaded.error is None and loaded.value == {"n": 1}, loaded
        first = time.monotonic() - back_at

        # 2. The process SIGKILLed: the kubelet restarts the container (same volume).
        pod = redis.read()
        restarts = pod.status.container_statuses[0].restart_count
        kill_container(pod, b"redis-server")
        redis.wait_ready(restarts=restarts)
        back_at = time.monotonic()
        assert user in redis.cli("ACL", "USERS").split(), "the user is not back at once"
        assert "NOAUTH" in redis.cli("PING", auth=False), "the default user lost its password"
        with sessions.connect("s1") as agent:
            loaded = agent.execute(
                "artifacts.save('after', 2)\n[artifacts.load('before'), artifacts.load('after')]"
            )
        assert loaded.error is None and loaded.value == [{"n": 1}, 2], loaded
        second = time.monotonic() - back_at
        print(
            f"\nstorage answered {first:.1f}s after the new Redis pod was Ready and "
            f"{second:.1f}s after the restarted container was (Workspace timer: {TIMER}s)"
        )
    finally:
        sessions.close()
        kinds.delete("codesessions", "s1")
        kinds.delete("workspaces", "ws")
        with contextlib.suppress(AssertionError):
            wait_for(lambda: kinds.get("workspaces", "ws") is None, 90, "workspace deleted")
        _helm(cluster, system, "uninstall", RELEASE, "--wait", "--timeout", "2m", check=False)
        with contextlib.suppress(client.ApiException):
            core.delete_namespace(system)
