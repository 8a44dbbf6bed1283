"""The real API server enforces the CRD schemas: invalid CRs are refused with a message
naming the field, valid ones are accepted with defaults applied."""

from __future__ import annotations

import copy
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from tests.cluster.pytest_plugin import Cluster
from tests.k8s.operator_fixture import GROUP, VERSION, Kinds, install_crds, temp_namespace

pytestmark = pytest.mark.k8s
ROOT = Path(__file__).resolve().parents[2]

WS: dict[str, Any] = {"redis": {"url": "redis://redis.data.svc:6379/0"}}
LIB: dict[str, Any] = {"workspaceRef": "ws", "source": {"url": "https://git.example/r.git"}}


@pytest.fixture(scope="module")
def kinds(k8s_cluster: Cluster) -> Iterator[Kinds]:
    api = k8s_cluster.api_client()
    install_crds(k8s_cluster.kubeconfig, api)
    with temp_namespace(api, "t-crd-validation") as ns:
        yield Kinds(api, ns)


def _name() -> str:
    return f"x{uuid.uuid4().hex[:8]}"


def _with(base: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A copy of base with a dotted path set (None deletes)."""
    out = copy.deepcopy(base)
    node = out
    *parents, last = path.split(".")
    for key in parents:
        node = node.setdefault(key, {})
    if value is None:
        node.pop(last, None)
    else:
        node[last] = value
    return out


def _refused(
    kinds: Kinds, plural: str, spec: dict[str, Any], *needles: str, strict: bool = False
) -> str:
    kw = {"field_validation": "Strict"} if strict else {}
    with pytest.raises(client.ApiException) as info:
        kinds.create(plural, _name(), spec, **kw)
    exc = info.value
    assert exc.status in (400, 422), exc.body
    message = json.loads(exc.body).get("message", "") if exc.body else ""
    for needle in needles:
        assert needle in message, f"{needle!r} not in {message!r}"
    return message


CREATE_CASES: list[tuple[str, str, dict[str, Any], tuple[str, ...]]] = [
    (
        "ws-url-and-secret",
        "workspaces",
        _with(WS, "redis.urlSecretRef", {"name": "s", "key": "url"}),
        ("spec.redis", "set exactly one of redis.url or redis.urlSecretRef"),
    ),
    (
        "ws-no-redis-target",
        "workspaces",
        {"redis": {}},
        ("spec.redis", "set exactly one of redis.url or redis.urlSecretRef"),
    ),
    ("ws-no-redis", "workspaces", {"prefix": "x"}, ("spec.redis", "Required value")),
    (
        "ws-url-scheme",
        "workspaces",
        _with(WS, "redis.url", "http://redis:6379"),
        ("spec.redis.url",),
    ),
    ("ws-id-slash", "workspaces", _with(WS, "workspaceId", "a/b"), ("spec.workspaceId",)),
    ("ws-id-colon", "workspaces", _with(WS, "workspaceId", "a:b"), ("spec.workspaceId",)),
    ("ws-id-too-long", "workspaces", _with(WS, "workspaceId", "a" * 129), ("spec.workspaceId",)),
    ("ws-prefix-bad", "workspaces", _with(WS, "prefix", "a b"), ("spec.prefix",)),
    (
        "ws-idle-timeout",
        "workspaces",
        _with(WS, "sessionDefaults", {"idleTimeout": "10"}),
        ("spec.sessionDefaults.idleTimeout",),
    ),
    (
        "ws-max-lifetime",
        "workspaces",
        _with(WS, "sessionDefaults", {"maxLifetime": "1d"}),
        ("spec.sessionDefaults.maxLifetime",),
    ),
    (
        "ws-max-sessions-negative",
        "workspaces",
        _with(WS, "limits", {"maxSessions": -1}),
        ("spec.limits.maxSessions",),
    ),
    (
        "ws-max-storage-unit",
        "workspaces",
        _with(WS, "limits", {"maxStorageBytes": "1GB"}),
        ("spec.limits.maxStorageBytes",),
    ),
    (
        "ws-max-storage-negative",
        "workspaces",
        _with(WS, "limits", {"maxStorageBytes": "-1"}),
        ("spec.limits.maxStorageBytes",),
    ),
    (
        "ws-max-artifact-milli",
        "workspaces",
        _with(WS, "limits", {"maxArtifactBytes": "100m"}),
        ("spec.limits.maxArtifactBytes",),
    ),
    (
        "ws-max-artifact-over-storage",
        "workspaces",
        _with(WS, "limits", {"maxStorageBytes": "10Mi", "maxArtifactBytes": "11Mi"}),
        (
            "spec.limits.maxArtifactBytes",
            "limits.maxArtifactBytes must not exceed limits.maxStorageBytes",
        ),
    ),
    (
        "ws-max-artifact-over-default-storage",
        "workspaces",
        _with(WS, "limits", {"maxArtifactBytes": "2Gi"}),
        ("spec.limits.maxArtifactBytes", "must not exceed limits.maxStorageBytes"),
    ),
    (
        "ws-max-workflows-zero",
        "workspaces",
        _with(WS, "limits", {"maxWorkflows": 0}),
        ("spec.limits.maxWorkflows",),
    ),
    (
        "ws-max-storage-zero",
        "workspaces",
        _with(WS, "limits", {"maxStorageBytes": "0Gi"}),
        ("spec.limits.maxStorageBytes", "must be more than 0"),
    ),
    (
        "ws-max-artifact-zero",
        "workspaces",
        _with(WS, "limits", {"maxArtifactBytes": "0.0"}),
        ("spec.limits.maxArtifactBytes", "must be more than 0"),
    ),
    (
        "ws-max-workflows-string",
        "workspaces",
        _with(WS, "limits", {"maxWorkflows": "many"}),
        ("spec.limits.maxWorkflows",),
    ),
    (
        "ws-deletion-policy",
        "workspaces",
        _with(WS, "deletionPolicy", "Orphan"),
        ("spec.deletionPolicy", "Unsupported value"),
    ),
    ("ws-data-policy", "workspaces", _with(WS, "dataPolicy", "Shred"), ("spec.dataPolicy",)),
    (
        "ws-memory-limit",
        "workspaces",
        _with(WS, "sessionDefaults", {"memoryLimitMB": 1}),
        ("spec.sessionDefaults.memoryLimitMB",),
    ),
    (
        "ws-egress-cidr",
        "workspaces",
        _with(WS, "network", {"egress": [{"cidr": "any"}]}),
        ("spec.network.egress[0].cidr",),
    ),
    (
        "ws-pull-policy",
        "workspaces",
        _with(WS, "sessionDefaults", {"imagePullPolicy": "Sometimes"}),
        ("spec.sessionDefaults.imagePullPolicy",),
    ),
    ("session-no-workspace", "codesessions", {}, ("spec.workspaceRef", "Required value")),
    ("session-bad-workspace", "codesessions", {"workspaceRef": "Bad_Name"}, ("spec.workspaceRef",)),
    (
        "session-idle-timeout",
        "codesessions",
        {"workspaceRef": "ws", "idleTimeout": "soon"},
        ("spec.idleTimeout",),
    ),
    (
        "lib-branch-and-tag",
        "workflowlibraries",
        _with(LIB, "source.ref", {"branch": "main", "tag": "v1"}),
        ("spec.source.ref", "exactly one of branch, tag or commit"),
    ),
    (
        "lib-empty-ref",
        "workflowlibraries",
        _with(LIB, "source.ref", {}),
        ("spec.source.ref", "exactly one of branch, tag or commit"),
    ),
    (
        "lib-commit-not-hex",
        "workflowlibraries",
        _with(LIB, "source.ref", {"commit": "xyz1234"}),
        ("spec.source.ref.commit",),
    ),
    (
        "lib-path-dotdot",
        "workflowlibraries",
        _with(LIB, "source.path", "a/../../etc"),
        ("spec.source.path", "must not contain '..'"),
    ),
    (
        "lib-url-scheme",
        "workflowlibraries",
        _with(LIB, "source.url", "ftp://git.example/r"),
        ("spec.source.url",),
    ),
    ("lib-interval", "workflowlibraries", _with(LIB, "interval", "5x"), ("spec.interval",)),
    (
        "lib-no-source",
        "workflowlibraries",
        {"workspaceRef": "ws"},
        ("spec.source", "Required value"),
    ),
    ("lib-no-spec", "workflowlibraries", None, ("spec", "Required value")),  # type: ignore[list-item]
]


@pytest.mark.parametrize(
    ("plural", "spec", "needles"), [c[1:] for c in CREATE_CASES], ids=[c[0] for c in CREATE_CASES]
)
def test_invalid_create_refused(
    kinds: Kinds, plural: str, spec: dict[str, Any] | None, needles: tuple[str, ...]
) -> None:
    if spec is None:
        body = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "WorkflowLibrary",
            "metadata": {"name": _name()},
        }
        with pytest.raises(client.ApiException) as info:
            kinds.custom.create_namespaced_custom_object(
                GROUP, VERSION, kinds.namespace, plural, body
            )
        message = json.loads(info.value.body)["message"]
        assert info.value.status == 422
        for needle in needles:
            assert needle in message
        return
    _refused(kinds, plural, spec, *needles)


@pytest.mark.parametrize(
    ("plural", "spec", "field"),
    [
        ("workspaces", _with(WS, "bogus", 1), "spec.bogus"),
        ("workspaces", _with(WS, "redis.password", "x"), "spec.redis.password"),
        ("codesessions", {"workspaceRef": "ws", "replicas": 2}, "spec.replicas"),
        ("workflowlibraries", _with(LIB, "source.branch", "main"), "spec.source.branch"),
    ],
)
def test_unknown_field_refused_with_strict_validation(
    kinds: Kinds, plural: str, spec: dict[str, Any], field: str
) -> None:
    message = _refused(kinds, plural, spec, field, strict=True)
    assert "unknown field" in message


def _update_refused(kinds: Kinds, plural: str, name: str, patch: Any, *needles: str) -> None:
    with pytest.raises(client.ApiException) as info:
        kinds.patch(plural, name, patch)
    assert info.value.status == 422, info.value.body
    message = json.loads(info.value.body)["message"]
    for needle in needles:
        assert needle in message, f"{needle!r} not in {message!r}"


def test_workspace_identity_is_immutable(kinds: Kinds) -> None:
    name = _name()
    kinds.create("workspaces", name, _with(WS, "workspaceId", "tenant-1"))
    _update_refused(
        kinds,
        "workspaces",
        name,
        {"spec": {"workspaceId": "tenant-2"}},
        "spec",
        "workspaceId is immutable",
    )
    _update_refused(
        kinds,
        "workspaces",
        name,
        {"spec": {"prefix": "other"}},
        "spec.prefix",
        "prefix is immutable",
    )
    _update_refused(
        kinds, "workspaces", name, {"spec": {"workspaceId": None}}, "workspaceId is immutable"
    )
    # mutable fields still change
    kinds.patch("workspaces", name, {"spec": {"limits": {"maxSessions": 3}}})
    got = kinds.get("workspaces", name)
    assert got is not None
    assert got["spec"]["limits"]["maxSessions"] == 3
    assert got["spec"]["workspaceId"] == "tenant-1"


def test_workspace_id_cannot_be_added_later(kinds: Kinds) -> None:
    name = _name()
    kinds.create("workspaces", name, WS)
    _update_refused(
        kinds, "workspaces", name, {"spec": {"workspaceId": "late"}}, "workspaceId is immutable"
    )


def test_session_and_library_workspace_ref_immutable(kinds: Kinds) -> None:
    s = _name()
    kinds.create("codesessions", s, {"workspaceRef": "ws"})
    _update_refused(
        kinds,
        "codesessions",
        s,
        {"spec": {"workspaceRef": "other"}},
        "spec.workspaceRef",
        "workspaceRef is immutable",
    )
    lib = _name()
    kinds.create("workflowlibraries", lib, LIB)
    _update_refused(
        kinds,
        "workflowlibraries",
        lib,
        {"spec": {"workspaceRef": "other"}},
        "spec.workspaceRef",
        "workspaceRef is immutable",
    )
    _update_refused(
        kinds,
        "workflowlibraries",
        lib,
        {"spec": {"source": {"ref": {"branch": "main", "tag": "v1"}}}},
        "spec.source.ref",
        "exactly one of branch, tag or commit",
    )


def _example(name: str) -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load((ROOT / "examples" / f"{name}.yaml").read_text())
    return doc


def test_examples_accepted_with_defaults(kinds: Kinds) -> None:
    created = {}
    for example, plural in (
        ("workspace", "workspaces"),
        ("session", "codesessions"),
        ("library", "workflowlibraries"),
    ):
        doc = _example(example)
        doc["metadata"] = {"name": _name()}
        created[plural] = kinds.custom.create_namespaced_custom_object(
            GROUP, VERSION, kinds.namespace, plural, doc, field_validation="Strict"
        )
    ws = created["workspaces"]["spec"]
    assert ws["redis"]["acl"] is True
    assert ws["sessionDefaults"]["maxExecutionTime"] == "5m"
    assert ws["sessionDefaults"]["imagePullPolicy"] == "IfNotPresent"
    assert ws["sessionDefaults"]["memoryLimitMB"] == 1024
    lib = created["workflowlibraries"]["spec"]
    assert lib["timeout"] == "5m" and lib["suspend"] is False
    assert created["codesessions"]["spec"] == {
        "workspaceRef": "client-a",
        "suspend": False,
        "idleAction": "Delete",
    }


def test_minimal_objects_get_defaults(kinds: Kinds) -> None:
    ws = kinds.create("workspaces", _name(), {**WS, "limits": {}, "sessionDefaults": {}})["spec"]
    assert ws["prefix"] == "codemode"
    assert ws["deletionPolicy"] == "Refuse" and ws["dataPolicy"] == "Retain"
    assert ws["limits"] == {
        "maxSessions": 10,
        "maxStorageBytes": "1Gi",
        "maxArtifactBytes": "64Mi",
        "maxWorkflows": 1000,
    }
    quotas = {"maxStorageBytes": "2.5G", "maxArtifactBytes": "2500M", "maxWorkflows": 1}
    equal = kinds.create("workspaces", _name(), {**WS, "limits": quotas})["spec"]
    assert equal["limits"] == {"maxSessions": 10, **quotas}  # equal quantities are fine
    assert ws["sessionDefaults"]["idleTimeout"] == "30m"
    assert ws["sessionDefaults"]["maxLifetime"] == "12h"
    assert ws["sessionDefaults"]["allowRuntimeDeps"] is False
    assert "workspaceId" not in ws
    lib = kinds.create("workflowlibraries", _name(), LIB)["spec"]
    assert "ref" not in lib["source"]  # the operator reads a missing ref as branch main
    assert lib["source"]["path"] == "."
    assert lib["interval"] == "5m" and lib["prune"] is True
    ok = kinds.create(
        "workflowlibraries", _name(), _with(LIB, "source.ref", {"commit": "0123abc"})
    )["spec"]
    assert ok["source"]["ref"] == {"commit": "0123abc"}
    sess = kinds.create(
        "codesessions",
        _name(),
        {"workspaceRef": "ws", "idleTimeout": "1h30m", "runtimeClassName": "gvisor"},
    )
    assert sess["spec"]["idleTimeout"] == "1h30m"


def test_printer_columns_and_category(k8s_cluster: Cluster, kinds: Kinds) -> None:
    kinds.create("workspaces", "cols", _with(WS, "workspaceId", "tenant-cols"))
    kinds.create("codesessions", "cols", {"workspaceRef": "cols"})
    out = k8s_cluster.kubectl("get", "codemode", "-n", kinds.namespace)
    assert "workspace.codemode.dev/cols" in out
    assert "codesession.codemode.dev/cols" in out
    header = k8s_cluster.kubectl("get", "cmsess", "-n", kinds.namespace).splitlines()[0]
    for column in ("READY", "PHASE", "WORKSPACE", "ENDPOINT", "AGE"):
        assert column in header
    explain = k8s_cluster.kubectl("explain", "workspaces.spec.redis.urlSecretRef")
    assert "A Secret key holding the admin Redis URL" in explain
