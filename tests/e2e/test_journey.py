"""The whole user journey on the node cluster, as the README tells it:

`helm install` (the operator image and the bundled Redis, in their own namespace,
watching the user's namespace) → `kubectl apply` of examples/ (workspace, a library
served by a local git server, a session) → library synced → session Ready →
`codemode exec` (the real CLI) calls a library workflow and saves an artifact →
the artifact is in the bundled Redis under the workspace's keys → `helm upgrade`
with a changed value restarts the operator and the session keeps working →
deleting the CRs removes their pods, Jobs, Secrets and Redis keys, and
`helm uninstall` leaves nothing of the release behind.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml
from kubernetes import client

from tests.cluster.helm import helm_binary
from tests.cluster.layout import NODE_HOST_IP
from tests.cluster.pytest_plugin import Cluster
from tests.integration.gitserver import GitHTTPServer, GitRepo
from tests.k8s.operator_fixture import Kinds, cluster_values, image_values, wait_for

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "codemode"
EXAMPLES = ROOT / "examples"
RELEASE = "codemode"
WS_KEYS = "codemode:ws:client-a:*"


@pytest.fixture(scope="module")
def redis_image(e2e_cluster: Cluster) -> str:
    """The bundled Redis image, built once (debootstrap) and imported."""
    from tests.cluster import images, lifecycle

    if not os.environ.get("CODEMODE_KUBECONFIG"):
        images.build_redis()
        lifecycle.import_images_if_up()
    return images.REDIS


@pytest.fixture(scope="module")
def library_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """examples/workflows in a git repository served over HTTP where pods reach it."""
    base = tmp_path_factory.mktemp("git")
    repo = GitRepo(base / "work")
    repo.write(
        {p.name: p.read_text() for p in (EXAMPLES / "workflows").glob("*.py")}, sub="workflows"
    )
    repo.commit("sample workflows")
    served = base / "served"
    served.mkdir()
    repo.bare_copy(served / "workflows.git")
    with GitHTTPServer(served, host=NODE_HOST_IP) as server:
        yield server.url("workflows.git")


class Helm:
    def __init__(self, cluster: Cluster, namespace: str) -> None:
        self.cluster = cluster
        self.namespace = namespace

    def __call__(self, *args: str, check: bool = True) -> str:
        proc = subprocess.run(
            [
                str(helm_binary()),
                f"--kubeconfig={self.cluster.kubeconfig}",
                "--namespace",
                self.namespace,
                *args,
            ],
            capture_output=True,
            text=True,
            timeout=600,
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"helm {' '.join(args)}:\n{proc.stdout}\n{proc.stderr}\n{self.diagnose()}"
            )
        return proc.stdout

    def diagnose(self) -> str:
        with contextlib.suppress(AssertionError):
            return self.cluster.kubectl(
                "-n", self.namespace, "get", "pods,pvc,events", "-o", "wide"
            )
        return ""


def codemode_exec(cluster: Cluster, namespace: str, code: str) -> Any:
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    env["KUBECONFIG"] = str(cluster.kubeconfig)
    codemode = shutil.which("codemode") or "codemode"
    proc = subprocess.run(
        [codemode, "exec", "agent-1", code, "-n", namespace, "--wait", "120"],
        capture_output=True,
        text=True,
        timeout=180,
        env=env,
    )
    assert proc.returncode == 0, f"codemode exec failed:\n{proc.stdout}\n{proc.stderr}"
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _ready(kinds: Kinds, plural: str, name: str) -> dict[str, Any] | None:
    obj = kinds.get(plural, name)
    conds = ((obj or {}).get("status") or {}).get("conditions") or []
    return (
        obj if any(c.get("type") == "Ready" and c.get("status") == "True" for c in conds) else None
    )


def test_journey(
    cluster: Cluster,
    namespace: str,
    project_images: dict[str, str],
    redis_image: str,
    library_url: str,
) -> None:
    started = time.monotonic()
    api = cluster.api_client()
    core = client.CoreV1Api(api)
    batch = client.BatchV1Api(api)
    rbac = client.RbacAuthorizationV1Api(api)
    kinds = Kinds(api, namespace)
    system = f"codemode-system-{uuid.uuid4().hex[:6]}"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=system)))
    helm = Helm(cluster, system)
    timings: dict[str, float] = {}

    def mark(step: str) -> None:
        timings[step] = round(time.monotonic() - started, 1)

    try:
        # ---- helm install -------------------------------------------------------------
        helm(
            "install",
            RELEASE,
            str(CHART),
            "--wait",
            "--timeout",
            "4m",
            # CRDs another test applied already: take them over.
            "--force-conflicts",
            "--set",
            f"watchNamespaces={{{namespace}}}",
            *image_values(project_images["operator"], project_images["session"], redis_image),
            "--set",
            "redis.persistence.whenDeleted=Delete",
            "--set",
            "operator.libraryPollSeconds=2",
            "--set",
            "operator.sessionPollSeconds=2",
            # the node cluster's CoreDNS is on the host: the sessions' DNS egress needs it
            *cluster_values(),
        )
        mark("installed")
        # The Redis claim got a volume of the cluster's default StorageClass.
        claim = core.read_namespaced_persistent_volume_claim("data-codemode-redis-0", system)
        redis_volume = claim.spec.volume_name
        assert claim.status.phase == "Bound" and redis_volume
        notes = helm("get", "notes", RELEASE)
        assert "codemode exec agent-1" in notes

        # The Workspace's admin URL Secret, as NOTES.txt tells (the bundled Redis).
        url = base64.b64decode(
            core.read_namespaced_secret("codemode-redis", system).data["url"]
        ).decode()
        assert f"@codemode-redis.{system}.svc:6379/0" in url
        core.create_namespaced_secret(
            namespace, {"metadata": {"name": "codemode-redis"}, "stringData": {"url": url}}
        )

        # ---- kubectl apply -f examples/ -------------------------------------------------
        library = yaml.safe_load((EXAMPLES / "library.yaml").read_text())
        library["spec"]["source"]["url"] = library_url
        manifests = "\n---\n".join(
            [
                (EXAMPLES / "workspace.yaml").read_text(),
                yaml.safe_dump(library),
                (EXAMPLES / "session.yaml").read_text(),
            ]
        )
        cluster.kubectl("-n", namespace, "apply", "-f", "-", stdin=manifests)

        synced = wait_for(
            lambda: _ready(kinds, "workflowlibraries", "team-workflows"), 180, "library synced"
        )
        assert synced["status"]["artifact"]["count"] == 2
        mark("library synced")
        session = wait_for(lambda: _ready(kinds, "codesessions", "agent-1"), 180, "session Ready")
        mark("session ready")
        listing = cluster.kubectl("-n", namespace, "get", "codemode")
        assert "agent-1" in listing and "team-workflows" in listing and "client-a" in listing

        # ---- codemode exec: a library workflow, an artifact -----------------------------
        top = codemode_exec(
            cluster,
            namespace,
            'top = workflows.top_words(text="b a b c b a", n=2)\n'
            'artifacts.save("report", {"top": top}, description="journey")\n'
            "top",
        )
        assert top == ["b", "a"]
        mark("exec")

        redis_pod = core.read_namespaced_pod(f"{RELEASE}-redis-0", system)
        password = base64.b64decode(
            core.read_namespaced_secret("codemode-redis", system).data["password"]
        ).decode()
        admin = redis.Redis(
            host=redis_pod.status.pod_ip, port=6379, password=password, socket_timeout=10
        )
        assert json.loads(admin.get("codemode:ws:client-a:artifacts:report") or b"{}") == {
            "top": ["b", "a"]
        }
        assert admin.hexists("codemode:ws:client-a:artifacts:__index__", "report")
        assert (
            admin.hget("codemode:ws:client-a:workflows:__owners__", "top_words")
            == b"team-workflows"
        )

        # ---- helm upgrade with a changed value ------------------------------------------
        _assert_no_forbidden(cluster, system)
        operator_pod = _operator_pod(core, system)
        session_pod = session["status"]["podName"]
        session_uid = core.read_namespaced_pod(session_pod, namespace).metadata.uid
        helm(
            "upgrade",
            RELEASE,
            str(CHART),
            "--reuse-values",
            "--wait",
            "--timeout",
            "3m",
            "--set",
            "operator.logLevel=debug",
        )
        new_operator = wait_for(
            lambda: _operator_pod(core, system, not_named=operator_pod), 60, "new operator pod"
        )
        container = new_operator.spec.containers[0]
        assert container.args == ["--verbose"]
        assert (
            base64.b64decode(
                core.read_namespaced_secret("codemode-redis", system).data["password"]
            ).decode()
            == password
        )
        again = codemode_exec(
            cluster,
            namespace,
            'workflows.word_count(text="one two three") '
            'if "word_count" in [w["name"] for w in workflows.list()] '
            'else None, artifacts.load("report")',
        )
        assert again[1] == {"top": ["b", "a"]}, again
        assert core.read_namespaced_pod(session_pod, namespace).metadata.uid == session_uid
        assert _ready(kinds, "codesessions", "agent-1")
        mark("upgraded")

        # ---- delete the CRs: children and keys go ---------------------------------------
        # --ignore-not-found: the Workspace (deletionPolicy Cascade) may already have
        # removed the CodeSession when kubectl reaches it; deleting is idempotent.
        cluster.kubectl(
            "-n",
            namespace,
            "delete",
            "-f",
            "-",
            "--wait=true",
            "--timeout=120s",
            "--ignore-not-found",
            stdin=manifests,
        )
        wait_for(
            lambda: (
                not any(
                    kinds.get(p, n)
                    for p, n in (
                        ("codesessions", "agent-1"),
                        ("workflowlibraries", "team-workflows"),
                        ("workspaces", "client-a"),
                    )
                )
            ),
            120,
            "codemode objects deleted",
        )

        def leftovers() -> list[str]:
            left = [f"pod/{p.metadata.name}" for p in core.list_namespaced_pod(namespace).items]
            left += [f"job/{j.metadata.name}" for j in batch.list_namespaced_job(namespace).items]
            left += [
                f"secret/{s.metadata.name}"
                for s in core.list_namespaced_secret(namespace).items
                if s.metadata.name != "codemode-redis"
            ]
            left += [
                f"service/{s.metadata.name}" for s in core.list_namespaced_service(namespace).items
            ]
            left += [k.decode() for k in admin.keys(WS_KEYS)]
            return left

        wait_for(lambda: not leftovers() or None, 90, "no leftovers of the deleted CRs")
        assert leftovers() == []
        admin.close()
        mark("crs deleted")

        _assert_no_forbidden(cluster, system)  # the RBAC is enough, run for real
        # ---- helm uninstall -------------------------------------------------------------
        helm("uninstall", RELEASE, "--wait", "--timeout", "2m")

        def release_leftovers() -> list[str]:
            left = [f"pod/{p.metadata.name}" for p in core.list_namespaced_pod(system).items]
            left += [f"secret/{s.metadata.name}" for s in core.list_namespaced_secret(system).items]
            left += [
                f"pvc/{c.metadata.name}"
                for c in core.list_namespaced_persistent_volume_claim(system).items
            ]
            left += [
                f"clusterrole/{r.metadata.name}"
                for r in rbac.list_cluster_role().items
                if system in r.metadata.name
            ]
            left += [f"role/{r.metadata.name}" for r in rbac.list_namespaced_role(namespace).items]
            left += [
                f"pv/{v.metadata.name}"
                for v in core.list_persistent_volume().items
                if v.metadata.name == redis_volume
            ]  # whenDeleted=Delete
            return left

        wait_for(lambda: not release_leftovers() or None, 120, "nothing of the release left")
        mark("uninstalled")
        print(f"\njourney timings (s since start): {timings}")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{_diagnose(cluster, system, namespace)}") from exc
    finally:
        helm("uninstall", RELEASE, "--wait=false", check=False)
        with contextlib.suppress(client.ApiException):
            core.delete_namespace(system)


def _assert_no_forbidden(cluster: Cluster, system: str) -> None:
    logs = cluster.kubectl("-n", system, "logs", "deployment/codemode-operator")
    denied = [
        line
        for line in logs.splitlines()
        if "forbidden" in line.lower() or "not enough permissions" in line.lower()
    ]
    assert not denied, "\n".join(denied[:5])


def _diagnose(cluster: Cluster, system: str, namespace: str) -> str:
    out = []
    for args in (
        ["-n", system, "logs", "deployment/codemode-operator", "--tail=80"],
        ["-n", system, "get", "pods,pvc", "-o", "wide"],
        ["-n", namespace, "get", "codemode,pods,jobs", "-o", "wide"],
        ["-n", namespace, "get", "codemode", "-o", "yaml"],
        ["-n", namespace, "get", "events", "--sort-by=.lastTimestamp"],
    ):
        try:
            out.append(f"--- kubectl {' '.join(args)} ---\n{cluster.kubectl(*args)}")
        except AssertionError as exc:
            out.append(f"--- kubectl {' '.join(args)}: {exc}")
    return "\n".join(out)


def _operator_pod(core: Any, namespace: str, not_named: str | None = None) -> Any:
    pods = core.list_namespaced_pod(
        namespace, label_selector="app.kubernetes.io/component=operator"
    ).items
    running = [
        p
        for p in pods
        if p.status.phase == "Running"
        and p.metadata.deletion_timestamp is None
        and p.metadata.name != not_named
    ]
    return running[0] if len(running) == 1 and len(pods) == 1 else None
