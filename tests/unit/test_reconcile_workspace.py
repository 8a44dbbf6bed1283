"""Workspace reconcile paths on the in-memory Kube with a stand-in for Redis: credentials
and ACL user, every Redis failure, counts and usage, and both deletion policies."""

from __future__ import annotations

from typing import Any

import pytest
from codemode_operator import redis_acl
from codemode_operator.api.workspace import WorkspaceStatus
from codemode_operator.commit import WORKSPACE, Committer
from codemode_operator.reconcile import Retry
from codemode_operator.reconcile import workspace as rec
from codemode_operator.settings import OperatorConfig
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from tests.unit.fake_kube import NS, REDIS, FakeKube, library, session, workspace

CFG = OperatorConfig.from_env({})


class FakeRedis:
    """What reconcile.workspace asks of redis_acl, recorded."""

    def __init__(self) -> None:
        self.down: Exception | None = None
        self.acl_error: Exception | None = None
        self.usage_error: Exception | None = None
        self.cleanup_error: Exception | None = None
        self.users: dict[str, tuple[str, str, str]] = {}
        self.deleted: list[tuple[str, str]] = []
        self.usage = redis_acl.Usage(storage_bytes=b"2048", artifacts=2, workflows=5)

    def ping(self, url: str) -> None:
        if self.down is not None:
            raise self.down

    def provision(
        self, url: str, username: str, password: str, prefix: str, workspace_id: str
    ) -> None:
        if self.acl_error is not None:
            raise self.acl_error
        self.users[username] = (password, prefix, workspace_id)

    def deprovision(self, url: str, username: str) -> None:
        if self.cleanup_error is not None:
            raise self.cleanup_error
        self.users.pop(username, None)

    def read_usage(self, url: str, prefix: str, workspace_id: str) -> redis_acl.Usage:
        if self.usage_error is not None:
            raise self.usage_error
        return self.usage

    def delete_workspace_keys(self, url: str, prefix: str, workspace_id: str) -> int:
        if self.cleanup_error is not None:
            raise self.cleanup_error
        self.deleted.append((prefix, workspace_id))
        return 7


@pytest.fixture
def redis(monkeypatch: pytest.MonkeyPatch) -> FakeRedis:
    fake = FakeRedis()
    for name in ("ping", "provision", "deprovision", "read_usage", "delete_workspace_keys"):
        monkeypatch.setattr(rec.redis_acl, name, getattr(fake, name))
    return fake


@pytest.fixture
def kube() -> FakeKube:
    return FakeKube()


@pytest.fixture
def events() -> list[tuple[str, str, str]]:
    return []


@pytest.fixture
def committer(kube: FakeKube, events: list[tuple[str, str, str]]) -> Committer:
    return Committer(kube, lambda obj, type_, reason, msg: events.append((type_, reason, msg)))


def run(kube: FakeKube, committer: Committer, name: str = "ws") -> WorkspaceStatus:
    done = committer.commit(
        WORKSPACE, kube.get("workspaces", NS, name), lambda obj: rec.reconcile(kube, CFG, obj)
    )
    assert done is not None
    return done.new


def conds(st: WorkspaceStatus) -> dict[str, tuple[str, str]]:
    return {c.type: (c.status, c.reason) for c in st.conditions}


def message(st: WorkspaceStatus, type_: str = "Ready") -> str:
    return next(c.message for c in st.conditions if c.type == type_)


def secret(kube: FakeKube, name: str = "ws-redis") -> dict[str, str]:
    data = kube.secret_data(NS, name)
    assert data is not None
    return data


def test_ready_with_a_scoped_acl_user(
    kube: FakeKube, committer: Committer, redis: FakeRedis, events: list[tuple[str, str, str]]
) -> None:
    kube.put("workspaces", workspace(ready=False, workspaceId="tenant", prefix="cm"))
    st = run(kube, committer)
    assert (st.workspace_id, st.credentials_secret, st.redis_reachable) == (
        "tenant",
        "ws-redis",
        True,
    )
    assert st.observed_generation == 1
    assert conds(st) == {
        "RedisReachable": ("True", "Pinged"),
        "Ready": ("True", "Provisioned"),
        "Reconciling": ("False", "Provisioned"),
        "Stalled": ("False", "NotStalled"),
    }
    assert message(st).endswith("with a scoped ACL user")
    assert "pw" not in message(st) and "pw" not in message(st, "RedisReachable")
    username = redis_acl.acl_username(NS, "ws")
    data = secret(kube)
    assert data["username"] == username
    assert redis.users[username] == (data["password"], "cm", "tenant")
    assert data["url"] == redis_acl.scoped_url(REDIS, username, data["password"])
    assert kube.names("networkpolicies") == ["ws-sessions"]
    assert st.usage is not None and st.usage.model_dump(by_alias=True) == {
        "storageBytes": 2048,
        "artifacts": 2,
        "workflows": 5,
    }
    assert events == [("Normal", "Provisioned", message(st))]


def test_the_password_survives_reconciles(
    kube: FakeKube, committer: Committer, redis: FakeRedis
) -> None:
    kube.put("workspaces", workspace(ready=False))
    run(kube, committer)
    first = secret(kube)["password"]
    writes = len(kube.called("patch_status"))
    run(kube, committer)
    assert secret(kube)["password"] == first
    assert len(kube.called("patch_status")) == writes  # nothing changed, nothing written


def test_acl_off_gives_sessions_the_admin_url(
    kube: FakeKube, committer: Committer, redis: FakeRedis
) -> None:
    kube.put("workspaces", workspace(ready=False, redis={"url": REDIS, "acl": False}))
    st = run(kube, committer)
    assert secret(kube)["url"] == REDIS and redis.users == {}
    assert "ACL off" in message(st)


def test_url_from_a_secret(kube: FakeKube, committer: Committer, redis: FakeRedis) -> None:
    kube.put(
        "workspaces",
        workspace(ready=False, redis={"urlSecretRef": {"name": "admin", "key": "url"}}),
    )
    st = run(kube, committer)
    assert conds(st)["Ready"] == ("False", "RedisConfigInvalid")
    assert conds(st)["Stalled"] == ("True", "RedisConfigInvalid")
    assert conds(st)["Reconciling"][0] == "False"
    assert conds(st)["RedisReachable"] == ("False", "RedisConfigInvalid")
    assert "'admin'" in message(st) and st.redis_reachable is False
    kube.put(
        "secrets",
        {
            "kind": "Secret",
            "metadata": {"name": "admin", "namespace": NS},
            "stringData": {"other": "x"},
        },
    )
    assert "has no key 'url'" in message(run(kube, committer))
    kube.put(
        "secrets",
        {
            "kind": "Secret",
            "metadata": {"name": "admin", "namespace": NS},
            "stringData": {"url": REDIS},
        },
    )
    st = run(kube, committer)
    assert conds(st)["Ready"] == ("True", "Provisioned")
    assert conds(st)["Stalled"] == ("False", "NotStalled")


def test_unreachable_redis_keeps_reconciling(
    kube: FakeKube, committer: Committer, redis: FakeRedis, events: list[tuple[str, str, str]]
) -> None:
    kube.put("workspaces", workspace(ready=False))
    redis.down = RedisConnectionError("Connection refused")
    st = run(kube, committer)
    assert st.redis_reachable is False and not st.credentials_secret
    assert conds(st)["Ready"] == ("False", "RedisUnreachable")
    assert conds(st)["Reconciling"] == ("True", "Progressing")
    assert conds(st)["Stalled"] == ("False", "NotStalled")
    assert message(st) == "Connection refused"
    assert kube.names("secrets") == []
    assert events == [("Warning", "RedisUnreachable", "Connection refused")]
    redis.down = None
    assert conds(run(kube, committer))["Ready"] == ("True", "Provisioned")
    assert events[-1][:2] == ("Normal", "Provisioned")


def test_acl_provisioning_failure_stalls(
    kube: FakeKube, committer: Committer, redis: FakeRedis
) -> None:
    kube.put("workspaces", workspace(ready=False))
    redis.acl_error = RedisError("unknown command 'ACL'")
    st = run(kube, committer)
    assert st.redis_reachable is True and not st.credentials_secret
    assert conds(st)["Ready"] == ("False", "AclProvisioningFailed")
    assert conds(st)["Stalled"] == ("True", "AclProvisioningFailed")
    assert "unknown command" in message(st)


def test_usage_read_failure_keeps_the_last_usage(
    kube: FakeKube, committer: Committer, redis: FakeRedis
) -> None:
    kube.put("workspaces", workspace(ready=False))
    run(kube, committer)
    redis.usage = redis_acl.Usage(storage_bytes=b"1", artifacts=9, workflows=9)
    redis.usage_error = OSError("reset")
    st = run(kube, committer)
    assert st.usage is not None and st.usage.artifacts == 2


def test_counts_its_own_sessions_and_libraries(
    kube: FakeKube, committer: Committer, redis: FakeRedis
) -> None:
    kube.put("workspaces", workspace(ready=False))
    for name, ref in (("a", "ws"), ("b", "ws"), ("c", "other")):
        kube.put("codesessions", session(name, workspace_ref=ref))
    kube.put("workflowlibraries", library("l", workspace_ref="ws"))
    st = run(kube, committer)
    assert (st.sessions, st.libraries) == (2, 1)


def test_a_spec_change_moves_observed_generation(
    kube: FakeKube, committer: Committer, redis: FakeRedis
) -> None:
    kube.put("workspaces", workspace(ready=False))
    run(kube, committer)
    kube.edit(
        "workspaces",
        NS,
        "ws",
        lambda o: o["spec"].update(network={"egress": [{"cidr": "10.0.0.0/8"}]}),
        spec=True,
    )
    st = run(kube, committer)
    assert st.observed_generation == 2
    assert {c.observed_generation for c in st.conditions} == {2}


# ---- deletion policies -------------------------------------------------------------------


def members(kube: FakeKube) -> None:
    kube.put("codesessions", session("s", workspace_ref="ws"))
    kube.put("workflowlibraries", library("l", workspace_ref="ws"))
    kube.put("codesessions", session("other", workspace_ref="elsewhere"))


def test_refuse_waits_for_members(kube: FakeKube, redis: FakeRedis) -> None:
    body = kube.put("workspaces", workspace(deletionPolicy="Refuse", dataPolicy="Delete"))
    members(kube)
    with pytest.raises(Retry, match="deletionPolicy Refuse: 1 CodeSession"):
        rec.delete(kube, CFG, body)
    assert kube.names("codesessions") == ["other", "s"] and redis.deleted == []
    kube.remove("codesessions", NS, "s")
    kube.remove("workflowlibraries", NS, "l")
    assert rec.delete(kube, CFG, body) == "deleted 7 Redis key(s); removed the ACL user"


def test_cascade_deletes_members_first(kube: FakeKube, redis: FakeRedis) -> None:
    body = kube.put("workspaces", workspace(deletionPolicy="Cascade"))
    members(kube)
    with pytest.raises(Retry, match="deletionPolicy Cascade: waiting for 1 session"):
        rec.delete(kube, CFG, body)
    assert kube.names("codesessions") == ["other"] and kube.names("workflowlibraries") == []
    assert rec.delete(kube, CFG, body) == "removed the ACL user"  # Retain: keys stay
    assert redis.deleted == []


def test_delete_data_without_acl(kube: FakeKube, redis: FakeRedis) -> None:
    body = kube.put(
        "workspaces",
        workspace(
            redis={"url": REDIS, "acl": False}, dataPolicy="Delete", workspaceId="t", prefix="p"
        ),
    )
    assert rec.delete(kube, CFG, body) == "deleted 7 Redis key(s)"
    assert redis.deleted == [("p", "t")]


def test_retain_without_acl(kube: FakeKube, redis: FakeRedis) -> None:
    body = kube.put("workspaces", workspace(redis={"url": REDIS, "acl": False}))
    assert rec.delete(kube, CFG, body) == "data retained"


def test_delete_with_the_redis_reference_gone(kube: FakeKube, redis: FakeRedis) -> None:
    body = kube.put("workspaces", workspace(redis={"urlSecretRef": {"name": "x", "key": "u"}}))
    assert rec.delete(kube, CFG, body) == "Redis reference gone; nothing to clean in Redis"


@pytest.mark.parametrize("error", [RedisError("NOPERM"), OSError("unreachable")])
def test_delete_retries_when_redis_fails(
    kube: FakeKube, redis: FakeRedis, error: Exception
) -> None:
    body = kube.put("workspaces", workspace(dataPolicy="Delete"))
    redis.cleanup_error = error
    with pytest.raises(Retry, match="cannot clean up Redis at") as info:
        rec.delete(kube, CFG, body)
    assert ":pw@" not in str(info.value)


def test_params_carry_the_operator_namespace() -> None:
    body: dict[str, Any] = {**workspace(), "metadata": {"name": "ws", "namespace": NS, "uid": "u"}}
    cfg = OperatorConfig.from_env({"OPERATOR_NAMESPACE": "ops"})
    assert rec.params_of(body, cfg).operator_namespace == "ops"
