"""CLI tools described in YAML, run without a shell.

A tool maps keyword arguments to argv: booleans become flags, strings
`--opt value`, lists repeat the option, positionals follow in schema order.
Recipes are named presets (`tools.curl.get(url=...)`).
"""

from __future__ import annotations

import datetime
import json
import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

import yaml

from codemode_session.errors import NotFoundError, ValidationError
from codemode_session.names import validate_tool_name
from codemode_session.tool_errors import ToolError

MAX_TOOL_OUTPUT = 4 * 1024 * 1024


@dataclass(frozen=True)
class OptionSpec:
    name: str
    type: str = "string"
    short: str | None = None
    flag: str | None = None
    description: str = ""
    required: bool = False

    def argv(self, value: Any) -> list[str]:
        flag = self.flag or (f"-{self.short}" if self.short else f"--{self.name.replace('_', '-')}")
        if self.type == "boolean":
            return [flag] if value else []
        if value is None:
            return []
        values = value if isinstance(value, list | tuple) else [value]
        out: list[str] = []
        for item in values:
            out += [flag, _scalar(item, self.name)]
        return out


@dataclass(frozen=True)
class PositionalSpec:
    name: str
    type: str = "string"
    description: str = ""
    required: bool = True


@dataclass(frozen=True)
class RecipeParam:
    """An argument a recipe exposes; required unless it has a default."""

    name: str
    description: str = ""
    required: bool = True
    default: Any = None


@dataclass(frozen=True)
class Recipe:
    name: str
    description: str = ""
    preset: dict[str, Any] = field(default_factory=dict)
    # None: the YAML declares no params, so any argument of the tool is accepted.
    params: tuple[RecipeParam, ...] | None = None

    def arguments(self, tool: str, kwargs: dict[str, Any]) -> dict[str, Any]:
        """The tool's arguments for a call of this recipe: its preset, its params'
        defaults, then the caller's; an undeclared or missing param is refused by name."""
        if self.params is None:
            return {**self.preset, **kwargs}
        declared = {p.name: p for p in self.params}
        unknown = sorted(set(kwargs) - set(declared))
        if unknown:
            raise ValidationError(
                f"recipe {tool}.{self.name} has no parameter {', '.join(map(repr, unknown))}; "
                f"parameters: {', '.join(declared) or '-'}"
            )
        args = dict(self.preset)
        for param in self.params:
            if param.name in kwargs:
                args[param.name] = kwargs[param.name]
            elif not param.required:
                if param.default is not None:
                    args[param.name] = param.default
            elif param.name not in self.preset:
                raise ValidationError(
                    f"recipe {tool}.{self.name}: parameter {param.name!r} is required"
                )
        return args


@dataclass(frozen=True)
class ToolSpec:
    name: str
    command: str
    description: str = ""
    timeout: float = 60.0
    options: tuple[OptionSpec, ...] = ()
    positional: tuple[PositionalSpec, ...] = ()
    recipes: tuple[Recipe, ...] = ()
    tags: tuple[str, ...] = ()
    kind: str = "cli"

    def _argument(self, name: str) -> OptionSpec | PositionalSpec | None:
        args: list[OptionSpec | PositionalSpec] = [*self.options, *self.positional]
        return next((a for a in args if a.name == name), None)

    def recipe_summary(self, recipe: Recipe) -> dict[str, Any]:
        """A recipe as list and search show it; `params` is null when it takes any argument."""
        params = (
            None
            if recipe.params is None
            else [
                {
                    "name": p.name,
                    "type": arg.type if arg else "string",
                    "description": p.description or (arg.description if arg else ""),
                    "required": p.required,
                    "default": p.default,
                }
                for p in recipe.params
                for arg in [self._argument(p.name)]
            ]
        )
        return {"name": recipe.name, "description": recipe.description, "params": params}

    def search_text(self) -> str:
        """What search matches and embeds: description, tags and recipes."""
        recipes = "; ".join(f"{r.name}: {r.description}" for r in self.recipes)
        return f"{self.description}. tags: {', '.join(self.tags)}. recipes: {recipes}"

    def summary(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "tags": list(self.tags),
            "command": self.command,
            "options": [
                {
                    "name": o.name,
                    "type": o.type,
                    "description": o.description,
                    "required": o.required,
                }
                for o in self.options
            ],
            "positional": [
                {
                    "name": p.name,
                    "type": p.type,
                    "description": p.description,
                    "required": p.required,
                }
                for p in self.positional
            ],
            "recipes": [self.recipe_summary(r) for r in self.recipes],
        }

    def build_argv(self, kwargs: dict[str, Any]) -> list[str]:
        options = {o.name: o for o in self.options}
        positional = {p.name: p for p in self.positional}
        unknown = sorted(set(kwargs) - set(options) - set(positional))
        if unknown:
            raise ValidationError(
                f"tool {self.name!r} has no argument {', '.join(unknown)}; "
                f"options: {', '.join(sorted(options)) or '-'}; "
                f"positional: {', '.join(positional) or '-'}"
            )
        argv = [self.command]
        for name, spec in options.items():
            if spec.required and kwargs.get(name) is None:
                raise ValidationError(f"tool {self.name!r}: option {name!r} is required")
            if name in kwargs:
                argv += spec.argv(kwargs[name])
        for pos in self.positional:
            value = kwargs.get(pos.name)
            if value is None:
                if pos.required:
                    raise ValidationError(f"tool {self.name!r}: argument {pos.name!r} is required")
                continue
            values = value if isinstance(value, list | tuple) else [value]
            argv += [_scalar(v, pos.name) for v in values]
        return argv


if TYPE_CHECKING:
    from codemode_session.tools_http import HttpToolSpec
    from codemode_session.tools_mcp import McpToolSpec

# A tool of any kind: a command (ToolSpec), an MCP server's tools, an HTTP API's endpoints.
AnyToolSpec = Union[ToolSpec, "McpToolSpec", "HttpToolSpec"]


def _scalar(value: Any, name: str) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return str(value)
    kind = type(value).__name__
    raise ValidationError(f"argument {name!r}: expected a string or number, got {kind}")


def _remote_tool(data: dict[Any, Any], name: str) -> AnyToolSpec:
    """A `type: mcp` or `type: http` tool (tools_mcp, tools_http)."""
    from pydantic import ValidationError as PydanticError

    from codemode_session import tool_model, tool_model_remote
    from codemode_session.tools_http import http_spec
    from codemode_session.tools_mcp import mcp_spec

    body = {k: v for k, v in data.items() if k != "name"}
    try:
        if data.get("type") == "mcp":
            return mcp_spec(name, tool_model_remote.McpToolModel.model_validate(body))
        return http_spec(name, tool_model_remote.HttpToolModel.model_validate(body))
    except PydanticError as exc:
        raise ValidationError(f"tool {name!r}: {tool_model.describe(exc)}") from None


def parse_tool_yaml(text: str, default_name: str | None = None) -> AnyToolSpec:
    """Parse one tool definition; a ValidationError names the tool and the field at fault
    (`tool 'curl': schema.options.header.short: must be text`)."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ValidationError(f"tool {default_name or '?'}: invalid YAML: {exc}") from None
    except (ValueError, RecursionError) as exc:  # e.g. an int of too many digits
        raise ValidationError(f"tool {default_name or '?'}: invalid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ValidationError(f"tool {default_name or '?'}: YAML must be a mapping")
    name = validate_tool_name(_name_text(data.get("name") or default_name or ""))
    kind = data.get("type") or "cli"
    if kind in ("mcp", "http"):
        return _remote_tool(data, name)
    if kind != "cli":
        raise ValidationError(f"tool {name!r}: type: {kind!r} is not cli, mcp or http")
    from codemode_session import tool_model  # pydantic, loaded only when a tool is parsed

    model = tool_model.parse({k: v for k, v in data.items() if k != "type"}, name)
    return ToolSpec(
        name=name,
        command=model.command,
        description=model.description,
        timeout=model.timeout,
        tags=model.tags,
        options=tuple(
            OptionSpec(
                name=key.replace("-", "_"),
                type=o.type,
                short=o.short,
                flag=o.flag,
                description=o.description,
                required=o.required,
            )
            for key, o in model.schema_.options.items()
        ),
        positional=tuple(
            PositionalSpec(
                name=p.name.replace("-", "_"),
                type=p.type,
                description=p.description,
                required=p.required,
            )
            for p in model.schema_.positional
        ),
        recipes=tuple(
            Recipe(
                name=key,
                description=r.description,
                preset={
                    k.replace("-", "_") if isinstance(k, str) else k: v for k, v in r.preset.items()
                },
                params=_recipe_params(r.params),
            )
            for key, r in model.recipes.items()
        ),
    )


def _recipe_params(params: dict[str, Any] | None) -> tuple[RecipeParam, ...] | None:
    if params is None:
        return None
    out = []
    for key, p in params.items():
        has_default = "default" in p.model_fields_set
        required = p.required if p.required is not None else not has_default
        out.append(
            RecipeParam(
                name=key.replace("-", "_"),
                description=p.description,
                required=required,
                default=p.default,
            )
        )
    return tuple(out)


def _name_text(value: Any) -> str:
    """The tool's name as text; a nested structure is refused."""
    if isinstance(value, str | int | float | bool | datetime.date):
        return str(value)
    raise ValidationError("tool name must be text")


def stored_tool_value(text: str) -> str:
    """A tool's YAML as the Redis tools hash holds it: the JSON of its mapping, as
    py-code-mode stores (and requires) it. Older codemode values are the YAML itself;
    readers take both (JSON is YAML), and the next bootstrap rewrites them as JSON."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    if not isinstance(data, dict):
        return text
    return json.dumps(data, default=str)


def tool_yaml(value: str) -> str:
    """A stored tool value (JSON, or an older YAML one) as YAML, for files."""
    try:
        data = json.loads(value)
    except ValueError:
        return value
    if not isinstance(data, dict):
        return value
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)


def load_tools_dir(path: str | os.PathLike[str] | None) -> dict[str, str]:
    """Tool YAML texts from a directory (TOOLS_PATH), by tool name."""
    if not path:
        return {}
    directory = Path(path)
    if not directory.is_dir():
        return {}
    texts: dict[str, str] = {}
    for file in sorted([*directory.glob("*.yaml"), *directory.glob("*.yml")]):
        try:
            texts[file.stem] = file.read_text(errors="replace")
        except OSError:
            continue  # a folder or an unreadable file: not a tool
    return texts


def run_tool(spec: ToolSpec, kwargs: dict[str, Any], timeout: float | None = None) -> str:
    """Run the tool's command (never through a shell) and return its stdout."""
    argv = spec.build_argv(kwargs)
    if shutil.which(argv[0]) is None:
        raise ToolError(f"tool {spec.name!r}: command {argv[0]!r} is not installed")
    try:
        proc = subprocess.run(
            argv,
            capture_output=True,
            timeout=timeout or spec.timeout,
            stdin=subprocess.DEVNULL,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise ToolError(f"tool {spec.name!r} timed out after {timeout or spec.timeout}s") from None
    except OSError as exc:
        raise ToolError(f"tool {spec.name!r} could not start: {exc.strerror}") from None
    stdout = proc.stdout[:MAX_TOOL_OUTPUT].decode(errors="replace")
    if proc.returncode != 0:
        stderr = proc.stderr[-2000:].decode(errors="replace").strip()
        raise ToolError(f"tool {spec.name!r} exited with {proc.returncode}: {stderr}")
    return stdout


def search_score(query: str, *texts: str) -> float:
    """Lexical relevance: share of query words found in the texts, name hits first."""
    words = [w for w in re.split(r"\W+", query.lower()) if w]
    if not words:
        return 0.0
    name, *rest = [t.lower() for t in texts] or [""]
    body = " ".join(rest)
    score = 0.0
    for word in words:
        if word in name:
            score += 2.0
        if word in body:
            score += 1.0
    return score / (3.0 * len(words))


def tool_specs(texts: dict[str, str]) -> dict[str, AnyToolSpec]:
    """Parse every tool; one broken YAML does not hide the others."""
    specs: dict[str, AnyToolSpec] = {}
    for name, text in texts.items():
        try:
            spec = parse_tool_yaml(text, default_name=name)
        except (ValidationError, TypeError, ValueError, AttributeError, RecursionError):
            continue
        specs[spec.name] = spec
    return specs


def get_spec(specs: dict[str, AnyToolSpec], name: str) -> AnyToolSpec:
    try:
        return specs[name]
    except KeyError:
        raise NotFoundError(f"no tool named {name!r}") from None
