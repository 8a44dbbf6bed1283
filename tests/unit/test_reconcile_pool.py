"""Warm pools (issue 14 item 1) on the in-memory Kube: the pool pod's manifest, which
sessions a pool serves, keeping the pool's size within maxSessions, rollout on new
defaults, and a CodeSession taking a pool pod (claimed on its resourceVersion, its
token, Service and binding), or the cold path when none fits or the bind fails."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from codemode_operator.builders.pool import (
    HASH_LABEL,
    WARM_LABEL,
    pool_pod,
    settings_hash,
)
from codemode_operator.builders.session import session_pod
from codemode_operator.commit import Committer
from codemode_operator.kube import Obj
from codemode_operator.reconcile import pool as pool_rec
from codemode_operator.reconcile import session as rec
from codemode_operator.reconcile.params import session_params
from codemode_operator.settings import OperatorConfig
from codemode_operator.vocabulary import Phase
from kubernetes.client.exceptions import ApiException

from tests.unit.fake_kube import NS, FakeKube, pod_status, session, workspace

CFG = OperatorConfig.from_env({})
pytestmark = pytest.mark.usefixtures("fresh_caches")


@pytest.fixture
def binds(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str, dict[str, Any]]]:
    """POST /bind calls (pod, token, body), each answered as a bound server does."""
    calls: list[tuple[str, str, dict[str, Any]]] = []

    def bind(pod: Obj, token: str, body: dict[str, Any]) -> tuple[bool, str]:
        calls.append((pod["metadata"]["name"], token, body))
        return True, ""

    monkeypatch.setattr(pool_rec, "BIND", bind)
    return calls


@pytest.fixture
def committer(kube: FakeKube) -> Committer:
    return Committer(kube, None)


def pooled(kube: FakeKube, size: int = 2, **spec: Any) -> Obj:
    kube.put("workspaces", {**workspace(warmPool={"size": size}, **spec)})
    ws = kube.get("workspaces", NS, "ws")
    assert ws is not None
    return ws


def pool_pods(kube: FakeKube) -> list[Obj]:
    return [
        o
        for (p, _, _), o in sorted(kube.objects.items())
        if p == "pods"
        and WARM_LABEL in o["metadata"]["labels"]
        and "codemode.dev/session" not in o["metadata"]["labels"]
    ]


def make_ready(kube: FakeKube) -> None:
    for pod in pool_pods(kube):
        kube.edit(
            "pods",
            NS,
            pod["metadata"]["name"],
            lambda o: o.__setitem__("status", pod_status(ready=True, ip="10.0.0.9")),
        )


def run(kube: FakeKube, committer: Committer, name: str = "s1") -> Any:
    done = committer.commit(
        rec.SESSION, kube.get("codesessions", NS, name), lambda o: rec.reconcile(kube, CFG, o)
    )
    assert done is not None
    return done.new


# ---- the pool pod -------------------------------------------------------------------------


def test_a_pool_pod_is_a_session_pod_of_the_defaults_that_waits_for_its_binding() -> None:
    ws = workspace(warmPool={"size": 1})
    ws["metadata"]["uid"] = "ws-uid"
    p = pool_rec.member_params(ws, CFG, "ws-pool-abc")
    pod = pool_pod(p, "ws-uid")
    plain = session_pod(p)
    meta = pod["metadata"]
    assert meta["name"] == "ws-pool-abc-session"
    assert meta["labels"][WARM_LABEL] == "ws" and meta["labels"][HASH_LABEL] == settings_hash(p)
    assert "codemode.dev/session" not in meta["labels"] and meta["annotations"] == {}
    # the workspace's NetworkPolicy for session pods holds for it from the start
    assert meta["labels"]["app.kubernetes.io/component"] == "session"
    assert [(o["kind"], o["name"], o["uid"]) for o in meta["ownerReferences"]] == [
        ("Workspace", "ws", "ws-uid")
    ]
    (container,) = pod["spec"]["containers"]
    env = {e["name"]: e for e in container["env"]}
    assert env["SESSION_POOL"]["value"] == "true"
    assert env["SESSION_BINDING_DIR"]["value"] == "/etc/codemode/binding"
    assert "SESSION_STATE_ID" not in env and "AGENT_ID" not in env
    assert env["CONTAINER_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"]["name"] == "ws-pool-abc-token"
    # the same pod a session of the defaults gets, besides the pool's two settings
    assert [e for e in container["env"] if not e["name"].startswith("SESSION_")] == [
        e for e in plain["spec"]["containers"][0]["env"]
    ]
    (binding,) = [v for v in pod["spec"]["volumes"] if v["name"] == "binding"]
    assert [i["fieldRef"]["fieldPath"] for i in binding["downwardAPI"]["items"]] == [
        "metadata.annotations['codemode.dev/state-id']",
        "metadata.annotations['codemode.dev/agent-id']",
        "metadata.annotations['codemode.dev/fork-from']",
    ]


@pytest.mark.parametrize(
    ("spec", "served"),
    [
        ({}, True),
        ({"agentId": "a-1", "idleTimeout": "1h", "maxLifetime": "2h"}, True),
        ({"image": "other:1"}, False),
        ({"runtimeClassName": "gvisor"}, False),
        ({"resources": {"limits": {"memory": "2Gi"}}}, False),
        ({"defaultTimeout": "5s"}, False),
    ],
)
def test_a_pool_serves_a_session_whose_pod_it_would_be(spec: Obj, served: bool) -> None:
    ws = {**workspace(warmPool={"size": 1}), "metadata": {"name": "ws", "namespace": NS}}
    body = session(**spec)
    body["metadata"]["uid"] = "cs-uid"
    assert pool_rec.serves(ws, CFG, session_params(body, ws, CFG)) is served


def test_no_pool_serves_nothing() -> None:
    ws = {**workspace(), "metadata": {"name": "ws", "namespace": NS}}
    body = session()
    body["metadata"]["uid"] = "cs-uid"
    assert pool_rec.serves(ws, CFG, session_params(body, ws, CFG)) is False


# ---- keeping the pool ---------------------------------------------------------------------


def test_the_pool_starts_its_pods_each_with_a_token_of_its_own(kube: FakeKube) -> None:
    ws = pooled(kube, 2)
    st = pool_rec.reconcile(kube, CFG, ws)
    assert st is not None and (st.desired, st.ready) == (2, 0)
    pods = pool_pods(kube)
    assert len(pods) == 2
    tokens = set()
    for pod in pods:
        secret = kube.get("secrets", NS, pod["metadata"]["name"].replace("-session", "-token"))
        assert secret is not None
        assert secret["metadata"]["ownerReferences"][0]["kind"] == "Pod"
        assert secret["metadata"]["ownerReferences"][0]["uid"] == pod["metadata"]["uid"]
        tokens.add(secret["stringData"]["token"])
    assert len(tokens) == 2
    make_ready(kube)
    st = pool_rec.reconcile(kube, CFG, ws)
    assert st is not None and (st.desired, st.ready) == (2, 2)
    assert len(pool_pods(kube)) == 2  # nothing more started


def test_the_pool_counts_against_max_sessions(kube: FakeKube) -> None:
    ws = pooled(kube, 3, limits={"maxSessions": 2})
    kube.put(
        "pods",
        {
            "metadata": {
                "name": "busy-session",
                "labels": {
                    "app.kubernetes.io/component": "session",
                    "codemode.dev/workspace": "ws",
                    "codemode.dev/session": "busy",
                },
            }
        },
    )
    st = pool_rec.reconcile(kube, CFG, ws)
    assert st is not None and st.desired == 1
    assert len(pool_pods(kube)) == 1
    kube.remove("pods", NS, "busy-session")
    st = pool_rec.reconcile(kube, CFG, ws)
    assert st is not None and st.desired == 2 and len(pool_pods(kube)) == 2


def test_new_defaults_replace_the_pool_pods(kube: FakeKube) -> None:
    ws = pooled(kube, 2)
    pool_rec.reconcile(kube, CFG, ws)
    make_ready(kube)
    before = {p["metadata"]["name"] for p in pool_pods(kube)}
    ws = kube.edit(
        "workspaces",
        NS,
        "ws",
        lambda o: o["spec"].update(sessionDefaults={"image": "reg.example/session:2"}),
        spec=True,
    )
    st = pool_rec.reconcile(kube, CFG, ws)
    after = pool_pods(kube)
    assert st is not None and (st.desired, st.ready) == (2, 0)
    assert not before & {p["metadata"]["name"] for p in after}
    assert {p["spec"]["containers"][0]["image"] for p in after} == {"reg.example/session:2"}


def test_a_pool_set_to_zero_empties(kube: FakeKube) -> None:
    ws = pooled(kube, 2)
    pool_rec.reconcile(kube, CFG, ws)
    ws = kube.edit("workspaces", NS, "ws", lambda o: o["spec"].update(warmPool={"size": 0}))
    ws["status"]["warmPool"] = {"desired": 2, "ready": 0}
    st = pool_rec.reconcile(kube, CFG, ws)
    assert st is None and pool_pods(kube) == []


def test_a_workspace_without_a_pool_lists_nothing(kube: FakeKube) -> None:
    assert pool_rec.reconcile(kube, CFG, kube.get("workspaces", NS, "ws") or {}) is None
    assert kube.called("list_pods") == []


# ---- a session takes a pod ----------------------------------------------------------------


def test_a_session_binds_a_ready_pool_pod_and_the_pool_refills(
    kube: FakeKube, committer: Committer, binds: list[Any]
) -> None:
    ws = pooled(kube, 1)
    pool_rec.reconcile(kube, CFG, ws)
    make_ready(kube)
    (pod,) = pool_pods(kube)
    name = pod["metadata"]["name"]
    pool_token = kube.get("secrets", NS, name.replace("-session", "-token"))["stringData"]["token"]  # type: ignore[index]
    kube.put("codesessions", session(agentId="agent-1"))
    st = run(kube, committer)
    assert st.phase == Phase.READY
    assert st.pod_name == name and st.token_secret == "s1-token"
    assert st.endpoint == f"http://s1-session.{NS}.svc:8080"
    uid = kube.get("codesessions", NS, "s1")["metadata"]["uid"]  # type: ignore[index]
    # (a conflict on the status write, here from the agent label, binds the same again)
    assert {(b[0], b[1], str(b[2])) for b in binds} == {
        (name, pool_token, str({"state_id": f"cs.{uid}", "agent_id": "agent-1", "fork_from": None}))
    }
    taken = kube.get("pods", NS, name)
    assert taken is not None
    labels = taken["metadata"]["labels"]
    assert (
        labels["codemode.dev/session"] == "s1"
        and labels["app.kubernetes.io/component"] == "session"
    )
    assert [o["kind"] for o in taken["metadata"]["ownerReferences"]] == ["CodeSession"]
    assert taken["metadata"]["annotations"]["codemode.dev/state-id"] == f"cs.{uid}"
    assert kube.get("secrets", NS, "s1-token")["stringData"]["token"] == pool_token  # type: ignore[index]
    assert kube.names("services") == ["s1-session"]
    assert "s1-session" not in kube.names("pods")  # no cold pod
    (fresh,) = pool_pods(kube)  # the refill
    assert fresh["metadata"]["name"] != name
    # a second look keeps the bound pod; it never binds again
    count = len(binds)
    run(kube, committer)
    assert len(binds) == count


def test_a_pod_another_session_took_first_is_skipped(
    kube: FakeKube, committer: Committer, binds: list[Any]
) -> None:
    ws = pooled(kube, 2)
    pool_rec.reconcile(kube, CFG, ws)
    make_ready(kube)
    kube.fail["patch_pod"] = ApiException(status=409, reason="Conflict")
    kube.put("codesessions", session())
    st = run(kube, committer)
    assert st.phase == Phase.READY and len(binds) == 1
    assert len(kube.called("patch_pod")) == 2


def test_a_session_the_pool_does_not_serve_starts_cold(
    kube: FakeKube, committer: Committer, binds: list[Any]
) -> None:
    ws = pooled(kube, 1)
    pool_rec.reconcile(kube, CFG, ws)
    make_ready(kube)
    kube.put("codesessions", session(image="reg.example/other:1"))
    st = run(kube, committer)
    assert st.pod_name == "s1-session" and st.phase == Phase.STARTING
    assert binds == [] and len(pool_pods(kube)) == 1


def test_an_empty_pool_means_the_cold_path(
    kube: FakeKube, committer: Committer, binds: list[Any]
) -> None:
    ws = pooled(kube, 1)
    pool_rec.reconcile(kube, CFG, ws)  # started, not ready yet
    kube.put("codesessions", session())
    st = run(kube, committer)
    assert st.pod_name == "s1-session" and binds == []


def test_a_failed_bind_deletes_that_pod_and_starts_cold(
    kube: FakeKube, committer: Committer, binds: list[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    ws = pooled(kube, 1)
    pool_rec.reconcile(kube, CFG, ws)
    make_ready(kube)
    (pod,) = pool_pods(kube)
    monkeypatch.setattr(pool_rec, "BIND", lambda *_: (False, "POST /bind answered 409"))
    kube.put("codesessions", session())
    st = run(kube, committer)
    assert st.pod_name == "s1-session"
    assert kube.get("pods", NS, pod["metadata"]["name"]) is None


def test_a_pod_the_session_already_claimed_is_adopted_not_a_second(
    kube: FakeKube, committer: Committer, binds: list[Any]
) -> None:
    """A retry (a conflict on the status write, a pod event racing the create handler)
    finds the pod it claimed and binds it again (the server answers the same binding
    alike); it never claims another."""
    ws = pooled(kube, 2)
    pool_rec.reconcile(kube, CFG, ws)
    make_ready(kube)
    kube.put("codesessions", session())
    obj = kube.get("codesessions", NS, "s1")
    assert obj is not None
    first = rec.reconcile(kube, CFG, obj)  # admission
    committer.commit(rec.SESSION, obj, lambda o: first)
    obj = kube.get("codesessions", NS, "s1")
    assert obj is not None
    rec.reconcile(kube, CFG, obj)  # claims and binds; its status is never written
    st = run(kube, committer)
    assert len({b[0] for b in binds}) == 1 and st.pod_name == binds[0][0]


def test_a_resumed_session_takes_a_warm_pod_and_ending_deletes_it(
    kube: FakeKube, committer: Committer, binds: list[Any]
) -> None:
    ws = pooled(kube, 1)
    pool_rec.reconcile(kube, CFG, ws)
    make_ready(kube)
    kube.put("codesessions", session())
    first = run(kube, committer)
    kube.edit("codesessions", NS, "s1", lambda o: o["spec"].update(suspend=True), spec=True)
    st = run(kube, committer)
    assert st.phase == Phase.SUSPENDED and kube.get("pods", NS, first.pod_name) is None
    make_ready(kube)  # the refilled pod
    kube.edit("codesessions", NS, "s1", lambda o: o["spec"].update(suspend=False), spec=True)
    st = run(kube, committer)
    assert st.phase == Phase.READY and st.pod_name not in (first.pod_name, "s1-session")
    assert len(binds) == 2 and binds[0][2] == binds[1][2]  # the same state again
    # the session's Secret now holds the new pod's token
    assert kube.get("secrets", NS, "s1-token")["stringData"]["token"] == binds[1][1]  # type: ignore[index]
    ended = rec.terminate(
        kube,
        rec.params_of(kube.get("codesessions", NS, "s1") or {}, ws, CFG),
        st,
        rec.Reason.IDLE_TIMEOUT,
        "idle",
    )  # type: ignore[attr-defined]
    for action in ended.after:
        action()
    assert kube.get("pods", NS, st.pod_name) is None


def test_member_params_are_the_defaults_with_no_state() -> None:
    ws = {**workspace(warmPool={"size": 1}), "metadata": {"name": "ws", "namespace": NS}}
    p = pool_rec.member_params(ws, CFG, "ws-pool-1")
    assert p.state_id is None and p.agent_id is None and p.fork_from is None
    body = session()
    body["metadata"]["uid"] = "u"
    s = session_params(body, ws, CFG)
    assert dataclasses.replace(s, name=p.name, uid=p.uid, state_id=None) == p


def test_a_pool_pod_event_records_the_pool_in_the_workspace_status(kube: FakeKube) -> None:
    from codemode_operator.handlers import Handlers

    ws = pooled(kube, 2)
    pool_rec.reconcile(kube, CFG, ws)
    make_ready(kube)
    Handlers(CFG, kube, post=None).pool_changed(NS, "ws")
    written = kube.get("workspaces", NS, "ws")
    assert written is not None
    assert written["status"]["warmPool"] == {"desired": 2, "ready": 2}


def test_a_caller_holding_an_older_spec_does_not_roll_the_pool_back(kube: FakeKube) -> None:
    stale = pooled(kube, 2)
    kube.edit(
        "workspaces",
        NS,
        "ws",
        lambda o: o["spec"].update(sessionDefaults={"image": "reg.example/session:2"}),
        spec=True,
    )
    pool_rec.reconcile(kube, CFG, stale)
    assert {p["spec"]["containers"][0]["image"] for p in pool_pods(kube)} == {
        "reg.example/session:2"
    }


def test_a_pod_claimed_after_the_pools_list_is_not_deleted(
    kube: FakeKube, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The pool lists its pods, a session claims one (its labels change, so its
    resourceVersion does), then the pool finds a surplus: the delete carries the listed
    resourceVersion, so the claimed pod, now the session's, stays."""
    ws = pooled(kube, 1)
    pool_rec.reconcile(kube, CFG, ws)
    make_ready(kube)
    [member] = pool_pods(kube)
    name = member["metadata"]["name"]
    listed = kube.list_pods

    def list_then_claim(namespace: str, selector: str) -> list[Obj]:
        found = listed(namespace, selector)
        kube.edit("pods", NS, name, lambda o: o["metadata"]["labels"].update({WARM_LABEL: "s1"}))
        return found

    monkeypatch.setattr(kube, "list_pods", list_then_claim)
    ws = kube.edit("workspaces", NS, "ws", lambda o: o["spec"].update(warmPool={"size": 0}))
    ws["status"]["warmPool"] = {"desired": 1, "ready": 1}
    pool_rec.reconcile(kube, CFG, ws)
    assert kube.get("pods", NS, name) is not None
