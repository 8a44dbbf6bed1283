"""Generate the CRDs from the pydantic models: `python -m codemode_operator.crdgen`.

Writes crds/*.yaml, helm/codemode/crds/*.yaml and the CRD reference in README.md.
The conversion inlines $refs, turns Optional[X] into an optional X, and keeps
descriptions, defaults, bounds, patterns and `x-kubernetes-validations`, so the
schema is structural and `kubectl explain` teaches every field.
"""

from __future__ import annotations

import argparse
import copy
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from codemode_operator import GROUP, VERSION
from codemode_operator.api.codesession import CodeSessionSpec, CodeSessionStatus
from codemode_operator.api.workflowlibrary import WorkflowLibrarySpec, WorkflowLibraryStatus
from codemode_operator.api.workspace import WorkspaceSpec, WorkspaceStatus
from codemode_operator.vocabulary import ConditionType

KEEP = {
    "type",
    "description",
    "default",
    "enum",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "pattern",
    "minLength",
    "maxLength",
    "minItems",
    "maxItems",
    "items",
    "properties",
    "required",
    "additionalProperties",
    "format",
    "x-kubernetes-validations",
    "x-kubernetes-preserve-unknown-fields",
}


def _ready(col: str = "Ready") -> dict[str, Any]:
    return {
        "name": col,
        "type": "string",
        "jsonPath": f'.status.conditions[?(@.type=="{ConditionType.READY.value}")].status',
    }


AGE = {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}


@dataclass(frozen=True)
class Kind:
    kind: str
    plural: str
    short_names: tuple[str, ...]
    spec: type[BaseModel]
    status: type[BaseModel]
    columns: tuple[dict[str, Any], ...]
    description: str

    @property
    def singular(self) -> str:
        return self.kind.lower()


KINDS = (
    Kind(
        "Workspace",
        "workspaces",
        ("cmws",),
        WorkspaceSpec,
        WorkspaceStatus,
        (
            _ready(),
            {"name": "Workspace", "type": "string", "jsonPath": ".status.workspaceId"},
            {"name": "Redis", "type": "boolean", "jsonPath": ".status.redisReachable"},
            {"name": "Sessions", "type": "integer", "jsonPath": ".status.sessions"},
            {"name": "Libraries", "type": "integer", "jsonPath": ".status.libraries"},
            {
                "name": "Warm",
                "type": "integer",
                "jsonPath": ".status.warmPool.ready",
                "description": "Warm pool pods ready to be bound.",
            },
            {
                "name": "Storage",
                "type": "integer",
                "jsonPath": ".status.usage.storageBytes",
                "priority": 1,
                "description": "Bytes stored, against limits.maxStorageBytes.",
            },
            {
                "name": "Workflows",
                "type": "integer",
                "jsonPath": ".status.usage.workflows",
                "priority": 1,
            },
            AGE,
        ),
        "A tenant: a Redis namespace (prefix + workspaceId) shared by its sessions and "
        "libraries, with session defaults, network policy and quotas.",
    ),
    Kind(
        "CodeSession",
        "codesessions",
        ("cmsess",),
        CodeSessionSpec,
        CodeSessionStatus,
        (
            _ready(),
            {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
            {"name": "Workspace", "type": "string", "jsonPath": ".spec.workspaceRef"},
            {"name": "Endpoint", "type": "string", "jsonPath": ".status.endpoint"},
            AGE,
        ),
        "A sandboxed Python code-mode session: a session-server pod, its Service and token.",
    ),
    Kind(
        "WorkflowLibrary",
        "workflowlibraries",
        ("cmlib",),
        WorkflowLibrarySpec,
        WorkflowLibraryStatus,
        (
            _ready(),
            {"name": "Workspace", "type": "string", "jsonPath": ".spec.workspaceRef"},
            {"name": "Revision", "type": "string", "jsonPath": ".status.artifact.revision"},
            {"name": "Workflows", "type": "integer", "jsonPath": ".status.artifact.count"},
            {"name": "Last Sync", "type": "date", "jsonPath": ".status.lastSyncTime"},
            AGE,
        ),
        "Workflows from a git repository, published into a Workspace and kept in sync.",
    ),
)


def _resolve(node: Any, defs: dict[str, Any]) -> Any:
    if isinstance(node, list):
        return [_resolve(n, defs) for n in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        target = copy.deepcopy(defs[node["$ref"].split("/")[-1]])
        merged = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
        return _resolve(merged, defs)
    if "anyOf" in node:
        options = [o for o in node["anyOf"] if o.get("type") != "null"]
        rest = {k: v for k, v in node.items() if k != "anyOf"}
        if len(options) == 1:
            return _resolve({**_resolve(options[0], defs), **rest}, defs)
    if "allOf" in node and len(node["allOf"]) == 1:
        rest = {k: v for k, v in node.items() if k != "allOf"}
        return _resolve({**_resolve(node["allOf"][0], defs), **rest}, defs)
    return {k: _resolve(v, defs) for k, v in node.items()}


def _clean(node: Any) -> Any:
    if isinstance(node, list):
        return [_clean(n) for n in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    if "const" in node:
        out["enum"] = [node["const"]]
    for key, value in node.items():
        if key not in KEEP:
            continue
        if key == "properties":
            out[key] = {name: _clean(prop) for name, prop in value.items()}
        elif key in ("items", "additionalProperties") and isinstance(value, dict):
            out[key] = _clean(value)
        elif key == "additionalProperties":
            continue  # structural schemas prune unknown fields; a boolean is not allowed
        elif key == "default" and value is None:
            continue
        else:
            out[key] = value
    if "properties" in out:
        out.setdefault("type", "object")
    if (
        out.get("type") == "object"
        and "properties" not in out
        and "additionalProperties" not in out
    ):
        out["x-kubernetes-preserve-unknown-fields"] = True
    if out.get("default") == [] or out.get("default") == {}:
        out.pop("default")
    return out


def schema_of(model: type[BaseModel]) -> dict[str, Any]:
    raw = model.model_json_schema(by_alias=True, mode="validation")
    defs = raw.pop("$defs", {})
    cleaned: dict[str, Any] = _clean(_resolve(raw, defs))
    return cleaned


def crd(kind: Kind) -> dict[str, Any]:
    spec_schema = schema_of(kind.spec)
    spec_schema["description"] = f"Desired state of the {kind.kind}."
    status_schema = schema_of(kind.status)
    status_schema["description"] = f"Observed state of the {kind.kind}, set by the operator."
    status_schema["x-kubernetes-preserve-unknown-fields"] = True
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{kind.plural}.{GROUP}",
            "labels": {"app.kubernetes.io/part-of": "codemode"},
        },
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": kind.kind,
                "listKind": f"{kind.kind}List",
                "plural": kind.plural,
                "singular": kind.singular,
                "shortNames": list(kind.short_names),
                "categories": ["codemode"],
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": list(kind.columns),
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": kind.description,
                            "required": ["spec"],
                            "properties": {
                                "apiVersion": {"type": "string", "description": "API version."},
                                "kind": {"type": "string", "description": "Kind of the object."},
                                "metadata": {"type": "object"},
                                "spec": spec_schema,
                                "status": status_schema,
                            },
                        }
                    },
                }
            ],
        },
    }


def render(kind: Kind) -> str:
    header = (
        "# Generated by `python -m codemode_operator.crdgen` from the pydantic models.\n"
        "# Do not edit by hand.\n"
    )
    return header + yaml.safe_dump(crd(kind), sort_keys=False, width=100)


def targets(root: Path) -> list[Path]:
    return [root / "crds", root / "helm" / "codemode" / "crds"]


def rendered_files(root: Path) -> dict[Path, str]:
    """Every generated file: the CRDs (twice) and README.md's CRD reference."""
    from codemode_operator.reference import update_readme

    files: dict[Path, str] = {}
    for directory in targets(root):
        for kind in KINDS:
            files[directory / f"{GROUP}_{kind.plural}.yaml"] = render(kind)
    files[root / "README.md"] = update_readme(root / "README.md", [crd(k) for k in KINDS])
    return files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parents[2])
    parser.add_argument("--check", action="store_true", help="fail if a file is stale")
    args = parser.parse_args(argv)
    stale = []
    for path, text in rendered_files(args.root).items():
        current = path.read_text() if path.exists() else None
        if current != text:
            stale.append(path)
            if not args.check:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(text)
    if args.check and stale:
        print(
            "stale CRDs (run python -m codemode_operator.crdgen): "
            + ", ".join(str(p) for p in stale),
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
