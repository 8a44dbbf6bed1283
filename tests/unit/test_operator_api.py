"""The operator's API: pydantic models generate fresh, documented, structural CRDs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from codemode_operator import GROUP, VERSION
from codemode_operator.api.codesession import CodeSessionSpec
from codemode_operator.api.common import parse_duration
from codemode_operator.api.workflowlibrary import GitRef, WorkflowLibrarySpec
from codemode_operator.api.workspace import WorkspaceSpec
from codemode_operator.crdgen import KINDS, crd, main, rendered_files
from pydantic import ValidationError

ROOT = Path(__file__).resolve().parents[2]


def _crds() -> dict[str, dict[str, Any]]:
    return {k.kind: crd(k) for k in KINDS}


def _schema(kind: str) -> dict[str, Any]:
    schema: dict[str, Any] = _crds()[kind]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


def test_checked_in_crds_are_fresh() -> None:
    files = rendered_files(ROOT)
    crd_files = {p.relative_to(ROOT).as_posix() for p in files if p.suffix == ".yaml"}
    assert crd_files == {
        f"{d}/{GROUP}_{k.plural}.yaml" for d in ("crds", "helm/codemode/crds") for k in KINDS
    }
    for path, text in files.items():
        assert path.exists(), f"{path} missing: run python -m codemode_operator.crdgen"
        assert path.read_text() == text, f"{path} is stale: run python -m codemode_operator.crdgen"
    assert main(["--root", str(ROOT), "--check"]) == 0


def test_check_detects_stale_file(tmp_path: Path) -> None:
    assert main(["--root", str(tmp_path)]) == 0  # writes
    assert main(["--root", str(tmp_path), "--check"]) == 0
    victim = tmp_path / "crds" / f"{GROUP}_workspaces.yaml"
    victim.write_text(victim.read_text() + "# edited\n")
    assert main(["--root", str(tmp_path), "--check"]) == 1


def test_checked_in_yaml_parses_to_crd() -> None:
    for kind in KINDS:
        doc = yaml.safe_load((ROOT / "crds" / f"{GROUP}_{kind.plural}.yaml").read_text())
        assert doc == crd(kind)


def _walk(node: dict[str, Any], path: str, missing: list[str]) -> None:
    for name, prop in (node.get("properties") or {}).items():
        here = f"{path}.{name}"
        if name != "metadata" and not prop.get("description"):
            missing.append(here)
        _walk(prop, here, missing)
    items = node.get("items")
    if isinstance(items, dict):
        _walk(items, f"{path}[]", missing)
    extra = node.get("additionalProperties")
    if isinstance(extra, dict):
        _walk(extra, f"{path}{{}}", missing)


@pytest.mark.parametrize("kind", [k.kind for k in KINDS])
def test_every_property_has_a_description(kind: str) -> None:
    missing: list[str] = []
    schema = _schema(kind)
    assert schema.get("description")
    _walk(schema, kind, missing)
    assert not missing, f"properties without a description: {missing}"


@pytest.mark.parametrize("kind", [k.kind for k in KINDS])
def test_schema_is_structural(kind: str) -> None:
    def check(node: Any, path: str) -> None:
        if isinstance(node, dict):
            for bad in ("anyOf", "oneOf", "allOf", "$ref", "$defs", "title"):
                assert bad not in node or path.endswith("properties"), f"{bad} at {path}"
            if "properties" in node:
                assert node.get("type") == "object", path
            for key, value in node.items():
                check(value, f"{path}.{key}")
        elif isinstance(node, list):
            for i, value in enumerate(node):
                check(value, f"{path}[{i}]")

    check(_schema(kind), kind)


def test_names_columns_and_status_subresource() -> None:
    crds = _crds()
    shorts = {kind: c["spec"]["names"]["shortNames"] for kind, c in crds.items()}
    assert shorts == {
        "Workspace": ["cmws"],
        "CodeSession": ["cmsess"],
        "WorkflowLibrary": ["cmlib"],
    }
    for kind, c in crds.items():
        assert c["metadata"]["name"] == f"{c['spec']['names']['plural']}.{GROUP}"
        assert c["spec"]["names"]["categories"] == ["codemode"]
        assert c["spec"]["scope"] == "Namespaced"
        version = c["spec"]["versions"][0]
        assert version["name"] == VERSION and version["served"] and version["storage"]
        assert version["subresources"] == {"status": {}}
        columns = {col["name"]: col for col in version["additionalPrinterColumns"]}
        assert columns["Ready"]["jsonPath"] == '.status.conditions[?(@.type=="Ready")].status'
        assert columns["Age"]["jsonPath"] == ".metadata.creationTimestamp", kind
    session_cols = [
        c["name"] for c in crds["CodeSession"]["spec"]["versions"][0]["additionalPrinterColumns"]
    ]
    assert {"Phase", "Workspace", "Endpoint"} <= set(session_cols)
    lib_cols = [
        c["name"]
        for c in crds["WorkflowLibrary"]["spec"]["versions"][0]["additionalPrinterColumns"]
    ]
    assert {"Revision", "Workspace"} <= set(lib_cols)


def test_cel_rules_present() -> None:
    ws = _schema("Workspace")["properties"]["spec"]
    rules = [r["rule"] for r in ws["x-kubernetes-validations"]]
    assert any("workspaceId" in r and "oldSelf" in r for r in rules)
    assert ws["properties"]["prefix"]["x-kubernetes-validations"][0]["rule"] == "self == oldSelf"
    assert ws["properties"]["prefix"]["default"] == "codemode"
    redis_rules = ws["properties"]["redis"]["x-kubernetes-validations"]
    assert "urlSecretRef" in redis_rules[0]["rule"]
    assert ws["properties"]["deletionPolicy"]["enum"] == ["Refuse", "Cascade"]
    lib = _schema("WorkflowLibrary")["properties"]["spec"]
    ref = lib["properties"]["source"]["properties"]["ref"]
    assert "branch" in ref["x-kubernetes-validations"][0]["rule"]
    sess = _schema("CodeSession")["properties"]["spec"]
    assert sess["required"] == ["workspaceRef"]
    assert sess["properties"]["workspaceRef"]["x-kubernetes-validations"]


def test_status_preserves_unknown_fields() -> None:
    for kind in ("Workspace", "CodeSession", "WorkflowLibrary"):
        assert _schema(kind)["properties"]["status"]["x-kubernetes-preserve-unknown-fields"]


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30s", 30.0),
        ("5m", 300.0),
        ("1h30m", 5400.0),
        ("250ms", 0.25),
        ("1.5s", 1.5),
        ("2h", 7200.0),
        ("0s", 0.0),
    ],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "5", "5x", "m5", "1d", "-5s", "5 s", "1h 30m"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration(text)


def test_models_default_and_refuse_unknown() -> None:
    spec = WorkspaceSpec.model_validate({"redis": {"url": "redis://r:6379/0"}})
    assert spec.prefix == "codemode"
    assert spec.deletion_policy == "Refuse"
    assert spec.limits.max_sessions == 10
    assert spec.session_defaults.idle_timeout == "30m"
    with pytest.raises(ValidationError):
        WorkspaceSpec.model_validate({"redis": {"url": "redis://r"}, "bogus": 1})
    with pytest.raises(ValidationError):
        CodeSessionSpec.model_validate({})
    lib = WorkflowLibrarySpec.model_validate(
        {"workspaceRef": "ws", "source": {"url": "https://git.example/x.git"}}
    )
    assert lib.source.ref == GitRef(branch="main")
    assert lib.prune is True and lib.suspend is False and lib.interval == "5m"
    # snake_case and camelCase both populate
    assert CodeSessionSpec(workspace_ref="a").workspace_ref == "a"


@pytest.mark.parametrize("kind", [k.kind for k in KINDS])
def test_wire_names_are_camel_case(kind: str) -> None:
    """Every field is camelCase on the wire, like every Kubernetes API."""
    bad: list[str] = []

    def walk(node: dict[str, Any], path: str) -> None:
        for name, prop in (node.get("properties") or {}).items():
            if "_" in name:
                bad.append(f"{path}.{name}")
            walk(prop, f"{path}.{name}")
        if isinstance(node.get("items"), dict):
            walk(node["items"], f"{path}[]")

    walk(_schema(kind), kind)
    assert not bad, f"snake_case fields in the CRD: {bad}"
