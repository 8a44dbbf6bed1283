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
# Deepest default or annotation expression a workflow may have: described with
# `ast.unparse`, which recurses per level; far below where the stack runs out.
MAX_EXPRESSION_DEPTH = 100
BOM = "\ufeff"


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
            for p in raw_params
            if isinstance(p, dict)
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


def _depth(node: ast.AST) -> int:
    """How deeply `node` nests, counted without recursion (the point is to refuse
    what would exhaust the stack of `ast.unparse` or `literal_eval`)."""
    deepest, stack = 0, [(node, 1)]
    while stack:
        current, level = stack.pop()
        deepest = max(deepest, level)
        stack.extend((child, level + 1) for child in ast.iter_child_nodes(current))
    return deepest


def _source_text(node: ast.expr, what: str) -> str:
    """`node` as source text; ValidationError naming `what` when it cannot be shown
    (nested past MAX_EXPRESSION_DEPTH, or an integer too long to print)."""
    depth = _depth(node)
    if depth > MAX_EXPRESSION_DEPTH:
        raise ValidationError(
            f"{what} is nested {depth} levels deep (at most {MAX_EXPRESSION_DEPTH}); "
            "compute it inside run() instead"
        )
    try:
        return ast.unparse(node)
    except (ValueError, RecursionError, MemoryError) as exc:
        reason = str(exc).split(";")[0] if isinstance(exc, ValueError) else "too complex"
        raise ValidationError(f"{what} cannot be described: {reason}") from None


def _literal(node: ast.expr, what: str) -> Any:
    """A default as its JSON value, or as its source text when it is not JSON."""
    if _depth(node) > MAX_EXPRESSION_DEPTH:
        return _source_text(node, what)  # raises: too deep to evaluate safely
    try:
        value = ast.literal_eval(node)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return _source_text(node, what)
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError, RecursionError):
        # Not JSON (a set, bytes, 1e999, an int past Python's digit limit): keep the
        # default as its source text.
        return _source_text(node, what)
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
    if isinstance(source, str):
        # Editors on Windows save UTF-8 with a byte-order mark; Python ignores it in a
        # file, so do we (the stored source has none).
        source = source.removeprefix(BOM)
    if not isinstance(source, str) or not source.strip():
        raise ValidationError(f"workflow {name!r}: source is empty")
    try:
        size = len(source.encode())
    except UnicodeEncodeError:
        raise ValidationError(
            f"workflow {name!r}: source is not valid Unicode (it has a lone "
            "surrogate such as \\udcff)"
        ) from None
    if size > MAX_SOURCE_BYTES:
        raise ValidationError(f"workflow {name!r}: source is larger than {MAX_SOURCE_BYTES} bytes")
    try:
        tree = ast.parse(source, filename=f"<workflow {name}>")
    except SyntaxError as exc:
        where = f" at line {exc.lineno}" if exc.lineno else ""
        raise ValidationError(f"workflow {name!r}: syntax error{where}: {exc.msg}") from None
    except (RecursionError, MemoryError):
        # CPython's parser gives up on expressions nested some hundreds deep.
        raise ValidationError(
            f"workflow {name!r}: source is nested too deeply to parse (an expression of "
            "hundreds of operators or brackets); split it into smaller expressions"
        ) from None
    except ValueError as exc:  # a NUL byte, on Pythons that do not call it a SyntaxError
        raise ValidationError(f"workflow {name!r}: {exc}") from None
    run = next(
        (
            n
            for n in tree.body
            if isinstance(n, ast.AsyncFunctionDef | ast.FunctionDef) and n.name == "run"
        ),
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
    where = f"workflow {name!r}: the default of parameter"
    for index, arg in enumerate(positional):
        has_default = index >= first_default
        default = (
            _literal(args.defaults[index - first_default], f"{where} {arg.arg!r}")
            if has_default
            else None
        )
        params.append(_param(name, arg, has_default, default, docs))
    for arg, kw_default in zip(args.kwonlyargs, args.kw_defaults, strict=True):
        has_default = kw_default is not None
        default = _literal(kw_default, f"{where} {arg.arg!r}") if kw_default is not None else None
        params.append(_param(name, arg, has_default, default, docs))
    return Workflow(name=name, source=source, description=description, parameters=tuple(params))


def _param(
    workflow: str, arg: ast.arg, has_default: bool, default: Any, docs: dict[str, str]
) -> Parameter:
    annotation = arg.annotation
    what = f"workflow {workflow!r}: the annotation of parameter {arg.arg!r}"
    return Parameter(
        name=arg.arg,
        type=_source_text(annotation, what) if annotation is not None else "Any",
        description=docs.get(arg.arg, ""),
        required=not has_default,
        default=default,
    )
