"""The YAML of tools that are not commands: `type: mcp` (an MCP server's tools) and
`type: http` (endpoints of an HTTP API), as pydantic models naming the field at fault.

The MCP form is py-code-mode's (`transport: stdio` with `command`, `args`, `env`; a
URL for a remote server), with `streamable-http` beside its `sse`. Values may name
environment variables (`${API_KEY}`); `secret_headers` maps a header to a file, such as
a key of a Secret mounted in the session pod, read when the tool is first used.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, Field, model_validator

from codemode_session.tool_model import (
    ARG_NAME_RE,
    ARG_NAME_RULE,
    OptionalText,
    Text,
    _invalid,
    _mapping,
    _settings,
    _tags,
    _timeout,
)

HEADER_RE = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$")
PLACEHOLDER_RE = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
DEFAULT_MAX_RESPONSE = 1024 * 1024


def _identifier(what: str) -> Any:
    def check(value: Any) -> str:
        if not isinstance(value, str) or not value.isidentifier():
            raise _invalid(
                f"invalid {what} {{name}}: must be a Python identifier", name=repr(value)
            )
        return value

    return BeforeValidator(check)


def _header_name(value: Any) -> str:
    if not isinstance(value, str) or not HEADER_RE.match(value):
        raise _invalid("invalid header name {name}", name=repr(value))
    return value


def _param_name(value: Any) -> str:
    if not isinstance(value, str) or not ARG_NAME_RE.match(value):
        raise _invalid(f"invalid parameter {{name}}: {ARG_NAME_RULE}", name=repr(value))
    return value


def _text_list(value: Any) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise _invalid("'args' must be a list")
    return value


def _positive_int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise _invalid("must be a positive whole number of bytes")
    return value


def _url(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not re.match(r"^https?://[^\s/]+", value):
        raise _invalid("must be an http:// or https:// URL")
    return value


Headers = Annotated[dict[Annotated[str, BeforeValidator(_header_name)], Text], _mapping("headers")]
Url = Annotated[str | None, BeforeValidator(_url)]
Tags = Annotated[tuple[str, ...], BeforeValidator(_tags)]


class McpToolModel(BaseModel):
    type: Literal["mcp"]
    description: Text = ""
    tags: Tags = ()
    timeout: Annotated[float, BeforeValidator(_timeout)] = 60.0
    transport: Literal["stdio", "streamable-http", "sse"] = "stdio"
    command: OptionalText = None
    args: Annotated[list[Text], BeforeValidator(_text_list)] = []
    env: Annotated[dict[Text, Text], _mapping("env")] = {}
    url: Url = None
    headers: Headers = {}
    secret_headers: Headers = {}

    @model_validator(mode="after")
    def _where_it_runs(self) -> McpToolModel:
        if self.transport == "stdio" and not (self.command or "").strip():
            raise _invalid("a stdio MCP server needs 'command'")
        if self.transport != "stdio" and self.url is None:
            raise _invalid(f"a {self.transport} MCP server needs 'url'")
        return self


class HttpParamModel(BaseModel):
    """Where an endpoint's parameter goes; required unless it has a default."""

    in_: Literal["path", "query", "body", "header"] = Field(default="query", alias="in")
    description: Text = ""
    default: Any = None
    required: bool | None = None


class HttpEndpointModel(BaseModel):
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE"] = "GET"
    path: Text = ""
    description: Text = ""
    params: Annotated[
        dict[
            Annotated[str, BeforeValidator(_param_name)],
            Annotated[HttpParamModel, BeforeValidator(_settings)],
        ],
        _mapping("params"),
    ] = {}

    @model_validator(mode="before")
    @classmethod
    def _upper_method(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("method"), str):
            data = {**data, "method": data["method"].upper()}
        return data

    @model_validator(mode="after")
    def _path_params_declared(self) -> HttpEndpointModel:
        placeholders = set(PLACEHOLDER_RE.findall(self.path))
        declared = {n for n, p in self.params.items() if p.in_ == "path"}
        if placeholders - declared:
            missing = ", ".join(sorted(placeholders - declared))
            raise _invalid("path placeholders {names} are not params with in: path", names=missing)
        if declared - placeholders:
            extra = ", ".join(sorted(declared - placeholders))
            raise _invalid("params {names} are in: path but not in 'path'", names=extra)
        return self


class HttpToolModel(BaseModel):
    type: Literal["http"]
    description: Text = ""
    tags: Tags = ()
    timeout: Annotated[float, BeforeValidator(_timeout)] = 30.0
    base_url: Annotated[str, BeforeValidator(_url)]
    headers: Headers = {}
    secret_headers: Headers = {}
    max_response_bytes: Annotated[int, BeforeValidator(_positive_int)] = DEFAULT_MAX_RESPONSE
    endpoints: Annotated[
        dict[
            Annotated[str, _identifier("endpoint")],
            Annotated[HttpEndpointModel, BeforeValidator(_settings)],
        ],
        _mapping("endpoints"),
    ]

    @model_validator(mode="after")
    def _some_endpoint(self) -> HttpToolModel:
        if not self.endpoints:
            raise _invalid("an http tool needs at least one entry in 'endpoints'")
        return self
