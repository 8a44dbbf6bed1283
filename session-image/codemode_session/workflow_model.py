"""A workflow: Python source defining `async def run(...)`, described by its AST.

Parameters come from the signature without executing the source, so a
library can be validated and published by a Job that never runs its code.
"""

from __future__ import annotations

import ast
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from codemode_session.errors import ValidationError
from codemode_session.names import validate_workflow_name

MAX_SOURCE_BYTES = 512 * 1024


@dataclass(frozen=True)
class Parameter:
    name: str
    type: str = "Any"
    description: str = ""
    required: bool = True
    default: Any = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "type": self.type,
            "description": self.description,
            "required": self.required,
            "default": self.default,
        }


@dataclass(frozen=True)
class Workflow:
    name: str
    source: str
    description: str = ""
    parameters: tuple[Parameter, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "source": self.source,
            "parameters": [p.to_dict() for p in self.parameters],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    def summary(self) -> dict[str, Any]:
        """What list/search show: everything but the source."""
        data = self.to_dict()
        del data["source"]
        return data

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.to_json().encode()).hexdigest()

    @classmethod
    def from_dict(cls, data: Any) -> Workflow:
        """A stored workflow; ValidationError when the record is not one (another client's
        or a corrupted entry), so callers can skip it instead of failing."""
        if not isinstance(data, dict) or not isinstance(data.get("name"), str):
            raise ValidationError("stored workflow record is malformed (no name)")
        raw_params = data.get("parameters") or []
        if not isinstance(raw_params, list):
            raw_params = []
        params = tuple(
            Parameter(
                name=str(p.get("name", "")),
                type=str(p.get("type", "Any")),
                description=str(p.get("description", "")),
                required=bool(p.get("required", True)),
                default=p.get("default"),
            )
            for p in raw_params if isinstance(p, dict)
        )
        return cls(
            name=data["name"],
            source=str(data.get("source", "")),
            description=str(data.get("description", "")),
            parameters=params,
        )

    @classmethod
    def from_json(cls, raw: str | bytes) -> Workflow:
        try:
            data = json.loads(raw)
        except (ValueError, RecursionError):
            raise ValidationError("stored workflow record is not JSON") from None
        return cls.from_dict(data)


def _literal(node: ast.expr) -> Any:
    try:
        value = ast.literal_eval(node)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return ast.unparse(node)
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError, RecursionError):
        # Not JSON (a set, bytes, 1e999): keep the default as its source text.
        return ast.unparse(node)
    return value


def _param_docs(docstring: str) -> dict[str, str]:
    """Read `name: text` lines of an Args:/Parameters: section (Google style)."""
    docs: dict[str, str] = {}
    in_args = False
    for line in docstring.splitlines():
        stripped = line.strip()
        if stripped.lower() in ("args:", "arguments:", "parameters:", "params:"):
            in_args = True
            continue
        if in_args:
            if not stripped:
                continue
            if stripped.endswith(":") and " " not in stripped:
                in_args = False
                continue
            head, sep, text = stripped.partition(":")
            name = head.split("(")[0].strip()
            if sep and name.isidentifier():
                docs[name] = text.strip()
    return docs


def parse_workflow(name: str, source: str, description: str | None = None) -> Workflow:
    """Validate a workflow's name and source and describe it.

    Raises ValidationError naming what is wrong: the name, a syntax error with its
    line, or a missing `async def run`.
    """
    validate_workflow_name(name)
    if not isinstance(source, str) or not source.strip():
        raise ValidationError(f"workflow {name!r}: source is empty")
    if len(source.encode()) > MAX_SOURCE_BYTES:
        raise ValidationError(f"workflow {name!r}: source is larger than {MAX_SOURCE_BYTES} bytes")
    try:
        tree = ast.parse(source, filename=f"<workflow {name}>")
    except SyntaxError as exc:
        raise ValidationError(
            f"workflow {name!r}: syntax error at line {exc.lineno}: {exc.msg}"
        ) from None
    run = next(
        (n for n in tree.body if isinstance(n, ast.AsyncFunctionDef | ast.FunctionDef)
         and n.name == "run"),
        None,
    )
    if run is None:
        raise ValidationError(f"workflow {name!r}: must define `async def run(...)`")
    if not isinstance(run, ast.AsyncFunctionDef):
        raise ValidationError(f"workflow {name!r}: `run` must be `async def run(...)`")
    run_doc = ast.get_docstring(run) or ""
    module_doc = ast.get_docstring(tree) or ""
    if description is None or not description.strip():
        description = (module_doc or run_doc).strip().split("\n\n")[0].strip()
    docs = _param_docs(run_doc)

    args = run.args
    params: list[Parameter] = []
    positional = [*args.posonlyargs, *args.args]
    first_default = len(positional) - len(args.defaults)
    for index, arg in enumerate(positional):
        has_default = index >= first_default
        default = _literal(args.defaults[index - first_default]) if has_default else None
        params.append(_param(arg, has_default, default, docs))
    for arg, kw_default in zip(args.kwonlyargs, args.kw_defaults, strict=True):
        has_default = kw_default is not None
        default = _literal(kw_default) if kw_default is not None else None
        params.append(_param(arg, has_default, default, docs))
    return Workflow(
        name=name, source=source, description=description, parameters=tuple(params)
    )


def _param(arg: ast.arg, has_default: bool, default: Any, docs: dict[str, str]) -> Parameter:
    return Parameter(
        name=arg.arg,
        type=ast.unparse(arg.annotation) if arg.annotation is not None else "Any",
        description=docs.get(arg.arg, ""),
        required=not has_default,
        default=default,
    )
