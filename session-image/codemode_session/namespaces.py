"""The four names ready inside executed code: tools, workflows, artifacts, deps.

They are synchronous facades over the server's storage (storage/brokered.py), so
agent code stays simple: `artifacts.save("x", data)`, `workflows.summarize(text=t)`.
"""

from __future__ import annotations

import builtins
import json
import time
from collections.abc import Callable
from typing import Any

from codemode_session.bridge import run_coroutine_sync
from codemode_session.errors import ForbiddenError, NotFoundError, ValidationError
from codemode_session.names import (
    RESERVED_WORKFLOW_NAMES,
    validate_artifact_name,
    validate_package_spec,
)
from codemode_session.storage.base import ArtifactInfo
from codemode_session.storage.brokered import BrokeredStorage as AgentStorage
from codemode_session.tool_errors import ToolError
from codemode_session.tools import (
    AnyToolSpec,
    ToolSpec,
    get_spec,
    load_tools_dir,
    run_tool,
    search_score,
    tool_specs,
)
from codemode_session.tools_http import HttpToolSpec
from codemode_session.tools_mcp import McpToolSpec, server_for
from codemode_session.workflow_model import Workflow, parse_workflow


def encode_artifact(data: Any) -> tuple[bytes, str]:
    """Bytes stay bytes, str is text, anything else must be JSON (finite numbers only:
    NaN and Infinity are not JSON, and no other client could read them back)."""
    if isinstance(data, bytes | bytearray | memoryview):
        return bytes(data), "bytes"
    if isinstance(data, str):
        return data.encode(), "text"
    try:
        return json.dumps(data, allow_nan=False).encode(), "json"
    except (TypeError, ValueError, RecursionError) as exc:
        raise ValidationError(
            f"artifact data must be bytes, str or JSON-serializable: {exc}"
        ) from None


def artifact_metadata(metadata: Any, data_type: str) -> dict[str, Any]:
    """The metadata to store: a JSON object (finite numbers only), plus `_data_type`."""
    if metadata is None:
        metadata = {}
    if not isinstance(metadata, dict):
        raise ValidationError(f"artifact metadata must be a dict, got {type(metadata).__name__}")
    meta = dict(metadata)
    try:
        json.dumps(meta, allow_nan=False)
    except (TypeError, ValueError, RecursionError) as exc:
        raise ValidationError(f"artifact metadata must be JSON-serializable: {exc}") from None
    meta["_data_type"] = data_type
    return meta


def decode_artifact(info: ArtifactInfo, data: bytes) -> Any:
    """The stored value; data that does not match its recorded type (written by another
    client) comes back as bytes rather than failing."""
    try:
        if info.data_type == "text":
            return data.decode()
        if info.data_type == "json":
            return json.loads(data)
    except (ValueError, RecursionError):
        return data
    return data


class ArtifactsNamespace:
    """Persistent data shared by every session of the workspace."""

    def __init__(self, storage: AgentStorage) -> None:
        self._storage = storage

    def save(
        self,
        name: str,
        data: Any,
        description: str = "",
        metadata: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        validate_artifact_name(name)
        if not isinstance(description, str):
            raise ValidationError(
                f"artifact description must be a str, got {type(description).__name__}"
            )
        payload, data_type = encode_artifact(data)
        info = ArtifactInfo(
            name=name,
            description=description,
            created_at=time.time(),
            metadata=artifact_metadata(metadata, data_type),
        )
        self._storage.save_artifact(info, payload)
        return info.to_dict()

    def load(self, name: str) -> Any:
        found = self._storage.load_artifact(name)
        if found is None:
            raise NotFoundError(f"no artifact named {name!r}")
        return decode_artifact(*found)

    def get(self, name: str) -> dict[str, Any] | None:
        info = self._storage.get_artifact(name)
        return info.to_dict() if info else None

    def exists(self, name: str) -> bool:
        return self.get(name) is not None

    def list(self) -> list[dict[str, Any]]:
        return [i.to_dict() for i in self._storage.list_artifacts()]

    def delete(self, name: str) -> bool:
        return self._storage.delete_artifact(name)

    def __repr__(self) -> str:
        return "<artifacts: save, load, list, exists, get, delete>"


class _Tool:
    """`tools.curl(...)` runs the tool; `tools.curl.get(...)` runs a recipe."""

    def __init__(self, spec: ToolSpec) -> None:
        self._spec = spec

    def __call__(self, **kwargs: Any) -> str:
        return run_tool(self._spec, kwargs)

    def __getattr__(self, name: str) -> Callable[..., str]:
        recipe = next((r for r in self._spec.recipes if r.name == name), None)
        if recipe is None:
            raise AttributeError(f"tool {self._spec.name!r} has no recipe {name!r}")

        def run_recipe(**kwargs: Any) -> str:
            return run_tool(self._spec, recipe.arguments(self._spec.name, kwargs))

        run_recipe.__doc__ = recipe.description
        return run_recipe

    def __repr__(self) -> str:
        recipes = ", ".join(r.name for r in self._spec.recipes)
        return f"<tool {self._spec.name}: {self._spec.description} (recipes: {recipes or '-'})>"


class _HttpTool:
    """`tools.weather.current(city=...)`: an endpoint of an HTTP tool."""

    def __init__(self, spec: HttpToolSpec) -> None:
        self._spec = spec

    def __getattr__(self, name: str) -> Callable[..., Any]:
        endpoint = self._spec.endpoint(name)
        if endpoint is None:
            names = ", ".join(e.name for e in self._spec.endpoints)
            raise AttributeError(
                f"tool {self._spec.name!r} has no endpoint {name!r}; endpoints: {names}"
            )

        def call(**kwargs: Any) -> Any:
            return self._spec.call(endpoint, kwargs)

        call.__doc__ = endpoint.description
        return call

    def __dir__(self) -> builtins.list[str]:
        return [e.name for e in self._spec.endpoints]

    def __repr__(self) -> str:
        names = ", ".join(e.name for e in self._spec.endpoints)
        return f"<http tool {self._spec.name}: {self._spec.description} (endpoints: {names})>"


class _McpTool:
    """`tools.time.get_current_time(timezone=...)`: a tool of an MCP server, which starts
    on the first use in this worker."""

    def __init__(self, spec: McpToolSpec) -> None:
        self._spec = spec

    def __getattr__(self, name: str) -> Callable[..., Any]:
        if name.startswith("_"):
            raise AttributeError(name)
        server = server_for(self._spec)
        if name not in {t["name"] for t in server.tools}:
            names = ", ".join(t["name"] for t in server.tools) or "-"
            raise AttributeError(
                f"MCP server {self._spec.name!r} has no tool {name!r}; tools: {names}"
            )

        def call(**kwargs: Any) -> Any:
            return server.call(name, kwargs)

        call.__doc__ = next(t["description"] for t in server.tools if t["name"] == name)
        return call

    def __dir__(self) -> builtins.list[str]:
        return [t["name"] for t in server_for(self._spec).tools]

    def __repr__(self) -> str:
        return f"<MCP server {self._spec.name}: {self._spec.description}>"


def _mcp_summary(spec: McpToolSpec) -> dict[str, Any]:
    """The server's summary with its tools (starting it); a server that does not start
    is listed with the reason instead of failing the whole list."""
    try:
        return spec.summary(server_for(spec).tools)
    except ToolError as exc:
        return {**spec.summary([]), "error": str(exc)}


class ToolsNamespace:
    """Tools from TOOLS_PATH and the prefix's Redis tool hash: commands, MCP servers'
    tools and HTTP APIs' endpoints."""

    def __init__(self, storage: AgentStorage, tools_path: str | None) -> None:
        self._storage = storage
        self._tools_path = tools_path
        self._cache: tuple[float, dict[str, AnyToolSpec]] | None = None

    def _specs(self) -> dict[str, AnyToolSpec]:
        now = time.monotonic()
        if self._cache is None or now - self._cache[0] > 5.0:
            texts = load_tools_dir(self._tools_path)
            texts.update(self._storage.list_tools())
            self._cache = (now, tool_specs(texts))
        return self._cache[1]

    def list(self) -> list[dict[str, Any]]:
        """Every tool; an MCP server's entry lists its tools and their input schemas
        (the server starts to say what they are)."""
        return [
            _mcp_summary(s) if isinstance(s, McpToolSpec) else s.summary()
            for s in self._specs().values()
        ]

    def search(self, query: str, limit: int = 10) -> builtins.list[dict[str, Any]]:
        """Best first, by name, description, tags and recipes (and meaning, with the model).
        Tools of MCP servers match by their names and descriptions too (`server.tool`
        entries): strong matches ahead of the rest."""
        query, limit = _text("query", query), _count("limit", limit)
        found = self._storage.search_tools(query, limit)
        strong, weak = [], []
        for spec in self._specs().values():
            if not isinstance(spec, McpToolSpec):
                continue
            for tool in _mcp_summary(spec).get("tools", []):
                score = search_score(query, f"{spec.name}.{tool['name']}", tool["description"])
                entry = {**tool, "name": f"{spec.name}.{tool['name']}", "type": "mcp"}
                if score >= 0.5:
                    strong.append((score, entry))
                elif score > 0:
                    weak.append((score, entry))
        ranked = [e for _, e in sorted(strong, key=lambda x: -x[0])]
        ranked += found + [e for _, e in sorted(weak, key=lambda x: -x[0])]
        return ranked[:limit]

    def __getattr__(self, name: str) -> _Tool | _McpTool | _HttpTool:
        if name.startswith("_"):
            raise AttributeError(name)
        try:
            spec = get_spec(self._specs(), name)
        except NotFoundError:
            raise AttributeError(f"no tool named {name!r}") from None
        if isinstance(spec, McpToolSpec):
            return _McpTool(spec)
        if isinstance(spec, HttpToolSpec):
            return _HttpTool(spec)
        return _Tool(spec)

    def __repr__(self) -> str:
        return f"<tools: {', '.join(self._specs()) or 'none'}>"


class WorkflowsNamespace:
    """Reusable async recipes shared by every agent of the workspace."""

    def __init__(
        self, storage: AgentStorage, globals_factory: Callable[[], dict[str, Any]]
    ) -> None:
        self._storage = storage
        self._globals_factory = globals_factory
        self._compiled: dict[str, tuple[str, Callable[..., Any]]] = {}

    def list(self) -> list[dict[str, Any]]:
        return [w.summary() for w in self._storage.list_workflows()]

    def search(self, query: str, limit: int = 10) -> builtins.list[dict[str, Any]]:
        """Best first: hybrid of word matches and meaning when the search model is installed."""
        found = self._storage.search_workflows(_text("query", query), _count("limit", limit))
        return [w.summary() for w in found]

    def get(self, name: str) -> dict[str, Any] | None:
        workflow = self._storage.get_workflow(name)
        return workflow.to_dict() if workflow else None

    def create(self, name: str, source: str, description: str = "") -> dict[str, Any]:
        workflow = parse_workflow(name, source, description or None)
        self._storage.save_workflow(workflow)
        return workflow.summary()

    def delete(self, name: str) -> bool:
        return self._storage.delete_workflow(name)

    def _function(self, workflow: Workflow) -> Callable[..., Any]:
        cached = self._compiled.get(workflow.name)
        if cached and cached[0] == workflow.digest:
            return cached[1]
        module_globals = self._globals_factory()
        module_globals["__name__"] = f"workflow_{workflow.name}"
        code = compile(workflow.source, f"<workflow {workflow.name}>", "exec")
        exec(code, module_globals)
        run: Callable[..., Any] | None = module_globals.get("run")
        if run is None or not callable(run):
            raise ValidationError(f"workflow {workflow.name!r} does not define run()")
        self._compiled[workflow.name] = (workflow.digest, run)
        return run

    def invoke(self, name: str, /, **kwargs: Any) -> Any:
        workflow = self._storage.get_workflow(name)
        if workflow is None:
            raise NotFoundError(f"no workflow named {name!r}")
        result = self._function(workflow)(**kwargs)
        if hasattr(result, "__await__"):
            return run_coroutine_sync(_awaited(result))
        return result

    def __getattr__(self, name: str) -> Callable[..., Any]:
        if name.startswith("_") or name in RESERVED_WORKFLOW_NAMES:
            raise AttributeError(name)

        def call(**kwargs: Any) -> Any:
            return self.invoke(name, **kwargs)

        call.__name__ = name
        return call

    def __repr__(self) -> str:
        return "<workflows: list, search, get, create, delete, invoke, or workflows.NAME(...)>"


def _text(what: str, value: Any) -> str:
    if not isinstance(value, str):
        raise ValidationError(f"{what} must be a str, got {type(value).__name__}")
    return value


def _count(what: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValidationError(f"{what} must be an int, got {type(value).__name__}")
    return value


async def _awaited(awaitable: Any) -> Any:
    return await awaitable


class DepsNamespace:
    """Python packages of the prefix; installing them needs ALLOW_RUNTIME_DEPS."""

    def __init__(
        self,
        storage: AgentStorage,
        allow_runtime: bool,
        install: Callable[[list[str]], None],
    ) -> None:
        self._storage = storage
        self._allow = allow_runtime
        self._install = install

    def _require_allowed(self, verb: str) -> None:
        if not self._allow:
            raise ForbiddenError(
                f"deps.{verb}() is disabled: runtime dependencies are off for this session "
                "(ALLOW_RUNTIME_DEPS=false); ask an operator to add the package to the image "
                "or the workspace"
            )

    def list(self) -> list[str]:
        return self._storage.list_deps()

    def add(self, spec: str) -> dict[str, Any]:
        self._require_allowed("add")
        spec = validate_package_spec(spec)
        self._install([spec])
        self._storage.add_dep(spec)
        return {"installed": [spec]}

    def remove(self, spec: str) -> bool:
        self._require_allowed("remove")
        spec = validate_package_spec(spec)
        return self._storage.remove_dep(spec)

    def sync(self) -> dict[str, Any]:
        self._require_allowed("sync")
        specs = self.list()
        self._install(specs)
        return {"installed": specs}

    def __repr__(self) -> str:
        return "<deps: list, add, remove, sync>"
