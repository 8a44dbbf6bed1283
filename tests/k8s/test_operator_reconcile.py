"""The real operator (a `python -m codemode_operator` subprocess) reconciles Workspaces,
CodeSessions and WorkflowLibraries on the control-plane cluster, with a real redis-server.

The operator runs on this host, so a Workspace's redis.url is the loopback redis-server.
Pods run on the kwok node: they become Running/Ready without a kubelet, Job pods end
Succeeded without output, and nothing answers on a pod IP.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import pytest
import redis
from codemode_operator.builders.session import session_uid
from codemode_session.storage.base import LibraryRecord
from codemode_session.storage.keys import KeyLayout
from codemode_session.storage.redis_storage import RedisStorage
from codemode_session.workflow_model import Workflow
from kubernetes import client

from tests.cluster.pytest_plugin import Cluster
from tests.conftest import free_port
from tests.k8s.operator_env import Env
from tests.k8s.operator_fixture import (
    Kinds,
    OperatorProcess,
    report_log_on_failure,
    stays_true_for,
    temp_namespace,
    wait_for,
)

pytestmark = pytest.mark.k8s
SESSION_LABEL = "codemode.dev/session"


def _owned_by(obj: Any, kind: str, name: str, uid: str) -> None:
    refs = obj.metadata.owner_references or []
    assert [(r.kind, r.name, r.uid, r.controller) for r in refs] == [(kind, name, uid, True)]


# ---- Workspace ---------------------------------------------------------------------------


def test_workspace_ready_with_confined_redis_user(env: Env) -> None:
    spec = env.workspace("ws-acl", workspaceId="tenant-a")
    prefix = spec["prefix"]
    status = env.ready("workspaces", "ws-acl")
    assert status["workspaceId"] == "tenant-a"
    assert status["credentialsSecret"] == "ws-acl-redis"
    assert status["redisReachable"] is True
    assert status["observedGeneration"] == 1
    uid = env.kinds.get("workspaces", "ws-acl")["metadata"]["uid"]  # type: ignore[index]

    policy = env.net.read_namespaced_network_policy("ws-acl-sessions", env.ns)
    _owned_by(policy, "Workspace", "ws-acl", uid)
    assert policy.spec.pod_selector.match_labels == {
        "codemode.dev/workspace": "ws-acl",
        "app.kubernetes.io/component": "session",
    }
    assert sorted(policy.spec.policy_types) == ["Egress", "Ingress"]
    redis_rule = policy.spec.egress[1]
    assert redis_rule.to[0].ip_block.cidr == "127.0.0.1/32"
    assert redis_rule.ports[0].port == env.redis.port

    secret = env.core.read_namespaced_secret("ws-acl-redis", env.ns)
    _owned_by(secret, "Workspace", "ws-acl", uid)
    url = env.secret("ws-acl-redis")["url"]
    assert url != env.redis.url and "codemode%3A" in url

    own = f"{prefix}:ws:tenant-a:artifacts:x"
    other = f"{prefix}:ws:other:artifacts:x"
    env.admin().set(other, b"secret of another tenant")
    with redis.Redis.from_url(url) as scoped:
        assert scoped.ping()
        scoped.set(own, b"mine")
        assert scoped.get(own) == b"mine"
        scoped.hset(f"{prefix}:ws:tenant-a:workflows:__workflows__", "w", "{}")
        scoped.get(f"{prefix}:deps:deps")  # shared, read-only
        for denied in (
            lambda: scoped.get(other),
            lambda: scoped.set(other, b"x"),
            lambda: scoped.delete(other),
            lambda: scoped.scan(0),
            lambda: scoped.keys("*"),
            lambda: scoped.flushall(),
            lambda: scoped.flushdb(),
            lambda: scoped.set(f"{prefix}:deps:deps", b"x"),
            lambda: scoped.set(f"{prefix}:tools:t", b"x"),
            lambda: scoped.execute_command("ACL", "LIST"),
            lambda: scoped.eval("return 1", 0),
            lambda: scoped.config_get("*"),
        ):
            with pytest.raises(redis.exceptions.NoPermissionError):
                denied()
    assert env.admin().get(other) == b"secret of another tenant"


def test_workspace_status_reports_usage_and_quotas_reach_sessions(env: Env) -> None:
    """Usage is read from Redis on the workspace's timer: what sessions stored after the
    workspace became Ready shows up without any change to the Workspace."""
    spec = env.workspace(
        "ws-usage",
        workspaceId="tenant-u",
        limits={"maxStorageBytes": "10Mi", "maxArtifactBytes": "1Mi", "maxWorkflows": 5},
    )
    status = env.ready("workspaces", "ws-usage")
    assert status["usage"] == {"storageBytes": 0, "artifacts": 0, "workflows": 0}

    keys = KeyLayout(spec["prefix"], "tenant-u")
    with env.admin() as admin:
        admin.hset(keys.usage, "bytes", 4242)
        admin.hset(keys.artifact_index, mapping={"a": "{}", "b": "{}"})
        admin.hset(keys.workflows, mapping={"w1": "{}", "w2": "{}", "w3": "{}"})
    want = {"storageBytes": 4242, "artifacts": 2, "workflows": 3}
    env.wait(
        lambda: env.kinds.status("workspaces", "ws-usage").get("usage") == want,
        75,
        "Workspace status.usage refreshed by the timer",
    )

    env.kinds.create("codesessions", "s-quota", {"workspaceRef": "ws-usage"})
    env.wait(lambda: env.pod("s-quota-session") is not None, 30, "pod created")
    pod = env.pod("s-quota-session")
    assert pod is not None
    env_vars = {e.name: e.value for e in pod.spec.containers[0].env}
    assert env_vars["STORAGE_MAX_BYTES"] == str(10 * 2**20)
    assert env_vars["STORAGE_MAX_ARTIFACT_BYTES"] == str(2**20)
    assert env_vars["STORAGE_MAX_WORKFLOWS"] == "5"
    wide = env.cluster.kubectl("get", "cmws", "ws-usage", "-n", env.ns, "-o", "wide")
    header, row = wide.splitlines()[:2]
    assert "STORAGE" in header and "4242" in row


def test_workspace_secret_ref_missing_then_created(env: Env) -> None:
    env.kinds.create(
        "workspaces",
        "ws-ref",
        {
            "prefix": f"t{uuid.uuid4().hex[:10]}",
            "redis": {"urlSecretRef": {"name": "ws-ref-admin", "key": "url"}},
        },
    )
    env.wait(
        lambda: (
            env.kinds.condition("workspaces", "ws-ref", "Ready").get("reason")
            == "RedisConfigInvalid"
        ),
        30,
        "Ready False RedisConfigInvalid",
    )
    ready = env.kinds.condition("workspaces", "ws-ref", "Ready")
    assert ready["status"] == "False"
    assert "ws-ref-admin" in ready["message"]
    env.core.create_namespaced_secret(
        env.ns, {"metadata": {"name": "ws-ref-admin"}, "stringData": {"url": env.redis.url}}
    )
    status = env.ready("workspaces", "ws-ref", timeout=60)
    assert status["redisReachable"] is True
    assert env.kinds.condition("workspaces", "ws-ref", "RedisReachable")["status"] == "True"


def test_workspace_unreachable_redis(env: Env) -> None:
    env.kinds.create(
        "workspaces", "ws-down", {"redis": {"url": f"redis://127.0.0.1:{free_port()}/0"}}
    )
    env.wait(
        lambda: (
            env.kinds.condition("workspaces", "ws-down", "RedisReachable").get("reason")
            == "RedisUnreachable"
        ),
        30,
        "RedisReachable False",
    )
    status = env.kinds.status("workspaces", "ws-down")
    assert status["redisReachable"] is False
    ready = env.kinds.condition("workspaces", "ws-down", "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "RedisUnreachable")
    assert ready["message"]
    assert not status.get("credentialsSecret")


# ---- CodeSession -------------------------------------------------------------------------


def test_session_children_ready_and_pod_recreated(env: Env) -> None:
    env.workspace("ws-sess", workspaceId="tenant-s")
    env.ready("workspaces", "ws-sess")
    env.kinds.create("codesessions", "s1", {"workspaceRef": "ws-sess"})
    status = env.phase("s1", "Ready")
    uid = env.kinds.get("codesessions", "s1")["metadata"]["uid"]  # type: ignore[index]
    assert status["endpoint"] == f"http://s1-session.{env.ns}.svc:8080"
    assert status["tokenSecret"] == "s1-token"
    assert status["podName"] == "s1-session"
    assert status["workspaceId"] == "tenant-s"
    assert status["startTime"]
    for cond in ("Ready", "WorkspaceFound", "Admitted"):
        assert env.kinds.condition("codesessions", "s1", cond)["status"] == "True", cond

    pod = env.pod("s1-session")
    assert pod is not None
    assert pod.spec.node_name == env.cluster.node_name
    _owned_by(pod, "CodeSession", "s1", uid)
    _owned_by(env.core.read_namespaced_service("s1-session", env.ns), "CodeSession", "s1", uid)
    _owned_by(env.core.read_namespaced_secret("s1-token", env.ns), "CodeSession", "s1", uid)
    assert len(env.secret("s1-token")["token"]) >= 32
    container = pod.spec.containers[0]
    env_vars = {e.name: e for e in container.env}
    assert env_vars["REDIS_URL"].value_from.secret_key_ref.name == "ws-sess-redis"
    assert env_vars["CONTAINER_AUTH_TOKEN"].value_from.secret_key_ref.name == "s1-token"
    assert env_vars["WORKSPACE_ID"].value == "tenant-s"
    assert pod.spec.security_context.run_as_non_root is True
    assert container.security_context.read_only_root_filesystem is True
    # one server session per pod, as a uid of the pod's own, with the workspace's quotas
    assert env_vars["MAX_SESSIONS"].value == "1"
    assert env_vars["STORAGE_MAX_BYTES"].value == str(2**30)
    assert env_vars["STORAGE_MAX_ARTIFACT_BYTES"].value == str(64 * 2**20)
    assert env_vars["STORAGE_MAX_WORKFLOWS"].value == "1000"
    run_as = pod.spec.security_context.run_as_user
    assert run_as == session_uid(uid) and run_as >= 100000
    assert pod.spec.security_context.run_as_group == run_as

    old_uid = pod.metadata.uid
    env.core.delete_namespaced_pod("s1-session", env.ns, grace_period_seconds=0)

    def recreated() -> bool:
        new = env.pod("s1-session")
        return bool(
            new is not None
            and new.metadata.uid != old_uid
            and new.metadata.deletion_timestamp is None
        )

    env.wait(recreated, 30, "pod recreated")
    env.phase("s1", "Ready")
    again = env.pod("s1-session")
    assert again is not None and again.spec.security_context.run_as_user == run_as
    pods = env.core.list_namespaced_pod(env.ns, label_selector=f"{SESSION_LABEL}=s1").items
    assert len([p for p in pods if p.metadata.deletion_timestamp is None]) == 1


def test_session_status_writes_refuse_a_stale_version(env: Env) -> None:
    """The operator's conditional status write: the real API server refuses a write made
    on an old resourceVersion instead of letting it overwrite a newer one."""
    from codemode_operator.kube import Kube

    env.workspace("ws-cas")
    env.kinds.create("codesessions", "cas", {"workspaceRef": "ws-cas"})
    kube = Kube(env.api)
    stale = env.kinds.get("codesessions", "cas")
    assert stale is not None
    env.kinds.patch("codesessions", "cas", {"metadata": {"labels": {"touched": "yes"}}})
    with pytest.raises(client.ApiException) as refused:
        kube.patch_status(
            "codesessions",
            env.ns,
            "cas",
            {"reason": "Stale"},
            resource_version=stale["metadata"]["resourceVersion"],
        )
    assert refused.value.status == 409
    assert env.kinds.status("codesessions", "cas").get("reason") != "Stale"
    # a write on the version just read lands (the operator and kopf write this object
    # too, so a conflict can still happen: read again, as the operator does)
    for _ in range(5):
        fresh = env.kinds.get("codesessions", "cas")
        assert fresh is not None
        try:
            kube.patch_status(
                "codesessions",
                env.ns,
                "cas",
                {"lastActivityTime": None},
                resource_version=fresh["metadata"]["resourceVersion"],
            )
            break
        except client.ApiException as exc:
            assert exc.status == 409
    else:
        raise AssertionError("five conditional writes on fresh reads all conflicted")


def test_watchdog_repairs_a_session_status_that_fell_behind_its_pod(env: Env) -> None:
    """A session whose status says Starting while its pod is Ready (an event lost while
    the operator was busy) is put right by the periodic check, with no new pod event."""
    env.workspace("ws-behind")
    env.ready("workspaces", "ws-behind")
    env.kinds.create("codesessions", "behind", {"workspaceRef": "ws-behind"})
    env.phase("behind", "Ready")
    pod_uid = env.pod("behind-session").metadata.uid
    env.kinds.custom.patch_namespaced_custom_object_status(
        "codemode.dev",
        "v1alpha1",
        env.ns,
        "codesessions",
        "behind",
        {"status": {"phase": "Starting", "reason": "PodStarting", "podResourceVersion": "1"}},
    )
    assert env.kinds.status("codesessions", "behind")["phase"] == "Starting"
    # the operator here polls every second: checks every 6 s, repairs after 24 s of age
    env.phase("behind", "Ready", timeout=60)
    assert env.pod("behind-session").metadata.uid == pod_uid  # repaired, not recreated


def test_session_waits_for_missing_workspace(env: Env) -> None:
    env.kinds.create("codesessions", "early", {"workspaceRef": "ws-late"})
    env.wait(
        lambda: (
            env.kinds.condition("codesessions", "early", "WorkspaceFound").get("status") == "False"
        ),
        30,
        "WorkspaceFound False",
    )
    status = env.kinds.status("codesessions", "early")
    assert status["phase"] == "Pending" and status["reason"] == "WorkspaceNotFound"
    assert env.pod("early-session") is None
    env.workspace("ws-late")
    status = env.phase("early", "Ready", timeout=45)
    found = env.kinds.condition("codesessions", "early", "WorkspaceFound")
    assert found["status"] == "True", status


def test_max_sessions_admission(env: Env) -> None:
    env.workspace("ws-one", limits={"maxSessions": 1})
    env.ready("workspaces", "ws-one")
    env.kinds.create("codesessions", "one-a", {"workspaceRef": "ws-one"})
    env.phase("one-a", "Ready")
    env.kinds.create("codesessions", "one-b", {"workspaceRef": "ws-one"})
    env.wait(
        lambda: env.kinds.status("codesessions", "one-b").get("reason") == "SessionLimitReached",
        30,
        "second session over the limit",
    )
    status = env.kinds.status("codesessions", "one-b")
    assert status["phase"] == "Pending"
    admitted = env.kinds.condition("codesessions", "one-b", "Admitted")
    assert admitted["status"] == "False" and "maxSessions" in admitted["message"]
    env.stays(lambda: env.pod("one-b-session") is None, 2, "no pod for the session over the limit")
    assert env.pod("one-b-session") is None
    env.kinds.delete("codesessions", "one-a")
    env.phase("one-b", "Ready", timeout=45)
    assert env.pod("one-b-session") is not None


def test_idle_timeout_terminates_session(env: Env) -> None:
    env.workspace("ws-idle")
    env.ready("workspaces", "ws-idle")
    env.kinds.create("codesessions", "idle", {"workspaceRef": "ws-idle", "idleTimeout": "2s"})
    env.phase("idle", "Terminated", timeout=45)
    status = env.kinds.status("codesessions", "idle")
    assert status["reason"] == "IdleTimeout"
    ready = env.kinds.condition("codesessions", "idle", "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "IdleTimeout")
    env.wait(lambda: env.pod("idle-session") is None, 30, "idle pod deleted")
    env.stays(
        lambda: (
            env.pod("idle-session") is None
            and env.kinds.status("codesessions", "idle").get("phase") == "Terminated"
        ),
        3,
        "the idle session staying Terminated with its pod deleted",
    )
    assert env.pod("idle-session") is None
    assert env.kinds.status("codesessions", "idle")["phase"] == "Terminated"


# ---- deletion policy ---------------------------------------------------------------------


def _events(env: Env, name: str, reason: str) -> list[Any]:
    events = env.core.list_namespaced_event(
        env.ns, field_selector=f"involvedObject.name={name}"
    ).items
    return [e for e in events if e.reason == reason]


def test_deletion_policy_refuse(env: Env) -> None:
    env.workspace("ws-refuse", deletionPolicy="Refuse")
    env.ready("workspaces", "ws-refuse")
    env.kinds.create("codesessions", "keeper", {"workspaceRef": "ws-refuse"})
    env.phase("keeper", "Ready")
    env.kinds.delete("workspaces", "ws-refuse")
    env.wait(lambda: _events(env, "ws-refuse", "DeletionBlocked"), 30, "DeletionBlocked event")
    event = _events(env, "ws-refuse", "DeletionBlocked")[0]
    assert event.type == "Warning" and "Refuse" in event.message
    obj = env.kinds.get("workspaces", "ws-refuse")
    assert obj is not None and obj["metadata"].get("deletionTimestamp")
    assert env.kinds.get("codesessions", "keeper") is not None
    env.kinds.delete("codesessions", "keeper")
    env.gone("workspaces", "ws-refuse", timeout=45)


def test_deletion_policy_cascade_and_data_delete(env: Env) -> None:
    spec = env.workspace(
        "ws-casc", workspaceId="tenant-c", deletionPolicy="Cascade", dataPolicy="Delete"
    )
    prefix = spec["prefix"]
    env.ready("workspaces", "ws-casc")
    env.kinds.create("codesessions", "casc-s", {"workspaceRef": "ws-casc"})
    env.kinds.create(
        "workflowlibraries",
        "casc-lib",
        {
            "workspaceRef": "ws-casc",
            "suspend": True,
            "source": {"url": "https://git.example/r.git"},
        },
    )
    env.phase("casc-s", "Ready")
    admin = env.admin()
    username = f"codemode:{env.ns}:ws-casc"
    assert admin.acl_getuser(username) is not None
    for i in range(5):
        admin.set(f"{prefix}:ws:tenant-c:artifacts:{i}", b"x")
    admin.set(f"{prefix}:ws:tenant-other:artifacts:0", b"keep")
    admin.set(f"{prefix}:deps:deps", b"shared")

    env.kinds.delete("workspaces", "ws-casc")
    env.gone("workspaces", "ws-casc", timeout=60)
    assert env.kinds.get("codesessions", "casc-s") is None
    assert env.kinds.get("workflowlibraries", "casc-lib") is None
    assert list(admin.scan_iter(f"{prefix}:ws:tenant-c:*")) == []
    assert admin.get(f"{prefix}:ws:tenant-other:artifacts:0") == b"keep"
    assert admin.get(f"{prefix}:deps:deps") == b"shared"
    assert admin.acl_getuser(username) is None


# ---- WorkflowLibrary ---------------------------------------------------------------------


def _jobs(env: Env, library: str) -> list[Any]:
    return list(
        env.batch.list_namespaced_job(
            env.ns, label_selector=f"codemode.dev/library={library}"
        ).items
    )


def test_library_sync_job_and_backoff(env: Env) -> None:
    env.workspace("ws-lib", workspaceId="tenant-l")
    env.ready("workspaces", "ws-lib")
    env.kinds.create(
        "workflowlibraries",
        "lib",
        {
            "workspaceRef": "ws-lib",
            "source": {
                "url": "https://git.example/flows.git",
                "ref": {"tag": "v1.2.0"},
                "path": "workflows",
            },
        },
    )
    job_name = env.wait(
        lambda: env.kinds.status("workflowlibraries", "lib").get("jobName"), 30, "sync Job started"
    )
    job = env.batch.read_namespaced_job(job_name, env.ns)
    uid = env.kinds.get("workflowlibraries", "lib")["metadata"]["uid"]  # type: ignore[index]
    _owned_by(job, "WorkflowLibrary", "lib", uid)
    container = job.spec.template.spec.containers[0]
    args = container.args
    assert args[:2] == ["store", "bootstrap"]
    assert args[args.index("--git") + 1] == "https://git.example/flows.git"
    assert args[args.index("--ref") + 1] == "v1.2.0"
    assert args[args.index("--path") + 1] == "workflows"
    assert args[args.index("--library") + 1] == "lib"
    assert "redis://" not in " ".join(args)
    env_vars = {e.name: e for e in container.env}
    ref = env_vars["REDIS_URL"].value_from.secret_key_ref
    assert (ref.name, ref.key) == ("ws-lib-redis", "url")
    assert env_vars["WORKSPACE_ID"].value == "tenant-l"
    assert job.spec.template.spec.automount_service_account_token is False

    # On kwok the Job's pod "succeeds" without printing a result: a failed sync.
    env.wait(
        lambda: env.kinds.condition("workflowlibraries", "lib", "Stalled").get("status") == "True",
        60,
        "Stalled True",
    )
    stalled = env.kinds.condition("workflowlibraries", "lib", "Stalled")
    assert stalled["reason"] == "SyncFailed" and "without a result" in stalled["message"]
    assert env.kinds.condition("workflowlibraries", "lib", "Ready")["status"] == "False"
    env.wait(
        lambda: int(env.kinds.status("workflowlibraries", "lib").get("failures") or 0) >= 2,
        60,
        "failures counting up",
    )
    status = env.kinds.status("workflowlibraries", "lib")
    assert "artifact" not in status or status["artifact"] is None
    # Finished Jobs are cleaned up: at most the one in flight remains.
    env.wait(
        lambda: len([j for j in _jobs(env, "lib") if j.metadata.deletion_timestamp is None]) <= 1,
        30,
        "finished Jobs deleted",
    )


def test_library_suspend_creates_no_job(env: Env) -> None:
    env.workspace("ws-susp")
    env.ready("workspaces", "ws-susp")
    env.kinds.create(
        "workflowlibraries",
        "susp",
        {
            "workspaceRef": "ws-susp",
            "suspend": True,
            "source": {"url": "https://git.example/flows.git"},
        },
    )
    env.wait(
        lambda: (
            env.kinds.condition("workflowlibraries", "susp", "Reconciling").get("reason")
            == "Suspended"
        ),
        30,
        "Reconciling Suspended",
    )
    env.stays(
        lambda: (
            _jobs(env, "susp") == []
            and not env.kinds.status("workflowlibraries", "susp").get("jobName")
        ),
        3,
        "no sync Job for the suspended library",
    )
    assert _jobs(env, "susp") == []
    assert not env.kinds.status("workflowlibraries", "susp").get("jobName")


def test_library_delete_prunes_owned_workflows(env: Env) -> None:
    spec = env.workspace("ws-prune", workspaceId="tenant-p")
    env.ready("workspaces", "ws-prune")

    async def seed() -> None:
        storage = RedisStorage(env.redis.url, prefix=spec["prefix"], workspace_id="tenant-p")
        try:
            flows = [
                Workflow(name=f"lib_flow_{i}", source=f"def run():\n    return {i}\n")
                for i in range(3)
            ]
            await storage.apply_library(
                "pruned", flows, [], LibraryRecord("abc1234", "d" * 64, 3, time.time())
            )
            await storage.apply_library(
                "other-lib",
                [Workflow(name="other_flow", source="def run():\n    return 0\n")],
                [],
                None,
            )
            await storage.save_workflow(
                Workflow(name="agent_flow", source="def run():\n    return 'a'\n")
            )
        finally:
            await storage.close()

    async def names() -> list[str]:
        storage = RedisStorage(env.redis.url, prefix=spec["prefix"], workspace_id="tenant-p")
        try:
            return [w.name for w in await storage.list_workflows()]
        finally:
            await storage.close()

    asyncio.run(seed())
    assert asyncio.run(names()) == [
        "agent_flow",
        "lib_flow_0",
        "lib_flow_1",
        "lib_flow_2",
        "other_flow",
    ]
    env.kinds.create(
        "workflowlibraries",
        "pruned",
        {
            "workspaceRef": "ws-prune",
            "suspend": True,
            "prune": True,
            "source": {"url": "https://git.example/flows.git"},
        },
    )
    env.wait(
        lambda: (
            "codemode.dev/finalizer"
            in (env.kinds.get("workflowlibraries", "pruned") or {})
            .get("metadata", {})
            .get("finalizers", [])
        ),
        30,
        "library finalizer",
    )
    env.kinds.delete("workflowlibraries", "pruned")
    env.gone("workflowlibraries", "pruned")
    assert asyncio.run(names()) == ["agent_flow", "other_flow"]
    assert env.admin().exists(f"{spec['prefix']}:ws:tenant-p:libraries:pruned") == 0
    # The delete handler's Event says what it pruned; kopf posts Events from a queue, so it
    # may land after the library is gone.
    pruned = env.wait(
        lambda: [
            e for e in _events(env, "pruned", "Deleted") if e.message == "pruned 3 workflow(s)"
        ],
        30,
        "Deleted event naming the pruned workflows",
    )
    assert pruned[0].type == "Normal"


# ---- restart -----------------------------------------------------------------------------


def test_operator_killed_mid_reconcile_converges(
    k8s_cluster: Cluster,
    env: Env,
    tmp_path_factory: pytest.TempPathFactory,
    request: pytest.FixtureRequest,
) -> None:
    failed_before = request.session.testsfailed
    with temp_namespace(env.api, "t-op-restart") as ns:
        kinds = Kinds(env.api, ns)
        op = OperatorProcess(
            k8s_cluster.kubeconfig,
            [ns],
            {"SESSION_POLL_SECONDS": "1"},
            log_dir=tmp_path_factory.mktemp("operator-restart"),
        ).start()
        op.wait_started()
        try:
            kinds.create(
                "workspaces",
                "ws",
                {"redis": {"url": env.redis.url}, "prefix": f"t{uuid.uuid4().hex[:10]}"},
            )
            wait_for(
                lambda: kinds.condition("workspaces", "ws", "Ready").get("status") == "True",
                30,
                "workspace Ready",
                op=op,
            )
            names = [f"s{i}" for i in range(10)]
            for name in names:
                kinds.create("codesessions", name, {"workspaceRef": "ws"})
            # Kill it once it is part-way through: some children exist, not all sessions Ready.
            wait_for(
                lambda: env.core.list_namespaced_pod(ns, label_selector=SESSION_LABEL).items,
                30,
                "first pod",
                0.02,
                op=op,
            )
            op.kill()
            ready_at_kill = sum(
                kinds.status("codesessions", n).get("phase") == "Ready" for n in names
            )
            op.start().wait_started()  # before asserting: cleanup needs a running operator
            # Otherwise the kill came too late and the restart had nothing left to finish.
            assert ready_at_kill < len(names), "every session was Ready before the kill"

            def all_ready() -> bool:
                return all(kinds.status("codesessions", n).get("phase") == "Ready" for n in names)

            wait_for(all_ready, 90, "all 10 sessions Ready after restart", op=op)
            by_label = f"{SESSION_LABEL}"

            def no_duplicates() -> bool:
                """No session owns two live pods, services or secrets."""
                listed = (
                    [
                        p
                        for p in env.core.list_namespaced_pod(ns, label_selector=by_label).items
                        if p.metadata.deletion_timestamp is None
                    ],
                    env.core.list_namespaced_service(ns, label_selector=by_label).items,
                    env.core.list_namespaced_secret(ns, label_selector=by_label).items,
                )
                for objs in listed:
                    owners = [o.metadata.labels[SESSION_LABEL] for o in objs]
                    if len(owners) != len(set(owners)):
                        return False
                return True

            # A late duplicate attempt from before the kill would land in this window.
            stays_true_for(no_duplicates, 2, "one pod, service and secret per session", op=op)
            pods = [
                p
                for p in env.core.list_namespaced_pod(ns, label_selector=by_label).items
                if p.metadata.deletion_timestamp is None
            ]
            services = env.core.list_namespaced_service(ns, label_selector=by_label).items
            secrets = env.core.list_namespaced_secret(ns, label_selector=by_label).items
            for objs, what in ((pods, "pods"), (services, "services"), (secrets, "secrets")):
                owners = sorted(o.metadata.labels[SESSION_LABEL] for o in objs)
                assert owners == sorted(names), f"{what}: {owners}"
            for name in names:
                obj = kinds.get("codesessions", name)
                assert obj is not None
                pod = next(p for p in pods if p.metadata.labels[SESSION_LABEL] == name)
                assert pod.metadata.owner_references[0].uid == obj["metadata"]["uid"]
        finally:
            for name in [f"s{i}" for i in range(10)]:
                kinds.delete("codesessions", name)
            kinds.patch("workspaces", "ws", {"spec": {"deletionPolicy": "Cascade"}})
            kinds.delete("workspaces", "ws")
            wait_for(lambda: kinds.get("workspaces", "ws") is None, 30, "cleanup", op=op)
            op.stop()
            report_log_on_failure(request, op, failed_before)
