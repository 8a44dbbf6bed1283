"""Faults on the real node cluster (issue: fault tolerance): each one converges, nothing
acknowledged is lost, and the first request after recovery succeeds.

One Workspace, one WorkflowLibrary (served by a local git server) and one CodeSession
run under the real operator on the host, with the workspace's data in a redis-server on
the host that fsyncs every write (`appendfsync always`, so an acknowledged write is
durable by Redis's own contract and anything lost would be codemode's doing). Then:

1. Redis is SIGKILLed while the session runs code that saves artifacts in a loop and
   a library re-sync Job has just been started (the library reports Syncing), and is
   started again on the same data once that Job failed. This Redis is one of your own
   without an `aclfile` (the operator's ACL SAVE is told so, and goes on): it keeps no
   ACL users across a restart, so the operator must provision the workspace's user again
   (its 30 s health timer) before sessions and Jobs can log in. The chart's bundled
   Redis keeps them (tests/e2e/test_redis_restart.py).
2. The session server process is SIGKILLed on the host (as an OOM kill would); the
   kubelet restarts the container.
3. The operator is SIGKILLed while it reconciles a new CodeSession and a library sync,
   the sync Job finishes while nobody watches, and the operator starts again.
4. The kubelet is stopped and started again (through tests.cluster's own code).

After each fault the test waits for what a user waits for (the CR's Ready condition,
having become True again after the fault; the library at the new revision), then sends
one request, which must succeed: artifacts acknowledged before the fault load with
their content, the library's workflows (old and new) are listed and run.

A session pod serves one interpreter session at a time (MAX_SESSIONS=1), so each agent
client here ends its session when done (`World.connect`).

Only loopback, the node's host address and the cluster's pods are contacted.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from codemode_operator.sessions import Sessions
from codemode_session.client import ExecuteResult, SessionClient, SessionError
from kubernetes import client

from tests.cluster.layout import NODE_HOST_IP
from tests.cluster.pytest_plugin import Cluster
from tests.e2e.faults_support import (
    DurableRedis,
    condition,
    kill_session_server,
    kubelet_stopped,
    ready_since,
)
from tests.integration.gitserver import GitHTTPServer, GitRepo
from tests.k8s.operator_fixture import (
    Kinds,
    OperatorProcess,
    install_crds,
    report_log_on_failure,
    temp_namespace,
    wait_for,
)

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
ADMIN_PASSWORD = "faults-admin-secret"
GIT_TOKEN = "faults-git-token"
WS, LIBRARY, SESSION = "faults", "team", "f1"
PREFIX = "codemode"
RECOVERY = 150.0  # seconds a fault may take to converge (Redis: the ACL timer is 30 s)

GREET = '''"""Greet someone."""


async def run(name: str) -> str:
    return f"hello {name}"
'''

SHOUT = '''"""Shout a text."""


async def run(text: str) -> str:
    return text.upper() + "!"
'''

# Saves artifacts until it has seen saves fail and then succeed again (Redis back and
# the session's Redis user provisioned again), or for at most LIMIT seconds. Every save
# that returned is recorded: those must survive.
SAVE_LOOP = """
import time
_acked, _failed, _errors, _after = [], 0, set(), 0
_start, _i = time.time(), 0
while time.time() - _start < LIMIT and _after < 3:
    try:
        artifacts.save(f"run-{_i}", {"i": _i, "pad": "p" * 64})
    except Exception as _e:
        _failed += 1
        _errors.add(f"{type(_e).__name__}: {str(_e)[:120]}")
    else:
        _acked.append(_i)
        _after += 1 if _failed else 0
    _i += 1
    time.sleep(0.1)
{"acked": _acked, "failed": _failed, "errors": sorted(_errors)[:4],
 "seconds": time.time() - _start}
"""


@dataclass
class World:
    cluster: Cluster
    kinds: Kinds
    core: Any
    batch: Any
    namespace: str
    operator: OperatorProcess
    redis: DurableRedis
    repo: GitRepo
    bare: Path
    sessions: Sessions

    # ---- what users see ------------------------------------------------------------

    def get(self, plural: str, name: str) -> dict[str, Any]:
        return self.kinds.get(plural, name) or {}

    def wait(
        self, what: str, predicate: Any, timeout: float = RECOVERY, interval: float = 0.25
    ) -> Any:
        return wait_for(predicate, timeout, what, interval=interval, op=self.operator)

    def wait_ready(self, plural: str, name: str, since: float = 0.0) -> dict[str, Any]:
        """Until the CR's Ready condition is True, set so at or after `since`."""
        return self.wait(
            f"{plural}/{name} Ready (since {since:.0f})",  # type: ignore[no-any-return]
            lambda: (obj := self.get(plural, name)) and ready_since(obj, since) and obj,
        )

    def wait_library(self, revision: str) -> dict[str, Any]:
        def synced() -> dict[str, Any] | None:
            lib = self.get("workflowlibraries", LIBRARY)
            status = lib.get("status") or {}
            done = (
                condition(lib, "Ready").get("status") == "True"
                and (status.get("artifact") or {}).get("revision") == revision
                and not status.get("jobName")
            )
            return lib if done else None

        return self.wait(f"library at revision {revision[:12]}", synced)  # type: ignore[no-any-return]

    def healthy(self) -> None:
        """Everything Ready before a fault (the previous test's recovery included)."""
        self.wait_ready("workspaces", WS)
        self.wait_ready("codesessions", SESSION)
        lib = self.wait_ready("workflowlibraries", LIBRARY)
        assert not lib["status"].get("jobName"), lib["status"]

    @contextlib.contextmanager
    def connect(self, name: str, timeout: float = 60) -> Iterator[SessionClient]:
        """A client of session `name`, as an agent gets one (Sessions.connect), that ends
        its interpreter session when done: a session pod serves one at a time."""
        with (
            self.sessions.connect(name) as conn,
            SessionClient(conn.base_url, token=conn.token, timeout=timeout) as bounded,
        ):
            try:
                yield bounded
            finally:
                with contextlib.suppress(SessionError, httpx.HTTPError):
                    bounded.end_session()

    def pod(self, session: str) -> Any:
        return self.core.read_namespaced_pod(f"{session}-session", self.namespace)

    # ---- the library's git repository ------------------------------------------------

    def publish(self, files: dict[str, str | None], message: str) -> str:
        """Commit `files` under workflows/ and push to the served repository."""
        self.repo.write(files, sub="workflows")
        sha = self.repo.commit(message)
        self.repo.git("push", "-q", str(self.bare), "HEAD:main")
        return sha

    def workflow_names(self) -> list[str]:
        return sorted(p.stem for p in (self.repo.path / "workflows").glob("*.py"))

    def pin_library(self, sha: str) -> None:
        self.kinds.patch(
            "workflowlibraries",
            LIBRARY,
            {"spec": {"source": {"ref": {"branch": None, "commit": sha}}}},
        )

    def job_pods(self, job: str) -> list[Any]:
        return list(
            self.core.list_namespaced_pod(self.namespace, label_selector=f"job-name={job}").items
        )

    def job(self, name: str) -> Any:
        try:
            return self.batch.read_namespaced_job(name, self.namespace)
        except client.ApiException as exc:
            if exc.status == 404:
                return None
            raise


def _value(result: ExecuteResult) -> Any:
    assert result.error is None, result.error
    return result.value


@pytest.fixture(scope="module")
def world(
    e2e_cluster: Cluster,
    project_images: dict[str, str],
    tmp_path_factory: pytest.TempPathFactory,
    request: pytest.FixtureRequest,
) -> Iterator[World]:
    base = tmp_path_factory.mktemp("faults")
    repo = GitRepo(base / "work")
    repo.write(
        {p.name: p.read_text() for p in (ROOT / "examples" / "workflows").glob("*.py")},
        sub="workflows",
    )
    repo.commit("sample workflows")
    served = base / "served"
    served.mkdir()
    bare = repo.bare_copy(served / "workflows.git")
    api = e2e_cluster.api_client()
    install_crds(e2e_cluster.kubeconfig, api)
    failed_before = request.session.testsfailed
    with (
        DurableRedis(ADMIN_PASSWORD) as durable,
        GitHTTPServer(served, token=GIT_TOKEN, host=NODE_HOST_IP) as git,
        temp_namespace(api, "faults") as namespace,
    ):
        kinds = Kinds(api, namespace)
        core: Any = kinds.core
        core.create_namespaced_secret(
            namespace, {"metadata": {"name": "redis-admin"}, "stringData": {"url": durable.url}}
        )
        core.create_namespaced_secret(
            namespace, {"metadata": {"name": "git-auth"}, "stringData": {"token": GIT_TOKEN}}
        )
        operator = OperatorProcess(
            e2e_cluster.kubeconfig,
            [namespace],
            log_dir=base,
            env={"CODEMODE_SESSION_IMAGE": project_images["session"], "LIBRARY_POLL_SECONDS": "2"},
        )
        sessions = Sessions(namespace=namespace, api=api)
        w = World(
            e2e_cluster,
            kinds,
            core,
            client.BatchV1Api(api),
            namespace,
            operator,
            durable,
            repo,
            bare,
            sessions,
        )
        operator.start()
        try:
            kinds.create(
                "workspaces",
                WS,
                {
                    "redis": {"urlSecretRef": {"name": "redis-admin", "key": "url"}},
                    "deletionPolicy": "Cascade",
                    "dataPolicy": "Delete",
                },
            )
            kinds.create(
                "workflowlibraries",
                LIBRARY,
                {
                    "workspaceRef": WS,
                    "source": {
                        "url": git.url("workflows.git"),
                        "ref": {"branch": "main"},
                        "path": "workflows",
                        "secretRef": {"name": "git-auth"},
                    },
                    "interval": "10m",
                    "timeout": "2m",
                },
            )
            kinds.create("codesessions", SESSION, {"workspaceRef": WS})
            started = time.monotonic()
            w.healthy()
            print(
                f"\nsetup: workspace, library and session Ready in "
                f"{time.monotonic() - started:.0f}s"
            )
            yield w
        finally:
            report_log_on_failure(request, operator, failed_before)
            sessions.close()
            # Deleted while the operator runs, so its finalizers let the namespace go.
            kinds.delete("workspaces", WS)
            with contextlib.suppress(AssertionError):
                wait_for(
                    lambda: kinds.get("workspaces", WS) is None,
                    60,
                    "workspace deleted",
                    op=operator,
                )
            operator.stop()


def test_redis_killed_mid_run_and_mid_bootstrap(world: World) -> None:
    """SIGKILL Redis while code saves artifacts and a library sync Job runs."""
    w = world
    w.healthy()
    before = w.get("workflowlibraries", LIBRARY)["status"]
    old_workflows = w.workflow_names()
    sha = w.publish({"greet.py": GREET}, "add greet")

    with ThreadPoolExecutor(1) as pool, w.connect(SESSION, timeout=180) as agent:
        run = pool.submit(agent.execute, "LIMIT = 100\n" + SAVE_LOOP, 150)
        admin = w.redis.admin()
        # No aclfile: the Workspace became Ready all the same (ACL SAVE's "not configured"
        # is fine), and the restart below loses the workspace's user.
        assert admin.config_get("aclfile") == {"aclfile": ""}
        w.wait(
            "the run's first saves",
            lambda: len(admin.keys(f"{PREFIX}:ws:{WS}:artifacts:run-*")) >= 5,
            60,
        )
        w.pin_library(sha)
        # Mid-bootstrap: as soon as the library reports a sync Job for the new revision.
        # (Its container runs ~2 s, too short to aim at reliably; a connection Redis cuts
        # inside a publish is tests/integration/test_redis_reconnect.py's case.)
        job = w.wait(
            "a sync Job for the new revision",
            lambda: (w.get("workflowlibraries", LIBRARY).get("status") or {}).get("jobName"),
            60,
            interval=0.05,
        )
        assert job != before.get("jobName")
        syncing = condition(w.get("workflowlibraries", LIBRARY), "Reconciling")
        acked_before = len(admin.keys(f"{PREFIX}:ws:{WS}:artifacts:run-*"))
        admin.close()
        fault_at = time.time()
        w.redis.kill()
        assert not run.done(), "the run ended before the fault"
        # Down until the sync Job has failed (it cannot publish without Redis), 5 s at least.
        w.wait(
            f"Job {job} failed while Redis is down",
            lambda: (
                (j := w.job(job)) is None or (j.status and (j.status.failed or j.status.succeeded))
            ),
            90,
        )
        time.sleep(max(0.0, fault_at + 5 - time.time()))
        down_for = time.time() - fault_at
        w.redis.start()
        restarted_at = time.time()
        outcome = _value(run.result(timeout=200))
    assert syncing.get("status") == "True", syncing

    # The run itself saw the outage and came through it: its code kept going.
    assert outcome["failed"] > 0, f"no save failed: Redis died too late ({outcome})"
    assert len(outcome["acked"]) >= acked_before >= 5, (acked_before, outcome)
    # The library: the interrupted sync is retried until the new revision is published;
    # what it published before was served all along.
    lib = w.wait_library(sha)
    status = lib["status"]
    assert status["artifact"]["count"] == len(old_workflows) + 1, status
    assert int(status["attempts"]) >= int(before["attempts"]) + 2, (
        f"the sync Job did not fail (it finished before Redis died?): {status}"
    )
    assert condition(lib, "Stalled").get("status") == "False", status["conditions"]
    # The workspace and the session are Ready again, and say so only after the fault.
    ws = w.wait_ready("workspaces", WS)
    assert ws["status"]["redisReachable"] is True
    w.wait_ready("codesessions", SESSION, since=fault_at)
    recovered = time.time() - restarted_at

    acked = outcome["acked"]
    with w.connect(SESSION) as agent:
        after = _value(
            agent.execute(
                f"_acked = {acked!r}\n"
                "_bad = [i for i in _acked if artifacts.load(f'run-{i}') != "
                "{'i': i, 'pad': 'p' * 64}]\n"
                "_listed = [a['name'] for a in artifacts.list() if a['name'].startswith('run-')]\n"
                "{'bad': _bad, 'unlistable': sorted(set(f'run-{i}' for i in _acked) - "
                "set(_listed)), 'ghosts': [n for n in _listed if not artifacts.exists(n)],\n"
                " 'workflows': sorted(x['name'] for x in workflows.list()),\n"
                " 'greet': workflows.greet(name='faults'),\n"
                " 'top': workflows.top_words(text='b a b', n=1)}"
            )
        )
    assert after["bad"] == [], f"acknowledged artifacts lost or changed: {after['bad']}"
    assert after["unlistable"] == [] and after["ghosts"] == [], after
    assert after["workflows"] == w.workflow_names()
    assert after["greet"] == "hello faults" and after["top"] == ["b"]
    print(
        f"\nredis: down {down_for:.1f}s, all Ready {recovered:.0f}s after its restart; "
        f"the run saved {len(acked)} ({acked_before} before the kill), {outcome['failed']} "
        f"saves failed: {outcome['errors']}; library attempts {before['attempts']} -> "
        f"{status['attempts']}"
    )


def test_session_server_killed(world: World) -> None:
    """SIGKILL the session server on the host; the kubelet restarts its container."""
    w = world
    w.healthy()
    with w.connect(SESSION) as old:
        assert (
            _value(
                old.execute("marker = 41\nartifacts.save('before-kill', {'kept': True})\nmarker")
            )
            == 41
        )
        pod = w.pod(SESSION)
        restarts = pod.status.container_statuses[0].restart_count
        fault_at = time.time()
        pid = kill_session_server(pod)

        w.wait_ready("codesessions", SESSION, since=fault_at)
        pod = w.wait(
            "the pod Ready with its container restarted",
            lambda: (
                (p := w.pod(SESSION)).status.container_statuses[0].restart_count == restarts + 1
                and p.status.container_statuses[0].ready
                and p
            ),
        )
        session = w.get("codesessions", SESSION)
        assert session["status"]["phase"] == "Ready"
        assert not session["status"].get("podRecreations"), "the pod was replaced, not restarted"

        with w.connect(SESSION) as agent:
            after = _value(
                agent.execute(
                    "{'artifact': artifacts.load('before-kill'), 'marker': 'marker' in globals(),"
                    " 'top': workflows.top_words(text='x y y', n=1)}"
                )
            )
        # The CodeSession's variables come back (its snapshot, stored as the run answered).
        assert after == {"artifact": {"kept": True}, "marker": True, "top": ["y"]}
        # The killed server's own session is gone, and its client is told so.
        with pytest.raises(SessionError) as gone:
            old.execute("marker")
        assert gone.value.unknown_session and gone.value.status == 400, gone.value
    print(
        f"\nsession server pid {pid} killed; container restarts {restarts} -> "
        f"{pod.status.container_statuses[0].restart_count}"
    )


def test_operator_killed_mid_reconcile(world: World) -> None:
    """SIGKILL the operator while it admits a new session and a library sync runs."""
    w = world
    w.healthy()
    before = w.get("workflowlibraries", LIBRARY)["status"]
    with w.connect(SESSION) as agent:
        _value(agent.execute("artifacts.save('before-operator-kill', [1, 2, 3])"))
    sha = w.publish({"shout.py": SHOUT}, "add shout")
    w.pin_library(sha)
    w.kinds.create("codesessions", "f2", {"workspaceRef": WS})

    def in_flight() -> str | None:
        """The new sync Job's name once it runs and f2 is admitted (handlers under way)."""
        job = (w.get("workflowlibraries", LIBRARY).get("status") or {}).get("jobName")
        admitted = condition(w.get("codesessions", "f2"), "Admitted").get("status") == "True"
        return str(job) if job and admitted else None

    job = w.wait("a sync Job and f2 admitted", in_flight, 60)
    w.operator.kill()
    at_kill = w.get("codesessions", "f2").get("status") or {}
    assert at_kill.get("phase") != "Ready", f"f2 was Ready before the kill: {at_kill}"

    # Nobody reconciles now, but the data plane does not need the operator.
    with w.connect(SESSION) as agent:
        assert _value(agent.execute("artifacts.load('before-operator-kill')")) == [1, 2, 3]
    w.wait(
        f"Job {job} done without the operator",
        lambda: (j := w.job(job)) is not None and j.status and j.status.succeeded,
        90,
    )
    assert (w.get("workflowlibraries", LIBRARY).get("status") or {}).get("jobName") == job
    ran = w.job_pods(job)[0].status.container_statuses[0].state.terminated
    dead_for = time.time()

    w.operator.start().wait_started()
    lib = w.wait_library(sha)
    assert lib["status"]["artifact"]["count"] == len(w.workflow_names())
    assert int(lib["status"]["attempts"]) == int(before["attempts"]) + 1, (
        "the sync that finished while the operator was down should be adopted, not rerun"
    )
    w.wait_ready("codesessions", "f2")
    pods = w.core.list_namespaced_pod(w.namespace, label_selector="codemode.dev/session=f2")
    assert [p.metadata.name for p in pods.items] == ["f2-session"]

    with w.connect("f2") as agent:
        after = _value(
            agent.execute(
                "{'artifact': artifacts.load('before-operator-kill'),"
                " 'shout': workflows.shout(text='up'),"
                " 'workflows': sorted(x['name'] for x in workflows.list())}"
            )
        )
    assert after == {"artifact": [1, 2, 3], "shout": "UP!", "workflows": w.workflow_names()}
    w.wait_ready("codesessions", SESSION)
    w.kinds.delete("codesessions", "f2")
    print(
        f"\noperator: killed with f2 {at_kill.get('phase')}/{at_kill.get('reason')} and "
        f"Job {job} running; the Job's container ran "
        f"{(ran.finished_at - ran.started_at).total_seconds():.0f}s; converged and answered "
        f"{time.time() - dead_for:.0f}s after the restart"
    )


def test_kubelet_restarted(world: World) -> None:
    """Stop and start the node's kubelet: pods keep running, nothing restarts."""
    w = world
    w.healthy()
    core: Any = w.core
    with w.connect(SESSION) as agent:
        assert (
            _value(agent.execute("state = 'kept'\nartifacts.save('before-kubelet', 'k')\nstate"))
            == "kept"
        )
        restarts = w.pod(SESSION).status.container_statuses[0].restart_count
        stopping_at = time.time()
        with kubelet_stopped() as pid:
            stopped_at = time.time()
            # The kubelet is not on the data path: the session answers while it is down.
            assert _value(agent.execute("state")) == "kept"
            time.sleep(max(0.0, stopped_at + 5 - time.time()))
        restarted_at = time.time()

        def node_back() -> bool:
            found = core.read_node(w.cluster.node_name)
            ready = next(c for c in found.status.conditions if c.type == "Ready")
            return bool(
                ready.status == "True"
                and ready.last_heartbeat_time.timestamp() >= int(restarted_at)
            )

        w.wait("the node's Ready heartbeat from the new kubelet", node_back, 90)
        w.wait(
            "the session pod Ready",
            lambda: all(
                c.status == "True" for c in w.pod(SESSION).status.conditions if c.type == "Ready"
            ),
            90,
        )
        w.wait_ready("codesessions", SESSION)
        # The same interpreter still runs: no container was restarted.
        after = _value(
            agent.execute(
                "{'state': state, 'artifact': artifacts.load('before-kubelet'),"
                " 'top': workflows.top_words(text='q q r', n=1)}"
            )
        )
    assert after == {"state": "kept", "artifact": "k", "top": ["q"]}
    pod = w.pod(SESSION)
    assert pod.status.container_statuses[0].restart_count == restarts
    print(
        f"\nkubelet pid {pid}: stopped in {stopped_at - stopping_at:.1f}s, down "
        f"{restarted_at - stopped_at:.1f}s until its restart was healthy; pod Ready "
        f"since {condition(w.get('codesessions', SESSION), 'Ready').get('lastTransitionTime')}"
        f" (kubelet stopped at {time.strftime('%H:%M:%S', time.gmtime(stopped_at))}Z)"
    )
