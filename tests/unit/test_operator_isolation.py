"""Isolation the operator builds in: a uid per session pod, one session per pod, storage
quotas passed to the server, the Redis command allow-list, and usage in Workspace status."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from codemode_operator import redis_acl
from codemode_operator.api.common import parse_bytes
from codemode_operator.api.workflowlibrary import WorkflowLibrarySpec
from codemode_operator.api.workspace import WorkspaceSpec
from codemode_operator.builders.library import LibraryParams, sync_job
from codemode_operator.builders.session import (
    SESSION_UID_MAX,
    SESSION_UID_MIN,
    SessionParams,
    session_pod,
    session_uid,
)
from codemode_operator.crdgen import KINDS, crd
from codemode_operator.reconcile.session import params_of
from codemode_operator.reconcile.workspace import usage_status
from codemode_operator.settings import OperatorConfig
from codemode_session.storage.artifact_redis import SAVE_SHA
from pydantic import ValidationError


def _session(uid: str = "uid-s1", **over: Any) -> SessionParams:
    base: dict[str, Any] = dict(
        name="s1",
        namespace="team",
        uid=uid,
        workspace="ws",
        workspace_id="wsid",
        prefix="cm",
        credentials_secret="ws-redis",
        image="img:1",
    )
    base.update(over)
    return SessionParams(**base)


def _env(pod: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in pod["spec"]["containers"][0]["env"] if "value" in e}


# ---- a uid per session pod ---------------------------------------------------------------


def test_each_session_pod_runs_as_its_own_uid() -> None:
    """RLIMIT_NPROC counts per uid on the node: two pods must not share one."""
    first = session_pod(_session("8d9c1f52-0000-4000-8000-000000000001"))
    second = session_pod(_session("8d9c1f52-0000-4000-8000-000000000002"))
    a, b = first["spec"]["securityContext"], second["spec"]["securityContext"]
    assert a["runAsUser"] != b["runAsUser"]
    for psc in (a, b):
        assert psc["runAsNonRoot"] is True
        assert psc["runAsGroup"] == psc["runAsUser"] == psc["fsGroup"]
        assert SESSION_UID_MIN <= psc["runAsUser"] <= SESSION_UID_MAX


def test_session_uid_is_stable_for_the_same_codesession() -> None:
    """A re-created pod of one CodeSession (same metadata.uid) keeps its uid."""
    uid = str(uuid.uuid4())
    pods = [session_pod(_session(uid, image=f"img:{i}")) for i in range(3)]
    assert len({p["spec"]["securityContext"]["runAsUser"] for p in pods}) == 1
    assert session_uid(uid) == session_uid(uid)


def test_session_uids_spread_over_the_range() -> None:
    uids = [session_uid(str(uuid.UUID(int=i))) for i in range(20000)]
    assert min(uids) >= SESSION_UID_MIN and max(uids) <= SESSION_UID_MAX
    assert min(uids) < SESSION_UID_MIN + 2**26 and max(uids) > SESSION_UID_MAX - 2**26
    assert len(set(uids)) >= 19990  # birthday bound for 20,000 in 2.1e9: ~0.09 collisions
    assert SESSION_UID_MIN >= 100000 and SESSION_UID_MAX < 2**31 - 1


def test_sync_jobs_keep_the_fixed_uid() -> None:
    spec = WorkflowLibrarySpec.model_validate(
        {"workspaceRef": "ws", "source": {"url": "https://git.example/r.git"}}
    )
    lib = LibraryParams(
        name="lib",
        namespace="team",
        uid="uid-lib",
        spec=spec,
        workspace="ws",
        workspace_id="wsid",
        prefix="cm",
        credentials_secret="ws-redis",
        image="img:1",
    )
    psc = sync_job(lib, "lib-sync-1")["spec"]["template"]["spec"]["securityContext"]
    assert psc["runAsUser"] == 10001 and psc["runAsNonRoot"] is True


# ---- one session per pod, storage quotas -------------------------------------------------


def test_session_pod_serves_one_session() -> None:
    assert _env(session_pod(_session()))["MAX_SESSIONS"] == "1"


def test_session_pod_gets_the_default_storage_quotas() -> None:
    env = _env(session_pod(_session()))
    assert env["STORAGE_MAX_BYTES"] == str(2**30)
    assert env["STORAGE_MAX_ARTIFACT_BYTES"] == str(64 * 2**20)
    assert env["STORAGE_MAX_WORKFLOWS"] == "1000"


def test_workspace_limits_reach_the_session_pod_as_bytes() -> None:
    workspace = {
        "metadata": {"name": "ws"},
        "status": {"credentialsSecret": "ws-redis"},
        "spec": {
            "redis": {"url": "redis://r:6379/0"},
            "limits": {"maxStorageBytes": "2.5Gi", "maxArtifactBytes": "500k", "maxWorkflows": 7},
        },
    }
    session = {
        "metadata": {"name": "s1", "namespace": "team", "uid": "u1"},
        "spec": {"workspaceRef": "ws"},
    }
    params = params_of(session, workspace, OperatorConfig.from_env())
    env = _env(session_pod(params))
    assert env["STORAGE_MAX_BYTES"] == str(int(2.5 * 2**30))
    assert env["STORAGE_MAX_ARTIFACT_BYTES"] == "500000"
    assert env["STORAGE_MAX_WORKFLOWS"] == "7"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0", 0),
        ("1048576", 2**20),
        ("64Mi", 64 * 2**20),
        ("1Gi", 2**30),
        ("1G", 10**9),
        ("1.5Ki", 1536),
        ("0.1", 1),
        ("2k", 2000),
        ("1Ei", 2**60),
    ],
)
def test_parse_bytes(text: str, expected: int) -> None:
    assert parse_bytes(text) == expected


@pytest.mark.parametrize("text", ["", "-1", "1m", "1e3", "Gi", "1 Gi", "1gi", "1Gi\n", "1.Gi"])
def test_parse_bytes_refuses_what_the_schema_refuses(text: str) -> None:
    with pytest.raises(ValueError, match="invalid byte quantity"):
        parse_bytes(text)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("maxStorageBytes", "1GB"),
        ("maxArtifactBytes", "-5"),
        ("maxStorageBytes", "lots"),
        ("maxWorkflows", 0),
        ("maxWorkflows", 10**7),
    ],
)
def test_invalid_limits_name_the_field(field: str, value: Any) -> None:
    with pytest.raises(ValidationError) as info:
        WorkspaceSpec.model_validate({"redis": {"url": "redis://r"}, "limits": {field: value}})
    assert field in str(info.value)


def test_limits_schema_has_defaults_bounds_and_the_contradiction_rule() -> None:
    workspace = next(k for k in KINDS if k.kind == "Workspace")
    schema = crd(workspace)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    limits = schema["properties"]["spec"]["properties"]["limits"]
    props = limits["properties"]
    assert props["maxStorageBytes"]["default"] == "1Gi"
    assert props["maxArtifactBytes"]["default"] == "64Mi"
    assert props["maxWorkflows"]["default"] == 1000
    assert props["maxStorageBytes"]["pattern"] == props["maxArtifactBytes"]["pattern"]
    [rule] = limits["x-kubernetes-validations"]
    assert "maxArtifactBytes" in rule["message"] and rule["fieldPath"] == ".maxArtifactBytes"
    for field in ("maxStorageBytes", "maxArtifactBytes"):  # the server reads 0 as no limit
        [positive] = props[field]["x-kubernetes-validations"]
        assert "isGreaterThan(quantity('0'))" in positive["rule"]
    assert props["maxWorkflows"]["minimum"] == 1
    usage = schema["properties"]["status"]["properties"]["usage"]["properties"]
    assert set(usage) == {"storageBytes", "artifacts", "workflows"}


# ---- Redis command allow-list ------------------------------------------------------------


def test_allow_and_deny_lists_do_not_overlap_and_grant_only_commands() -> None:
    assert not set(redis_acl.ALLOWED) & set(redis_acl.DENIED)
    assert not set(redis_acl.UNRESTRICTED) & set(redis_acl.ALLOWED)
    for name in redis_acl.ALLOWED:
        assert name == name.lower() and not name.startswith("@")
    # what a workspace user must never have, whatever else changes
    for leak in (
        "scan",
        "keys",
        "dbsize",
        "randomkey",
        "info",
        "client|tracking",
        "client|list",
        "client|kill",
        "client|pause",
        "memory",
        "object|freq",
        "pubsub",
        "subscribe",
        "publish",
        "monitor",
        "config",
        "debug",
        "eval",
        "function",
        "script",
        "select",
        "wait",
        "flushall",
        "flushdb",
    ):
        assert leak not in redis_acl.ALLOWED
        assert redis_acl.decided(leak)
    assert redis_acl.decided("config|get") and not redis_acl.decided("nosuch")


def test_acl_rules_grant_only_the_known_commands_given() -> None:
    rules = redis_acl.acl_rules("cm", "wsid", "pw", commands=["get", "client|setname"])
    script = f"+evalsha|{SAVE_SHA}"
    assert rules[-4:] == ["-@all", "+client|setname", "+get", script]
    default = redis_acl.acl_rules("cm", "wsid", "pw")
    granted = {r[1:] for r in default if r.startswith("+") and r != script}
    assert granted == set(redis_acl.ALLOWED)


# ---- usage in Workspace status -----------------------------------------------------------


@pytest.mark.parametrize(
    ("stored", "expected"),
    [
        (None, 0),
        (b"0", 0),
        (b"12345", 12345),
        (b"-20", 0),
        (b"garbage", 0),
    ],
)
def test_usage_status(stored: bytes | None, expected: int) -> None:
    usage = usage_status(redis_acl.Usage(storage_bytes=stored, artifacts=3, workflows=4))
    assert usage.model_dump(by_alias=True) == {
        "storageBytes": expected,
        "artifacts": 3,
        "workflows": 4,
    }
