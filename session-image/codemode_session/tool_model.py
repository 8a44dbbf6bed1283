"""The tool YAML format as pydantic models, so each refusal names the field it is about.

Separate from `tools` because workers import that module and most never parse a
tool: pydantic is loaded on the first parse only. The validators reproduce the
format as it always was: scalars are accepted as text, `required` is truthiness,
an option or recipe given as null (or any empty value) has no settings, a
positional list may be empty or null.
"""

from __future__ import annotations

import datetime
import re
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, Field
from pydantic import ValidationError as PydanticError
from pydantic_core import PydanticCustomError

from codemode_session.errors import ValidationError

ARG_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")
ARG_NAME_RULE = "letters, digits, '_' and '-', starting with a letter or digit"
MAX_REPORTED = 5


def _invalid(message: str, **context: str) -> PydanticCustomError:
    # User text goes in through the context, so braces in it are not placeholders.
    return PydanticCustomError("invalid", message, context)


def _text(value: Any) -> str:
    """A scalar as text; a nested structure is refused (YAML aliases can make one huge)."""
    if value is None:
        return ""
    if isinstance(value, str | int | float | bool | datetime.date):
        return str(value)
    raise _invalid("must be text")


def _optional_text(value: Any) -> str | None:
    return None if value is None else _text(value)


def _mapping(what: str) -> Any:
    def check(value: Any) -> dict[Any, Any]:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise _invalid(f"'{what}' must be a mapping")
        return value

    return BeforeValidator(check)


def _settings(value: Any) -> Any:
    """An option's or recipe's settings: an empty value (`verbose:`) means none."""
    return value or {}


def _option_name(value: Any) -> str:
    if not isinstance(value, str) or not ARG_NAME_RE.match(value):
        raise _invalid(f"invalid option {{name}}: {ARG_NAME_RULE}", name=repr(value))
    return value


def _param_name(value: Any) -> str:
    if not isinstance(value, str) or not ARG_NAME_RE.match(value):
        raise _invalid(f"invalid parameter {{name}}: {ARG_NAME_RULE}", name=repr(value))
    return value


def _recipe_name(value: Any) -> str:
    if not isinstance(value, str) or not value.isidentifier():
        raise _invalid("invalid recipe {name}: must be a Python identifier", name=repr(value))
    return value


def _positional_name(value: Any) -> str:
    if not isinstance(value, str) or not ARG_NAME_RE.match(value):
        raise _invalid(f"invalid positional name {{name}}: {ARG_NAME_RULE}", name=repr(value))
    return value


def _positional(value: Any) -> Any:
    if not isinstance(value, dict) or "name" not in value:
        raise _invalid("every positional needs a 'name'")
    return value


def _positionals(value: Any) -> list[Any]:
    value = value or []
    if not isinstance(value, list):
        raise _invalid("'positional' must be a list")
    return value


def _params(value: Any) -> dict[Any, Any] | None:
    """A recipe's parameters by name: py-code-mode's mapping (`url: {}`, `n: {default: 3}`)
    or a list of names. None (no `params` key) means the recipe takes any argument."""
    if isinstance(value, list):
        return {_text(name): {} for name in value}
    if not isinstance(value, dict):
        return None  # lenient, as the format always was: no usable list, no declared params
    return {name: spec if isinstance(spec, dict) else {} for name, spec in value.items()}


def _tags(value: Any) -> tuple[str, ...]:
    """Search keywords: a list, or one comma-separated text."""
    if value is None:
        return ()
    items = value if isinstance(value, list) else str(value).split(",")
    return tuple(t for t in (_text(item).strip() for item in items) if t)


def _command(value: Any) -> str:
    if value is None:
        raise _invalid("field required ('command' must be a program name)")
    if not isinstance(value, str) or not value.strip():
        raise _invalid("'command' must be a program name")
    return value.strip()


def _timeout(value: Any) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not 0 < value < float("inf")
    ):
        raise _invalid("'timeout' must be a positive number of seconds")
    return float(value)


Text = Annotated[str, BeforeValidator(_text)]
OptionalText = Annotated[str | None, BeforeValidator(_optional_text)]
Truthy = Annotated[bool, BeforeValidator(bool)]


class OptionModel(BaseModel):
    type: Text = "string"
    short: OptionalText = None
    flag: OptionalText = None
    description: Text = ""
    required: Truthy = False


class PositionalModel(BaseModel):
    name: Annotated[str, BeforeValidator(_positional_name)]
    type: Text = "string"
    description: Text = ""
    required: Truthy = True


class SchemaModel(BaseModel):
    options: Annotated[
        dict[
            Annotated[str, BeforeValidator(_option_name)],
            Annotated[OptionModel, BeforeValidator(_settings)],
        ],
        _mapping("options"),
    ] = {}
    positional: Annotated[
        list[Annotated[PositionalModel, BeforeValidator(_positional)]],
        BeforeValidator(_positionals),
    ] = []


class ParamModel(BaseModel):
    """One recipe parameter: required unless it has a `default` or says `required: false`."""

    description: Text = ""
    default: Any = None
    required: Truthy | None = None


class RecipeModel(BaseModel):
    description: Text = ""
    preset: Annotated[dict[Any, Any], _mapping("preset")] = {}
    params: Annotated[
        dict[
            Annotated[str, BeforeValidator(_param_name)],
            Annotated[ParamModel, BeforeValidator(_settings)],
        ]
        | None,
        BeforeValidator(_params),
    ] = None


class ToolModel(BaseModel):
    """One tool file; `name` is checked by the caller (it may come from the file name)."""

    command: Annotated[str, BeforeValidator(_command)] = Field(default=None, validate_default=True)
    description: Text = ""
    tags: Annotated[tuple[str, ...], BeforeValidator(_tags)] = ()
    timeout: Annotated[float, BeforeValidator(_timeout)] = 60.0
    schema_: Annotated[SchemaModel, _mapping("schema")] = Field(
        default_factory=SchemaModel, alias="schema"
    )
    recipes: Annotated[
        dict[
            Annotated[str, BeforeValidator(_recipe_name)],
            Annotated[RecipeModel, BeforeValidator(_settings)],
        ],
        _mapping("recipes"),
    ] = {}


def _where(loc: tuple[int | str, ...]) -> str:
    """`schema.options.verbose.short`; for a bad key, the mapping it is in."""
    if "[key]" in loc:
        loc = loc[: loc.index("[key]") - 1]
    return ".".join(str(part) for part in loc)


def _problem(error: Any) -> str:
    if error["type"] in ("model_type", "dict_type"):
        return "must be a mapping"
    message: str = error["msg"]
    return message[:1].lower() + message[1:]


def parse(data: dict[Any, Any], tool: str) -> ToolModel:
    """`data` as a ToolModel; ValidationError names the `tool` and the fields at fault."""
    try:
        return ToolModel.model_validate(data)
    except PydanticError as exc:
        raise ValidationError(f"tool {tool!r}: {describe(exc)}") from None


def describe(exc: PydanticError) -> str:
    """`field.path: problem` for each error (the first few), e.g. `command: field required`."""
    errors = exc.errors(include_url=False, include_input=False)
    parts = [f"{_where(e['loc'])}: {_problem(e)}" for e in errors[:MAX_REPORTED]]
    if len(errors) > MAX_REPORTED:
        parts.append(f"and {len(errors) - MAX_REPORTED} more")
    return "; ".join(parts)
