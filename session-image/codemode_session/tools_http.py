"""HTTP tools: the endpoints of an HTTP API, described in YAML, called from agent code as
`tools.<name>.<endpoint>(...)`.

Each call is checked against the endpoint's declared parameters (unknown or missing ones
are refused by name), sent without the environment's proxies or redirects, bounded by
the tool's timeout and `max_response_bytes`, and answers the parsed JSON (or the text).
Where the session may connect is the Workspace's egress policy, not this module's.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from codemode_session.errors import ValidationError
from codemode_session.tool_errors import ToolError

ENV_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def expand_env(text: str, tool: str) -> str:
    """`${NAME}` replaced by the environment's value; a missing one is a clear error."""

    def value(match: re.Match[str]) -> str:
        found = os.environ.get(match.group(1))
        if found is None:
            raise ToolError(f"tool {tool!r}: environment variable {match.group(1)} is not set")
        return found

    return ENV_RE.sub(value, text)


def secret_header_values(tool: str, files: tuple[tuple[str, str], ...]) -> dict[str, str]:
    """Header values read from files (a Secret mounted in the session pod)."""
    headers: dict[str, str] = {}
    for header, path in files:
        try:
            with open(path, encoding="utf-8") as f:
                headers[header] = f.read().strip()
        except OSError as exc:
            raise ToolError(
                f"tool {tool!r}: header {header} cannot be read from {path}: {exc.strerror}"
            ) from None
    return headers


@dataclass(frozen=True)
class HttpParam:
    name: str
    location: str  # path, query, body or header
    description: str = ""
    required: bool = True
    default: Any = None


@dataclass(frozen=True)
class HttpEndpoint:
    name: str
    method: str
    path: str
    description: str = ""
    params: tuple[HttpParam, ...] = ()

    def summary(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "method": self.method,
            "path": self.path,
            "description": self.description,
            "params": [
                {
                    "name": p.name,
                    "in": p.location,
                    "description": p.description,
                    "required": p.required,
                    "default": p.default,
                }
                for p in self.params
            ],
        }

    def arguments(self, tool: str, kwargs: dict[str, Any]) -> dict[str, dict[str, Any]]:
        """The call's values by where they go; unknown and missing ones refused by name."""
        declared = {p.name: p for p in self.params}
        unknown = sorted(set(kwargs) - set(declared))
        if unknown:
            raise ValidationError(
                f"endpoint {tool}.{self.name} has no parameter {', '.join(map(repr, unknown))}; "
                f"parameters: {', '.join(declared) or '-'}"
            )
        out: dict[str, dict[str, Any]] = {"path": {}, "query": {}, "body": {}, "header": {}}
        for param in self.params:
            if param.name in kwargs:
                value = kwargs[param.name]
            elif param.required:
                raise ValidationError(
                    f"endpoint {tool}.{self.name}: parameter {param.name!r} is required"
                )
            elif param.default is None:
                continue
            else:
                value = param.default
            out[param.location][param.name] = value
        return out


@dataclass(frozen=True)
class HttpToolSpec:
    name: str
    base_url: str
    endpoints: tuple[HttpEndpoint, ...]
    description: str = ""
    tags: tuple[str, ...] = ()
    timeout: float = 30.0
    headers: tuple[tuple[str, str], ...] = ()
    secret_headers: tuple[tuple[str, str], ...] = ()  # header, file
    max_response_bytes: int = 1024 * 1024
    kind: str = "http"

    def summary(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "type": self.kind,
            "description": self.description,
            "tags": list(self.tags),
            "base_url": self.base_url,
            "endpoints": [e.summary() for e in self.endpoints],
        }

    def search_text(self) -> str:
        endpoints = "; ".join(f"{e.name}: {e.description}" for e in self.endpoints)
        return f"{self.description}. tags: {', '.join(self.tags)}. endpoints: {endpoints}"

    def endpoint(self, name: str) -> HttpEndpoint | None:
        return next((e for e in self.endpoints if e.name == name), None)

    def call(self, endpoint: HttpEndpoint, kwargs: dict[str, Any]) -> Any:
        """Send the request; the answer's JSON (or text), or ToolError saying what failed."""
        import httpx  # only workers that call an HTTP tool pay for the import

        args = endpoint.arguments(self.name, kwargs)
        path = endpoint.path
        for key, value in args["path"].items():
            path = path.replace("{" + key + "}", quote(str(value), safe=""))
        url = self.base_url.rstrip("/") + ("/" + path.lstrip("/") if path else "")
        headers = {k: expand_env(v, self.name) for k, v in self.headers}
        headers.update(secret_header_values(self.name, self.secret_headers))
        headers.update({k: str(v) for k, v in args["header"].items()})
        what = f"tool {self.name!r}: {endpoint.method} {url}"
        body = args["body"] or None
        try:
            with (
                httpx.Client(timeout=self.timeout, trust_env=False) as client,
                client.stream(
                    endpoint.method,
                    url,
                    params={k: _query_value(v) for k, v in args["query"].items()},
                    json=body,
                    headers=headers,
                ) as response,
            ):
                data = bytearray()
                for chunk in response.iter_bytes():
                    data += chunk
                    if len(data) > self.max_response_bytes:
                        raise ToolError(
                            f"{what}: the answer is larger than max_response_bytes "
                            f"({self.max_response_bytes})"
                        )
        except httpx.TimeoutException:
            raise ToolError(f"{what}: no answer within {self.timeout:g}s") from None
        except httpx.HTTPError as exc:
            raise ToolError(f"{what}: {type(exc).__name__}: {exc}") from None
        text = bytes(data).decode(response.encoding or "utf-8", errors="replace")
        if response.status_code >= 400:
            raise ToolError(f"{what} answered {response.status_code}: {text[:500]}")
        if "json" in response.headers.get("content-type", ""):
            try:
                return json.loads(text)
            except ValueError:
                return text
        return text


def _query_value(value: Any) -> Any:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        return [_query_value(v) for v in value]
    return value


def http_spec(name: str, model: Any) -> HttpToolSpec:
    """The spec of a validated `tool_model_remote.HttpToolModel`."""
    return HttpToolSpec(
        name=name,
        base_url=model.base_url,
        description=model.description,
        tags=model.tags,
        timeout=model.timeout,
        headers=tuple(model.headers.items()),
        secret_headers=tuple(model.secret_headers.items()),
        max_response_bytes=model.max_response_bytes,
        endpoints=tuple(
            HttpEndpoint(
                name=key,
                method=e.method,
                path=e.path,
                description=e.description,
                params=tuple(
                    HttpParam(
                        name=pname,
                        location=p.in_,
                        description=p.description,
                        required=p.required
                        if p.required is not None
                        else "default" not in p.model_fields_set,
                        default=p.default,
                    )
                    for pname, p in e.params.items()
                ),
            )
            for key, e in model.endpoints.items()
        ),
    )
