"""The kopf wiring without kopf running: handlers registered from the settings parsed at
start-up, each handler on the in-memory Kube, the committer's Events, and the clients'
reading of phases."""

from __future__ import annotations

import ast
import time
from pathlib import Path
from typing import Any

import kopf
import pytest
from codemode_operator import __main__ as operator_main
from codemode_operator import handlers, sessions
from codemode_operator.api.codesession import CodeSessionStatus
from codemode_operator.api.common import Condition
from codemode_operator.commit import WORKSPACE, Committer, Outcome, changes, transition
from codemode_operator.kube import Obj
from codemode_operator.reconcile import session as session_rec
from codemode_operator.reconcile import workspace as workspace_rec
from codemode_operator.settings import ConfigError, OperatorConfig
from codemode_operator.vocabulary import FINAL_PHASES, Phase, is_final
from kubernetes.client.exceptions import ApiException

from tests.unit.fake_kube import NS, Events, FakeKube, library, pod_status, session, workspace

CFG = OperatorConfig.from_env({"SESSION_POLL_SECONDS": "1"})


pytestmark = pytest.mark.usefixtures("fresh_caches")


@pytest.fixture
def h(kube: FakeKube, events: Events) -> handlers.Handlers:
    def post(obj: Obj, type_: str, reason: str, message: str) -> None:
        events.append((obj["metadata"]["name"], type_, reason, message))

    return handlers.Handlers(CFG, kube, post)


# ---- settings and registration -----------------------------------------------------------


def test_settings_are_parsed_once_with_defaults() -> None:
    cfg = OperatorConfig.from_env(
        {
            "WATCH_NAMESPACES": " a, ,b ",
            "OPERATOR_WORKERS": "4",
            "POD_ID": "op-0",
            "METRICS_PORT": "0",
        }
    )
    assert cfg.watch_namespaces == ("a", "b") and cfg.workers == 4
    assert cfg.identity == "op-0" and cfg.metrics_port == 0
    default = OperatorConfig.from_env({})
    assert (default.session_poll_seconds, default.library_poll_seconds) == (5.0, 10.0)
    assert default.identity.startswith("codemode-operator@") and default.workers == 32


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("SESSION_POLL_SECONDS", "soon"),
        ("SESSION_POLL_SECONDS", "0"),
        ("OPERATOR_WORKERS", "0"),
        ("METRICS_PORT", "http"),
        ("LIBRARY_POLL_SECONDS", "-1"),
    ],
)
def test_settings_refuse_unusable_values(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name):
        OperatorConfig.from_env({name: value})


def test_timers_come_from_the_settings() -> None:
    registry = kopf.OperatorRegistry()
    cfg = OperatorConfig.from_env({"SESSION_POLL_SECONDS": "2", "LIBRARY_POLL_SECONDS": "7"})
    handlers.register(cfg, FakeKube(), registry)
    timers = {
        t.id: (t.interval, t.initial_delay, t.idle) for t in registry._spawning.get_all_handlers()
    }
    # CodeSessions get no kopf timer and no changing handler: neither finalizer nor
    # annotations on them (one loop is their watchdog)
    assert timers == {"workspace_health": (30, 5, 5), "library_poll": (7.0, 7.0, None)}
    changing = {c.id for c in registry._changing.get_all_handlers()}
    assert changing == {
        "workspace_changed",
        "workspace_changed/spec",
        "workspace_deleted",
        "library_changed",
        "library_changed/spec",
        "library_deleted",
    }
    watching = {w.id for w in registry._watching.get_all_handlers()}
    assert watching == {
        "session_event",
        "workspace_event",
        "session_pod_event",
        "pool_pod_event",
        "library_job_event",
    }


def test_nothing_reads_the_environment_at_import() -> None:
    root = Path(handlers.__file__).parent
    for path in root.rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in tree.body:  # module level only: functions may read what they are given
            text = ast.unparse(node)
            if isinstance(node, ast.Assign | ast.AnnAssign) or (
                isinstance(node, ast.Expr) and isinstance(node.value, ast.Call)
            ):
                assert "os.environ" not in text and "from_env" not in text, (path, text)


def test_main_uses_only_public_kopf() -> None:
    source = Path(operator_main.__file__).read_text()
    assert "kopf._" not in source
    for path in Path(handlers.__file__).parent.rglob("*.py"):
        assert "from kopf._" not in path.read_text() and "import kopf._" not in path.read_text()


def test_kopf_settings_come_from_the_config() -> None:
    settings = kopf.OperatorSettings()
    operator_main.configure(settings, OperatorConfig.from_env({"OPERATOR_WORKERS": "3"}))
    assert settings.execution.max_workers == 3
    assert settings.persistence.finalizer == "codemode.dev/finalizer"
    assert settings.peering.standalone is True


# ---- the committer's pieces --------------------------------------------------------------


def test_changes_set_and_remove_fields() -> None:
    assert changes({"a": 1, "b": 2, "gone": 3}, {"a": 1, "b": 5, "new": 4}) == {
        "b": 5,
        "gone": None,
        "new": 4,
    }


def ready(status: str, reason: str, message: str = "") -> Condition:
    return Condition(
        type="Ready",
        status=status,
        reason=reason,  # type: ignore[arg-type]
        message=message,
    )


def test_transition_events() -> None:
    before = CodeSessionStatus(phase=Phase.STARTING, conditions=[ready("False", "PodStarting")])
    after = CodeSessionStatus(phase=Phase.READY, conditions=[ready("True", "PodReady", "up")])
    assert transition(before, after, "session") == ("Normal", "PodReady", "up")
    assert transition(after, after, "session") is None
    assert transition(after, CodeSessionStatus(phase=Phase.PENDING), "session") == (
        "Warning",
        "NotReady",
        "session is Pending",
    )
    assert transition(
        CodeSessionStatus(), CodeSessionStatus(conditions=[ready("True", "")]), "x"
    ) == ("Normal", "Ready", "x is True")


def test_a_failing_event_post_does_not_fail_the_commit(kube: FakeKube) -> None:
    def broken(*_: Any) -> None:
        raise RuntimeError("event queue full")

    kube.put("codesessions", session())
    committer = Committer(kube, broken)
    done = committer.commit(
        session_rec.SESSION,
        kube.get("codesessions", NS, "s1"),
        lambda o: Outcome(CodeSessionStatus(phase=Phase.PENDING, conditions=[ready("False", "X")])),
    )
    assert done is not None and done.written and done.transitions


# ---- handlers ----------------------------------------------------------------------------


def test_workspace_handler_commits(
    h: handlers.Handlers, kube: FakeKube, events: Events, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(workspace_rec.redis_acl, "ping", lambda url: None)
    monkeypatch.setattr(workspace_rec.redis_acl, "provision", lambda *a: None)
    monkeypatch.setattr(
        workspace_rec.redis_acl, "read_usage", lambda *a: (_ for _ in ()).throw(OSError("no usage"))
    )
    kube.put("workspaces", workspace("fresh", ready=False))
    h.workspace(kopf.Body(kube.get("workspaces", NS, "fresh")))  # type: ignore[arg-type]
    obj = kube.get("workspaces", NS, "fresh")
    assert obj is not None and WORKSPACE.read(obj).credentials_secret == "fresh-redis"
    assert events[-1][:3] == ("fresh", "Normal", "Provisioned")


def test_api_errors_become_kopf_retries(h: handlers.Handlers, kube: FakeKube) -> None:
    kube.put("codesessions", session())
    kube.fail["get_custom"] = ApiException(status=500, reason="Internal")
    with pytest.raises(kopf.TemporaryError, match="500"):
        h.session_changed(kube.get("codesessions", NS, "s1"))


def test_a_waiting_session_is_retried_by_kopf(h: handlers.Handlers, kube: FakeKube) -> None:
    kube.put("codesessions", session(workspace_ref="later"))
    with pytest.raises(kopf.TemporaryError, match="WorkspaceNotFound"):
        h.session_changed(kube.get("codesessions", NS, "s1"))
    kube.put("codesessions", session("s2"))
    h.session_changed(kube.get("codesessions", NS, "s2"))  # admitted and started: no retry
    assert kube.names("pods") == ["s2-session"]


def test_a_deleted_session_is_not_an_error(h: handlers.Handlers, kube: FakeKube) -> None:
    body = kube.put("codesessions", session())
    kube.remove("codesessions", NS, "s1")
    assert h.session(body) is None


def test_watchdog_waits_for_young_sessions(h: handlers.Handlers) -> None:
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    young = {"metadata": {"creationTimestamp": now}, "status": {"phase": "Starting"}}
    assert not h.watchdog_due(young)
    assert h.watchdog_due({**young, "status": {"phase": "Ready"}})
    assert h.watchdog_due({"metadata": {"creationTimestamp": "2020-01-01T00:00:00Z"}})


async def test_watchdog_repairs_a_status_behind_its_pod(
    h: handlers.Handlers, kube: FakeKube
) -> None:
    kube.put("codesessions", session())
    h.session_changed(kube.get("codesessions", NS, "s1"))
    kube.edit("pods", NS, "s1-session", lambda p: p.update(status=pod_status(ready=True)))
    kube.edit(
        "codesessions",
        NS,
        "s1",
        lambda o: o["status"].update(phase="Starting", podResourceVersion="1"),
    )
    await h.session_watchdog(kube.get("codesessions", NS, "s1"))
    assert kube.get("codesessions", NS, "s1")["status"]["phase"] == "Ready"  # type: ignore[index]


def pod_event(kube: FakeKube, type_: str = "MODIFIED", name: str = "s1") -> dict[str, Any]:
    pod = kube.get("pods", NS, f"{name}-session") or {
        "metadata": {
            "name": f"{name}-session",
            "namespace": NS,
            "labels": {"codemode.dev/session": name},
        }
    }
    return {"type": type_, "object": pod}


async def test_pod_events_move_the_phase(
    h: handlers.Handlers, kube: FakeKube, events: Events
) -> None:
    kube.put("codesessions", session())
    h.session_changed(kube.get("codesessions", NS, "s1"))
    kube.edit("pods", NS, "s1-session", lambda p: p.update(status=pod_status(ready=True)))
    await h.session_pod_event(pod_event(kube))
    st = session_rec.SESSION.read(kube.get("codesessions", NS, "s1"))  # type: ignore[arg-type]
    assert st.phase == Phase.READY and events == []  # a first start is no news
    reads = len(kube.called("get_custom"))
    await h.session_pod_event(pod_event(kube))  # the same state again: no read
    assert len(kube.called("get_custom")) == reads

    kube.edit(
        "pods",
        NS,
        "s1-session",
        lambda p: p["metadata"].update(deletionTimestamp="2026-01-01T00:00:00Z"),
    )
    await h.session_pod_event(pod_event(kube))  # terminating: its DELETED event decides
    assert len(kube.called("get_custom")) == reads
    kube.remove("pods", NS, "s1-session")
    await h.session_pod_event(
        {
            "type": "DELETED",
            "object": {
                "metadata": {
                    "name": "s1-session",
                    "namespace": NS,
                    "labels": {"codemode.dev/session": "s1"},
                    "deletionTimestamp": "2026-01-01T00:00:00Z",
                }
            },
        }
    )
    st = session_rec.SESSION.read(kube.get("codesessions", NS, "s1"))  # type: ignore[arg-type]
    assert kube.names("pods") == ["s1-session"] and st.pod_recreations == 1


async def test_pod_events_of_other_pods_are_ignored(h: handlers.Handlers, kube: FakeKube) -> None:
    await h.session_pod_event({"type": "ADDED", "object": {"metadata": {"name": "x"}}})
    assert kube.calls == []


def test_pod_changed_edges(h: handlers.Handlers, kube: FakeKube) -> None:
    assert h.pod_changed(NS, "missing", (Phase.READY, "PodReady"), "5") is True
    kube.put("codesessions", {**session(), "status": {"phase": "Terminated"}})
    assert h.pod_changed(NS, "s1", None, None) is True
    assert kube.names("pods") == []  # an ended session's pod is never brought back
    kube.put("codesessions", session("s2"))
    h.session_changed(kube.get("codesessions", NS, "s2"))
    kube.fail["patch_status"] = ApiException(status=500, reason="Internal")
    assert h.pod_changed(NS, "s2", (Phase.READY, "PodReady"), "999") is False


async def test_a_failed_pod_event_replaces_the_pod(h: handlers.Handlers, kube: FakeKube) -> None:
    kube.put("codesessions", session())
    h.session_changed(kube.get("codesessions", NS, "s1"))
    kube.edit("pods", NS, "s1-session", lambda p: p.update(status={"phase": "Failed"}))
    await h.session_pod_event(pod_event(kube))
    assert kube.called("delete_pod") == [("delete_pod", "s1-session")]
    assert kube.names("pods") == ["s1-session"]


def test_library_handlers(h: handlers.Handlers, kube: FakeKube, events: Events) -> None:
    kube.put("workflowlibraries", library())
    h.library(kube.get("workflowlibraries", NS, "lib"))
    job = kube.get("workflowlibraries", NS, "lib")["status"]["jobName"]  # type: ignore[index]
    h.library_job_event({"type": "MODIFIED", "object": kube.get("jobs", NS, job)})  # running
    assert kube.names("jobs") == [job]
    h.library_job_event({"type": "DELETED", "object": kube.get("jobs", NS, job)})
    other = {
        "metadata": {"name": "old-job", "namespace": NS, "labels": {"codemode.dev/library": "lib"}},
        "status": {"failed": 1},
    }
    h.library_job_event({"type": "MODIFIED", "object": other})  # not the one in flight
    assert kube.names("jobs") == [job]
    kube.edit("jobs", NS, job, lambda j: j.update(status={"failed": 1}))
    kube.fail["patch_status"] = ApiException(status=500, reason="Internal")
    h.library_job_event({"type": "MODIFIED", "object": kube.get("jobs", NS, job)})
    assert kube.names("jobs") == [job]  # the result is not on record: the Job stays
    h.library_job_event({"type": "MODIFIED", "object": kube.get("jobs", NS, job)})
    assert kube.names("jobs") == [] and events[-1][2] == "SyncFailed"


def test_deletion_handlers_post_events(
    h: handlers.Handlers, kube: FakeKube, events: Events
) -> None:
    kube.put("codesessions", session())
    with pytest.raises(kopf.TemporaryError, match="Refuse"):
        h.workspace_deleted(kube.get("workspaces", NS, "ws"))
    assert events[-1][:3] == ("ws", "Warning", "DeletionBlocked")
    kube.remove("codesessions", NS, "s1")
    kube.put("workspaces", workspace("plain", redis={"urlSecretRef": {"name": "x", "key": "u"}}))
    assert h.workspace_deleted(kube.get("workspaces", NS, "plain")).startswith("Redis reference")
    assert events[-1][:3] == ("plain", "Normal", "Deleted")
    kube.put("workflowlibraries", library("keep", prune=False))
    h.library_deleted(kube.get("workflowlibraries", NS, "keep"))
    assert events[-1] == ("keep", "Normal", "Deleted", "prune is off: published workflows stay")


# ---- the clients read phases as the operator writes them ---------------------------------


def test_only_terminated_is_final() -> None:
    assert {Phase.TERMINATED} == FINAL_PHASES
    assert is_final("Terminated") and not is_final("Failed") and not is_final(None)
    assert Phase.TERMINATED.final and not Phase.FAILED.final


@pytest.mark.parametrize(
    ("phase", "endpoint", "usable", "settled"),
    [
        ("Ready", "http://x", True, True),
        ("Ready", None, False, False),
        ("Terminated", None, False, True),
        ("Failed", None, False, False),
        ("Pending", None, False, False),
        (None, None, False, False),
    ],
)
def test_clients_wait_through_failed(
    phase: str | None, endpoint: str | None, usable: bool, settled: bool
) -> None:
    obj = {"status": {"phase": phase, "endpoint": endpoint}}
    assert sessions.usable(obj) is usable and sessions.settled(obj) is settled


def test_events_of_a_pod_the_session_left_are_ignored(h: handlers.Handlers, kube: FakeKube) -> None:
    """A session that moved to another pod (a pool pod after a resume) or is suspended
    keeps its status when a late event of the earlier pod says it is Ready."""
    kube.put(
        "codesessions",
        {**session(), "status": {"phase": "Ready", "podName": "ws-pool-new-session"}},
    )
    assert h.pod_changed(NS, "s1", (Phase.READY, "PodReady"), "5", "ws-pool-old-session")
    assert h.pod_changed(NS, "s1", None, "6", "ws-pool-old-session")
    assert not kube.called("patch_status") and not kube.called("create_pod")
    kube.put(
        "codesessions",
        {**session("s2"), "status": {"phase": "Suspended", "podName": "s2-session"}},
    )
    assert h.pod_changed(NS, "s2", (Phase.READY, "PodReady"), "7", "s2-session")
    found = kube.get("codesessions", NS, "s2")
    assert found is not None and found["status"]["phase"] == "Suspended"
    assert not kube.called("patch_status") and not kube.called("create_pod")


# ---- CodeSessions from their watch -------------------------------------------------------


def watched(kube: FakeKube, name: str = "s1", type_: str | None = "ADDED") -> dict[str, Any]:
    return {"type": type_, "object": kube.get("codesessions", NS, name)}


async def test_a_new_session_is_reconciled_once_from_its_watch(
    h: handlers.Handlers, kube: FakeKube
) -> None:
    kube.put("codesessions", {**session(), "metadata": {**session()["metadata"], "generation": 1}})
    await h.session_event(watched(kube))
    assert kube.names("pods") == ["s1-session"]
    writes = len(kube.called("patch_status"))
    await h.session_event(watched(kube, type_="MODIFIED"))  # our own write: answered
    assert len(kube.called("patch_status")) == writes and len(kube.called("create_pod")) == 1
    kube.edit(
        "pods", NS, "s1-session", lambda p: p.update(status=pod_status(ready=True, ip="10.0.0.9"))
    )
    kube.calls.clear()
    await h.session_pod_event(pod_event(kube))
    # the pod event found the session in the watched copy: no read of it
    assert not [c for c in kube.called("get_custom") if c[1] == "codesessions"]
    st = session_rec.SESSION.read(kube.get("codesessions", NS, "s1"))  # type: ignore[arg-type]
    assert st.phase == Phase.READY
    # the Service's endpoint is the pod before the status says Ready
    assert [c[0] for c in kube.calls] == ["apply_endpoints", "patch_status"]
    eps = kube.get("endpointslices", NS, "s1-session")
    assert eps is not None and eps["endpoints"][0]["addresses"] == ["10.0.0.9"]


def test_needs_reconcile() -> None:
    meta = {"name": "s", "generation": 2}
    assert session_rec.needs_reconcile({"metadata": meta})
    assert session_rec.needs_reconcile({"metadata": meta, "status": {"observedGeneration": 1}})
    assert not session_rec.needs_reconcile(
        {"metadata": meta, "status": {"observedGeneration": 2, "phase": "Starting"}}
    )
    assert not session_rec.needs_reconcile(
        {"metadata": meta, "status": {"observedGeneration": 1, "phase": "Terminated"}}
    )
    deleting = {**meta, "deletionTimestamp": "2026-01-01T00:00:00Z"}
    assert not session_rec.needs_reconcile({"metadata": deleting})


async def test_a_waiting_session_is_retried_on_a_timer(
    h: handlers.Handlers, kube: FakeKube
) -> None:
    kube.put("codesessions", session(workspace_ref="later"))
    await h.session_event(watched(kube))
    assert (NS, "s1") in h._retries
    await h.session_event({"type": "DELETED", "object": kube.get("codesessions", NS, "s1")})
    assert not h._retries and h.sessions.get(NS, "s1") is None


async def test_the_initial_listing_reconciles_every_live_session(
    h: handlers.Handlers, kube: FakeKube
) -> None:
    """As kopf's resume did: a pod deleted while the operator was away comes back."""
    kube.put("codesessions", session())
    await h.session_event(watched(kube))
    kube.remove("pods", NS, "s1-session")
    await h.session_event(watched(kube, type_="MODIFIED"))  # nothing new in the session
    assert kube.names("pods") == []
    await h.session_event(watched(kube, type_=None))  # the operator (re)started
    assert kube.names("pods") == ["s1-session"]


def test_watched_copies_keep_the_newest_and_drop_unread_metadata() -> None:
    cache = handlers.Watched()
    obj = {
        "metadata": {
            "name": "a",
            "namespace": NS,
            "resourceVersion": "5",
            "managedFields": [{"manager": "x"}],
            "annotations": {"codemode.dev/last-handled-configuration": "{}", "keep": "1"},
        }
    }
    cache.put(handlers.slim(obj))
    older = {"metadata": {"name": "a", "namespace": NS, "resourceVersion": "4"}}
    assert cache.put(older)["metadata"]["resourceVersion"] == "5"
    held = cache.get(NS, "a")
    assert held is not None and "managedFields" not in held["metadata"]
    assert held["metadata"]["annotations"] == {"keep": "1"}
    assert obj["metadata"]["managedFields"]  # the watched object itself is left alone
