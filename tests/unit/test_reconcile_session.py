"""CodeSession reconcile paths on the in-memory Kube: admission and limits, every pod
state, idle and lifetime ends, and the committer's version and guard rules."""

from __future__ import annotations

import http.server
import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from codemode_operator.api.codesession import CodeSessionStatus
from codemode_operator.commit import Committer, Outcome
from codemode_operator.conditions import condition, iso
from codemode_operator.kube import Obj
from codemode_operator.reconcile import Retry
from codemode_operator.reconcile import session as rec
from codemode_operator.settings import OperatorConfig
from codemode_operator.vocabulary import ConditionType, Phase, Reason

from tests.unit.fake_kube import NS, Events, FakeKube, pod_status, session, workspace

CFG = OperatorConfig.from_env({})


pytestmark = pytest.mark.usefixtures("fresh_caches", "no_redis")


@pytest.fixture
def no_redis(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, ...]]:
    """What the reconciler asked Redis to forget (never a real connection here)."""
    forgotten: list[tuple[str, ...]] = []
    monkeypatch.setattr(rec, "forget_state", lambda *args: forgotten.append(args) or True)
    return forgotten


@pytest.fixture
def committer(kube: FakeKube, events: Events) -> Committer:
    def post(obj: Obj, type_: str, reason: str, message: str) -> None:
        events.append((obj["metadata"]["name"], type_, reason, message))

    return Committer(kube, post)


def run(
    kube: FakeKube,
    committer: Committer,
    name: str = "s1",
    periodic: bool = False,
    clock: Any = time.time,
) -> CodeSessionStatus:
    done = committer.commit(
        rec.SESSION,
        kube.get("codesessions", NS, name),
        lambda obj: rec.reconcile(kube, CFG, obj, periodic, clock),
    )
    assert done is not None
    return done.new


def status(kube: FakeKube, name: str = "s1") -> CodeSessionStatus:
    obj = kube.get("codesessions", NS, name)
    assert obj is not None
    return rec.SESSION.read(obj)


def cond(st: CodeSessionStatus, type_: ConditionType) -> tuple[str, str]:
    found = condition(st.conditions, type_)
    assert found is not None, type_
    return found.status, found.reason


def kstatus(st: CodeSessionStatus) -> tuple[str, str, str]:
    return tuple(
        cond(st, t)[0]
        for t in (ConditionType.READY, ConditionType.RECONCILING, ConditionType.STALLED)
    )  # type: ignore[return-value]


def set_pod(kube: FakeKube, name: str = "s1", **state: Any) -> Obj:
    return kube.edit(
        "pods", NS, f"{name}-session", lambda pod: pod.__setitem__("status", pod_status(**state))
    )


# ---- waiting for the workspace -----------------------------------------------------------


def test_missing_workspace_waits(kube: FakeKube, committer: Committer) -> None:
    kube.put("codesessions", session(workspace_ref="nope"))
    st = run(kube, committer)
    assert (st.phase, st.reason) == (Phase.PENDING, Reason.WORKSPACE_NOT_FOUND)
    assert cond(st, ConditionType.WORKSPACE_FOUND) == ("False", "WorkspaceNotFound")
    assert kstatus(st) == ("False", "True", "False")
    assert st.observed_generation == 1
    assert kube.names("pods") == []


def test_workspace_without_credentials_waits(kube: FakeKube, committer: Committer) -> None:
    kube.put("workspaces", workspace("raw", ready=False))
    kube.put("codesessions", session(workspace_ref="raw"))
    st = run(kube, committer)
    assert (st.phase, st.reason) == (Phase.PENDING, Reason.WORKSPACE_NOT_READY)
    assert cond(st, ConditionType.WORKSPACE_FOUND) == ("True", "Found")
    assert kube.names("pods") == []


# ---- admission and children --------------------------------------------------------------


def test_admission_is_recorded_before_any_child_is_created(
    kube: FakeKube, committer: Committer, events: Events
) -> None:
    kube.put("codesessions", session())
    st = run(kube, committer)
    writes = [i for i, c in enumerate(kube.calls) if c[0] == "patch_status"]
    creates = [i for i, c in enumerate(kube.calls) if c[0] in ("ensure", "create_pod")]
    assert len(writes) == 1 and writes[0] < creates[0]  # admission and pod name in one write
    assert cond(st, ConditionType.ADMITTED) == ("True", "WithinLimit")
    assert condition(st.conditions, ConditionType.ADMITTED).message == "1 of 10 sessions"  # type: ignore[union-attr]
    assert (st.phase, st.reason) == (Phase.STARTING, Reason.POD_STARTING)
    assert kstatus(st) == ("False", "True", "False")
    assert (st.pod_name, st.token_secret, st.workspace_id) == ("s1-session", "s1-token", "ws")
    assert kube.names("pods") == ["s1-session"]
    assert kube.names("services") == ["s1-session"]
    assert kube.names("secrets") == ["s1-token"]
    assert st.pod_resource_version is None  # no look at the pod yet: its events bring one
    assert st.pod_recreations is None
    assert events == []  # a first start is no news; Ready will be


def test_ready_pod_makes_a_ready_session(
    kube: FakeKube, committer: Committer, events: Events
) -> None:
    kube.put("codesessions", session())
    run(kube, committer)
    set_pod(kube, ready=True)
    st = run(kube, committer)
    assert (st.phase, st.reason) == (Phase.READY, Reason.POD_READY)
    assert st.endpoint == f"http://s1-session.{NS}.svc:8080"
    assert st.start_time
    assert kstatus(st) == ("True", "False", "False")
    assert events == []  # a first start is in the status, not in Events
    token = kube.get("secrets", NS, "s1-token")["stringData"]["token"]  # type: ignore[index]
    run(kube, committer)
    assert kube.get("secrets", NS, "s1-token")["stringData"]["token"] == token  # type: ignore[index]


def test_an_unchanged_status_is_not_written(kube: FakeKube, committer: Committer) -> None:
    kube.put("codesessions", session())
    run(kube, committer)
    set_pod(kube, ready=True)
    run(kube, committer)
    writes, creates = len(kube.called("patch_status")), len(kube.called("ensure"))
    run(kube, committer, periodic=True)
    assert len(kube.called("patch_status")) == writes
    assert len(kube.called("ensure")) == creates  # the periodic look made no create calls


def test_session_limit(kube: FakeKube, committer: Committer) -> None:
    kube.put("workspaces", workspace("one", limits={"maxSessions": 1}))
    for name in ("a", "b"):
        kube.put("codesessions", session(name, workspace_ref="one"))
    assert run(kube, committer, "a").phase == Phase.STARTING
    st = run(kube, committer, "b")
    assert (st.phase, st.reason) == (Phase.PENDING, Reason.SESSION_LIMIT_REACHED)
    assert cond(st, ConditionType.ADMITTED) == ("False", "SessionLimitReached")
    assert "maxSessions" in (
        condition(st.conditions, ConditionType.ADMITTED).message  # type: ignore[union-attr]
        or ""
    )
    assert kstatus(st) == ("False", "True", "False")
    assert kube.names("pods") == ["a-session"]
    kube.remove("codesessions", NS, "a")  # a slot frees: the next look lists again
    assert run(kube, committer, "b").phase == Phase.STARTING
    assert kube.names("pods") == ["a-session", "b-session"]


def test_admission_lists_only_at_the_limit(kube: FakeKube, committer: Committer) -> None:
    kube.put("workspaces", workspace("big", limits={"maxSessions": 3}))
    for i in range(3):
        kube.put("codesessions", session(f"s{i}", workspace_ref="big"))
        run(kube, committer, f"s{i}")
    assert len(kube.called("list_custom")) == 1  # the first admission's only
    kube.put("codesessions", session("s3", workspace_ref="big"))
    assert run(kube, committer, "s3").reason == Reason.SESSION_LIMIT_REACHED
    assert len(kube.called("list_custom")) == 2


def test_ended_sessions_free_their_slot(kube: FakeKube, committer: Committer) -> None:
    kube.put("workspaces", workspace("one", limits={"maxSessions": 1}))
    kube.put("codesessions", session("old", workspace_ref="one"))
    kube.put("codesessions", session("new", workspace_ref="one"))
    run(kube, committer, "old")
    kube.edit(
        "codesessions",
        NS,
        "old",
        lambda o: o["status"].update(phase="Terminated", reason="IdleTimeout"),
    )
    assert run(kube, committer, "new").phase == Phase.STARTING


def test_a_failed_admission_write_keeps_no_child(kube: FakeKube, committer: Committer) -> None:
    kube.put("codesessions", session())
    kube.fail["patch_status"] = RuntimeError("API down")
    with pytest.raises(RuntimeError):
        run(kube, committer)
    assert kube.names("pods") == [] and kube.names("secrets") == []
    assert run(kube, committer).phase == Phase.STARTING  # the reservation is its own


# ---- pod states --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pod", "expected"),
    [
        (None, (Phase.PENDING, "PodMissing")),
        (
            {
                "metadata": {"deletionTimestamp": "2026-01-01T00:00:00Z"},
                "status": pod_status(ready=True),
            },
            (Phase.STARTING, "PodTerminating"),
        ),
        ({"status": {"phase": "Failed"}}, (Phase.FAILED, "PodFailed")),
        ({"status": {"phase": "Succeeded"}}, (Phase.FAILED, "PodSucceeded")),
        ({"status": pod_status(ready=True)}, (Phase.READY, "PodReady")),
        (
            {"status": pod_status(phase="Pending", unschedulable="Unschedulable")},
            (Phase.STARTING, "Unschedulable"),
        ),
        (
            {"status": pod_status(phase="Pending", waiting="ErrImagePull")},
            (Phase.STARTING, "ErrImagePull"),
        ),
        (
            {"status": pod_status(phase="Pending", waiting="ImagePullBackOff")},
            (Phase.STARTING, "ImagePullBackOff"),
        ),
        (
            # imagePullPolicy Never and the image is not on the node: no pull will fix it
            {"status": pod_status(phase="Pending", waiting="ErrImageNeverPull")},
            (Phase.STARTING, "ErrImageNeverPull"),
        ),
        ({"status": pod_status(waiting="CrashLoopBackOff")}, (Phase.STARTING, "CrashLoopBackOff")),
        (
            {"status": pod_status(waiting="CreateContainerConfigError")},
            (Phase.STARTING, "CreateContainerConfigError"),
        ),
        ({"status": pod_status(waiting="InvalidImageName")}, (Phase.STARTING, "InvalidImageName")),
        ({"status": pod_status(waiting="ContainerCreating")}, (Phase.STARTING, "PodStarting")),
        ({"status": {}}, (Phase.STARTING, "PodStarting")),
        ({}, (Phase.STARTING, "PodStarting")),
    ],
)
def test_pod_state(pod: Obj | None, expected: tuple[Phase, str]) -> None:
    assert rec.pod_state(pod) == expected


@pytest.mark.parametrize(
    "reason",
    [
        "ErrImagePull",
        "ErrImageNeverPull",
        "ImagePullBackOff",
        "CrashLoopBackOff",
        "CreateContainerConfigError",
        "InvalidImageName",
    ],
)
def test_a_pod_that_needs_a_fix_stalls_the_session(
    kube: FakeKube, committer: Committer, reason: str
) -> None:
    kube.put("codesessions", session())
    run(kube, committer)
    set_pod(kube, phase="Pending", waiting=reason)
    st = run(kube, committer)
    assert (st.phase, st.reason) == (Phase.STARTING, reason)
    assert kstatus(st) == ("False", "False", "True")
    assert cond(st, ConditionType.STALLED) == ("True", reason)


def test_unschedulable_pod_keeps_reconciling(kube: FakeKube, committer: Committer) -> None:
    kube.put("codesessions", session())
    run(kube, committer)
    set_pod(kube, phase="Pending", unschedulable="Unschedulable")
    st = run(kube, committer)
    assert (st.phase, st.reason) == (Phase.STARTING, "Unschedulable")
    assert kstatus(st) == ("False", "True", "False")


@pytest.mark.parametrize("phase", ["Failed", "Succeeded"])
def test_a_failed_pod_is_replaced(kube: FakeKube, committer: Committer, phase: str) -> None:
    kube.put("codesessions", session())
    run(kube, committer)
    first_uid = kube.get("pods", NS, "s1-session")["metadata"]["uid"]  # type: ignore[index]
    set_pod(kube, phase=phase)
    st = run(kube, committer)
    pod = kube.get("pods", NS, "s1-session")
    assert pod is not None and pod["metadata"]["uid"] != first_uid
    assert (st.phase, st.pod_recreations) == (Phase.STARTING, 1)
    assert kube.called("delete_pod") == [("delete_pod", "s1-session")]


def test_a_deleted_pod_is_recreated(kube: FakeKube, committer: Committer) -> None:
    kube.put("codesessions", session())
    run(kube, committer)
    set_pod(kube, ready=True)
    run(kube, committer)
    kube.remove("pods", NS, "s1-session")
    st = run(kube, committer)
    assert kube.names("pods") == ["s1-session"]
    assert (st.phase, st.pod_recreations) == (Phase.STARTING, 1)
    assert st.start_time  # the session's start, not the new pod's


def test_a_pod_gone_between_create_and_read(
    kube: FakeKube, committer: Committer, monkeypatch: pytest.MonkeyPatch
) -> None:
    kube.put("codesessions", session())
    with monkeypatch.context() as patched:
        patched.setattr(kube, "create_pod", lambda manifest: (None, False))
        st = run(kube, committer)
    # admitted and named before the create; the pod's DELETED event reconciles again
    assert (st.phase, st.pod_name, kube.names("pods")) == (Phase.STARTING, "s1-session", [])
    st = run(kube, committer)
    assert kube.names("pods") == ["s1-session"] and st.pod_recreations is None


# ---- idle and lifetime -------------------------------------------------------------------


def ready_session(kube: FakeKube, committer: Committer, **spec: Any) -> None:
    kube.put("codesessions", session(**spec))
    run(kube, committer)
    set_pod(kube, ready=True)
    run(kube, committer)


def test_max_lifetime_ends_the_session(
    kube: FakeKube, committer: Committer, events: Events
) -> None:
    ready_session(kube, committer, maxLifetime="1h")
    start = time.time()
    order_before = len(kube.calls)
    st = run(kube, committer, clock=lambda: start + 3601)
    assert (st.phase, st.reason, st.endpoint) == (
        Phase.TERMINATED,
        Reason.MAX_LIFETIME_EXCEEDED,
        None,
    )
    assert kstatus(st) == ("False", "False", "False")
    assert status(kube).phase == Phase.TERMINATED
    later = [c[0] for c in kube.calls[order_before:]]
    assert later.index("patch_status") < later.index("delete_pod") < later.index("delete_service")
    assert kube.names("pods") == [] and kube.names("services") == []
    assert events[-1][:3] == ("s1", "Warning", "MaxLifetimeExceeded")


def test_idle_timeout_ends_the_session(kube: FakeKube, committer: Committer) -> None:
    ready_session(kube, committer, idleTimeout="10m")
    start = time.time()
    assert run(kube, committer, clock=lambda: start + 60).phase == Phase.READY
    st = run(kube, committer, clock=lambda: start + 601)
    assert (st.phase, st.reason) == (Phase.TERMINATED, Reason.IDLE_TIMEOUT)
    msg = condition(st.conditions, ConditionType.READY).message  # type: ignore[union-attr]
    assert msg == "no execution for 600s (idleTimeout)"


def test_activity_keeps_a_session(
    kube: FakeKube, committer: Committer, monkeypatch: pytest.MonkeyPatch
) -> None:
    ready_session(kube, committer, idleTimeout="10m")
    start = time.time()
    monkeypatch.setattr(rec, "server_health", lambda pod: {"last_activity": start + 500})
    st = run(kube, committer, periodic=True, clock=lambda: start + 900)
    assert st.phase == Phase.READY and st.last_activity_time == iso(start + 500)
    monkeypatch.setattr(rec, "server_health", lambda pod: {})  # server silent: last known
    assert run(kube, committer, periodic=True, clock=lambda: start + 1000).phase == Phase.READY
    st = run(kube, committer, periodic=True, clock=lambda: start + 1200)
    assert st.reason == Reason.IDLE_TIMEOUT


def test_an_ended_session_stays_ended(kube: FakeKube, committer: Committer) -> None:
    ready_session(kube, committer, maxLifetime="1s")
    run(kube, committer, clock=lambda: time.time() + 5)
    calls = len(kube.calls)
    kube.edit("codesessions", NS, "s1", lambda o: o["metadata"].update(generation=2))
    st = run(kube, committer)
    assert st.phase == Phase.TERMINATED and st.observed_generation == 2
    assert {c[0] for c in kube.calls[calls:]} == {"patch_status"}  # no child touched


def test_periodic_look_leaves_an_unstarted_session(kube: FakeKube, committer: Committer) -> None:
    kube.put("codesessions", session())
    st = run(kube, committer, periodic=True)
    assert st.phase is None and kube.names("pods") == []


def test_periodic_look_reads_the_workspace_once_per_ttl(
    kube: FakeKube, committer: Committer
) -> None:
    ready_session(kube, committer)
    reads = len(kube.called("get_custom"))
    for _ in range(5):
        run(kube, committer, periodic=True)
    assert len(kube.called("get_custom")) == reads


@pytest.fixture
def health_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    answer: dict[str, Any] = {"body": {"last_activity": 1234.5}}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            data = answer["body"]
            raw = data if isinstance(data, bytes) else json.dumps(data).encode()
            self.send_response(200)
            self.end_headers()
            self.wfile.write(raw)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    monkeypatch.setattr(rec, "PORT", server.server_address[1])
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield answer
    finally:
        server.shutdown()
        server.server_close()


def test_last_activity_from_the_server(health_server: dict[str, Any]) -> None:
    pod = {"status": {"podIP": "127.0.0.1"}}
    assert rec.last_activity(pod) == 1234.5
    health_server["body"] = {"last_activity": None}
    assert rec.last_activity(pod) is None
    health_server["body"] = b"not json"
    assert rec.last_activity(pod) is None
    assert rec.last_activity({"status": {}}) is None
    assert rec.last_activity(None) is None


# ---- the committer's rules on sessions ---------------------------------------------------


def test_a_concurrent_write_makes_the_status_computed_again(
    kube: FakeKube, committer: Committer
) -> None:
    kube.put("codesessions", session())
    run(kube, committer)
    set_pod(kube, ready=True)

    def pod_event_wrote_first(plural: str, namespace: str, name: str) -> None:
        kube.edit(
            plural,
            namespace,
            name,
            lambda o: o["status"].update(lastActivityTime="2026-01-01T00:00:00Z"),
        )

    kube.before_status_write = pod_event_wrote_first
    st = run(kube, committer)
    assert st.phase == Phase.READY
    assert status(kube).last_activity_time == "2026-01-01T00:00:00Z"  # theirs is kept
    assert len(kube.called("read_pod")) == 2  # computed twice on this look (none before)


def test_a_status_that_keeps_changing_is_retried_later(kube: FakeKube) -> None:
    kube.put("codesessions", session())
    committer = Committer(kube, attempts=3)

    def someone_writes(obj: Obj) -> Outcome[CodeSessionStatus]:
        kube.edit(
            "codesessions",
            NS,
            "s1",
            lambda o: o.setdefault("status", {}).update(reason=str(time.monotonic())),
        )
        return Outcome(CodeSessionStatus(phase=Phase.PENDING))

    with pytest.raises(Retry, match="keeps changing"):
        committer.commit(rec.SESSION, kube.get("codesessions", NS, "s1"), someone_writes)


def test_a_vanished_session_is_not_an_error(kube: FakeKube, committer: Committer) -> None:
    kube.put("codesessions", session())
    obj = kube.get("codesessions", NS, "s1")
    kube.remove("codesessions", NS, "s1")
    assert committer.commit(rec.SESSION, obj, lambda o: rec.reconcile(kube, CFG, o)) is None
    assert committer.commit(rec.SESSION, None, lambda o: rec.reconcile(kube, CFG, o)) is None


def test_phase_never_goes_back_to_an_older_pod_view() -> None:
    newer = CodeSessionStatus(
        phase=Phase.READY, reason="PodReady", podResourceVersion="20", endpoint="http://x"
    )
    older = CodeSessionStatus(
        phase=Phase.STARTING, reason="PodStarting", podResourceVersion="10", podName="s1-session"
    )
    kept = rec.guard(newer, older)
    assert (kept.phase, kept.pod_resource_version, kept.endpoint) == (Phase.READY, "20", "http://x")
    assert kept.pod_name == "s1-session"  # fields other than the phase's still land
    assert rec.guard(older, newer) == newer
    unknown = CodeSessionStatus(phase=Phase.STARTING, podResourceVersion="junk")
    assert rec.guard(unknown, older) == older


def test_nothing_revives_an_ended_session() -> None:
    ended = CodeSessionStatus(phase=Phase.TERMINATED, reason="IdleTimeout")
    assert rec.guard(ended, CodeSessionStatus(phase=Phase.READY)) == ended
    ready = CodeSessionStatus(phase=Phase.READY)
    assert rec.guard(ready, ended) == ended


# ---- durable sessions: state id, agent label, suspend and resume, idle suspend, fork ----


def test_the_pod_keeps_its_state_under_the_sessions_uid(
    kube: FakeKube, committer: Committer
) -> None:
    ready_session(kube, committer, agentId="agent-7")
    obj = kube.get("codesessions", NS, "s1")
    uid = obj["metadata"]["uid"]
    assert obj["metadata"]["labels"]["codemode.dev/agent"] == "agent-7"
    assert status(kube).state_id == f"cs.{uid}"
    env = {
        e["name"]: e.get("value")
        for e in kube.get("pods", NS, "s1-session")["spec"]["containers"][0]["env"]
    }
    assert env["SESSION_STATE_ID"] == f"cs.{uid}" and env["AGENT_ID"] == "agent-7"
    assert "SESSION_FORK_FROM" not in env


def test_suspend_deletes_the_pod_and_resume_brings_it_back(
    kube: FakeKube, committer: Committer
) -> None:
    ready_session(kube, committer)
    kube.edit("codesessions", NS, "s1", lambda o: o["spec"].update(suspend=True))
    st = run(kube, committer)
    assert (st.phase, st.reason, st.endpoint) == (Phase.SUSPENDED, Reason.SUSPENDED, None)
    assert kstatus(st) == ("False", "False", "False")
    assert cond(st, ConditionType.READY) == ("False", Reason.SUSPENDED)
    assert kube.get("pods", NS, "s1-session") is None
    assert kube.get("services", NS, "s1-session") is None
    calls = len(kube.calls)
    assert run(kube, committer).phase == Phase.SUSPENDED
    assert {c[0] for c in kube.calls[calls:]} <= {"get_custom", "patch_status"}
    kube.edit("codesessions", NS, "s1", lambda o: o["spec"].update(suspend=False))
    st = run(kube, committer)
    assert st.phase == Phase.STARTING and st.suspended_at is None
    assert kube.get("pods", NS, "s1-session") is not None
    assert kube.get("services", NS, "s1-session") is not None
    assert not st.pod_recreations  # a resume is not a failure
    set_pod(kube, ready=True)
    assert run(kube, committer).phase == Phase.READY


def test_idle_suspend_sets_spec_suspend(
    kube: FakeKube, committer: Committer, monkeypatch: pytest.MonkeyPatch
) -> None:
    ready_session(kube, committer, idleTimeout="10m", idleAction="Suspend")
    monkeypatch.setattr(rec, "server_health", lambda pod: {})
    st = run(kube, committer, periodic=True, clock=lambda: time.time() + 900)
    assert st.phase == Phase.SUSPENDED
    assert kube.get("codesessions", NS, "s1")["spec"]["suspend"] is True
    assert kube.get("pods", NS, "s1-session") is None


def test_a_suspended_session_past_its_retention_goes_with_its_state(
    kube: FakeKube, committer: Committer, no_redis: list[tuple[str, ...]]
) -> None:
    ready_session(kube, committer, suspendedRetention="1h")
    uid = kube.get("codesessions", NS, "s1")["metadata"]["uid"]
    kube.edit("codesessions", NS, "s1", lambda o: o["spec"].update(suspend=True))
    run(kube, committer)
    assert no_redis == []
    committer.commit(
        rec.SESSION,
        kube.get("codesessions", NS, "s1"),
        lambda obj: rec.reconcile(kube, CFG, obj, True, lambda: time.time() + 3700),
    )
    assert kube.get("codesessions", NS, "s1") is None
    assert [args[1:] for args in no_redis] == [("codemode", "ws", f"cs.{uid}", True)]


def test_an_ended_session_forgets_its_state(
    kube: FakeKube, committer: Committer, no_redis: list[tuple[str, ...]]
) -> None:
    ready_session(kube, committer, maxLifetime="1h")
    run(kube, committer, clock=lambda: time.time() + 3601)
    assert len(no_redis) == 1 and no_redis[0][3].startswith("cs.") and no_redis[0][4] is False


def test_fork_from_starts_from_the_sources_state(kube: FakeKube, committer: Committer) -> None:
    ready_session(kube, committer)
    source_uid = kube.get("codesessions", NS, "s1")["metadata"]["uid"]
    kube.put("codesessions", session("s2", forkFrom={"session": "s1"}))
    st = run(kube, committer, name="s2")
    st = run(kube, committer, name="s2")
    assert st.forked_from == f"cs.{source_uid}"
    pod = kube.get("pods", NS, "s2-session")
    env = {e["name"]: e.get("value") for e in pod["spec"]["containers"][0]["env"]}
    assert env["SESSION_FORK_FROM"] == f"cs.{source_uid}"
    assert env["SESSION_STATE_ID"] != env["SESSION_FORK_FROM"]


def test_fork_from_a_missing_session_waits(kube: FakeKube, committer: Committer) -> None:
    kube.put("codesessions", session("s3", forkFrom={"session": "nope"}))
    run(kube, committer, name="s3")
    st = run(kube, committer, name="s3")
    assert (st.phase, st.reason) == (Phase.PENDING, Reason.FORK_SOURCE_NOT_FOUND)
    assert kube.get("pods", NS, "s3-session") is None


def test_the_state_fields_come_from_the_servers_health(
    kube: FakeKube, committer: Committer, monkeypatch: pytest.MonkeyPatch
) -> None:
    ready_session(kube, committer)
    health = {
        "last_activity": time.time(),
        "state": {
            "snapshot": {
                "taken_at": 1_800_000_000.0,
                "bytes": 1234,
                "saved": ["x"],
                "unsaved": ["lock"],
            },
            "restore": {"restored": ["x"], "lost": {"gen": "not saved"}},
            "history_messages": 8,
        },
    }
    monkeypatch.setattr(rec, "server_health", lambda pod: health)
    st = run(kube, committer, periodic=True)
    assert st.last_snapshot_time == iso(1_800_000_000.0) and st.snapshot_bytes == 1234
    assert st.unsaved_names == ["lock"]
    assert (st.restored_names, st.lost_names) == (["x"], ["gen"])
    assert st.history_messages == 8


def test_events_say_what_is_news(kube: FakeKube, committer: Committer, events: Events) -> None:
    """A session's first start posts nothing; losing its pod, and Ready again after
    that, are Events."""
    kube.put("codesessions", session())
    run(kube, committer)
    set_pod(kube, ready=True)
    run(kube, committer)
    assert events == []
    kube.remove("pods", NS, "s1-session")
    run(kube, committer)
    assert events == [("s1", "Warning", "PodStarting", "pod s1-session is starting")]
    set_pod(kube, ready=True)
    run(kube, committer)
    assert events[-1] == ("s1", "Normal", "PodReady", "pod s1-session is ready")
