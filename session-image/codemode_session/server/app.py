"""The session server's HTTP API.

Endpoints and fields follow py-code-mode's SessionServer so its remote client
can drive our pods; `/ready`, `/metrics` and `/sessions` are ours. Every error
a caller can cause is a 4xx with a `detail` that says what to change.
"""

from __future__ import annotations

import asyncio
import base64
import json
import math
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Header, HTTPException, Path, Request, Response
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from codemode_session import __version__
from codemode_session.deps_install import pip_install
from codemode_session.errors import (
    CodemodeError,
    ConflictError,
    ForbiddenError,
    NotFoundError,
    QuotaExceededError,
    StorageUnavailableError,
    ValidationError,
)
from codemode_session.names import (
    validate_package_spec,
    validate_workflow_name,
    validate_workspace_id,
)
from codemode_session.namespaces import artifact_metadata, decode_artifact, encode_artifact
from codemode_session.server import openapi
from codemode_session.server.auth import check_bearer
from codemode_session.server.body_limit import BodySizeLimit
from codemode_session.server.config import ServerConfig
from codemode_session.server.models import (
    ARTIFACT_NAME,
    ARTIFACT_NAME_HELP,
    WORKFLOW_NAME,
    WORKFLOW_NAME_HELP,
    ArtifactCreate,
    CreateSessionRequest,
    CreateSessionResponse,
    ExecuteRequest,
    ExecuteResponse,
    PackageRequest,
    ReadyResponse,
    WorkflowCreate,
)
from codemode_session.server.openapi import errors
from codemode_session.server.sessions import (
    CLIENT_ID_RE,
    Session,
    SessionManager,
    TooManySessions,
)
from codemode_session.server.worker_setup import build_pool
from codemode_session.storage.base import ArtifactInfo, Storage
from codemode_session.storage.factory import storage_from_env
from codemode_session.tools import load_tools_dir, search_score, tool_specs
from codemode_session.workflow_model import parse_workflow

STATUS_BY_ERROR: list[tuple[type[CodemodeError], int]] = [
    (ValidationError, 400),
    (NotFoundError, 404),
    (ForbiddenError, 403),
    (ConflictError, 409),
    (StorageUnavailableError, 503),
    (QuotaExceededError, 413),
]


def finite_json(value: Any) -> Any:
    """`value` with NaN and infinities (not JSON) replaced by their names as strings.

    Python's JSON parser accepts `NaN`/`Infinity` in a request, and other clients may
    have stored them; an answer that quotes them must still be valid JSON.
    """
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    if isinstance(value, dict):
        return {k: finite_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite_json(v) for v in value]
    return value


class AsciiJSONResponse(JSONResponse):
    """JSON with non-ASCII escaped, so text UTF-8 cannot encode (lone surrogates that
    JSON lets a caller or another client store) cannot break a response."""

    def render(self, content: Any) -> bytes:
        try:
            text = json.dumps(content, ensure_ascii=True, allow_nan=False,
                              separators=(",", ":"))
        except ValueError:  # NaN or Infinity somewhere in the content
            text = json.dumps(finite_json(content), ensure_ascii=True, allow_nan=False,
                              separators=(",", ":"))
        return text.encode()


# Path names are checked by the handlers (a 400 saying why); the document shows the rules.
WorkflowName = Annotated[str, Path(json_schema_extra=WORKFLOW_NAME, description=WORKFLOW_NAME_HELP)]
ArtifactName = Annotated[str, Path(json_schema_extra=ARTIFACT_NAME, description=ARTIFACT_NAME_HELP)]


class StorageRegistry:
    """One storage object per workspace, sharing the server's connection settings."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self._by_ws: dict[str | None, Storage] = {}

    def get(self, workspace_id: str | None) -> Storage:
        if workspace_id not in self._by_ws:
            self._by_ws[workspace_id] = storage_from_env(self.env, workspace_id)
        return self._by_ws[workspace_id]

    async def close(self) -> None:
        for storage in self._by_ws.values():
            await storage.close()


def create_app(env: dict[str, str] | None = None) -> FastAPI:
    import os

    environ = dict(os.environ if env is None else env)
    config = ServerConfig.from_env(environ)
    started = time.time()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        pool = build_pool(environ, config, app.state.storages.get)
        app.state.sessions = SessionManager(pool, config.session_idle_timeout,
                                            config.max_sessions)
        app.state.sessions.start()
        yield
        await app.state.sessions.close()
        await app.state.storages.close()

    app = FastAPI(title="codemode session server", version=__version__, lifespan=lifespan,
                  default_response_class=AsciiJSONResponse)
    openapi.install(app, config.max_execution_time)
    app.state.config = config
    # Every body but the probes' is capped before anything reads it (MAX_REQUEST_BYTES).
    app.add_middleware(BodySizeLimit, max_bytes=config.max_request_bytes)
    app.state.storages = StorageRegistry(environ)
    # Build the default storage now: a bad REDIS_URL scheme or STORAGE_PREFIX stops
    # the server at start (one readable line) instead of failing every session later.
    app.state.storages.get(config.workspace_id)

    # Error bodies are ASCII JSON: they may quote the caller's input, and JSON lets a
    # caller send lone surrogates ("\udcff") that UTF-8 cannot encode.
    def error_response(detail: Any, status: int) -> Response:
        return AsciiJSONResponse({"detail": finite_json(jsonable_encoder(detail))},
                                 status_code=status)

    @app.exception_handler(CodemodeError)
    async def codemode_error(_: Request, exc: CodemodeError) -> Response:
        status = next((code for kind, code in STATUS_BY_ERROR if isinstance(exc, kind)), 400)
        return error_response(str(exc), status)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_: Request, exc: RequestValidationError) -> Response:
        return error_response(exc.errors(), 422)

    @app.exception_handler(UnicodeError)
    async def not_unicode(_: Request, exc: UnicodeError) -> Response:
        return error_response(
            "the request contains text that is not valid Unicode (a lone surrogate such as "
            "\\udcff); send UTF-8 text", 400)

    def sessions() -> SessionManager:
        manager: SessionManager = app.state.sessions
        return manager

    def resolve_workspace(requested: str | None) -> str | None:
        if requested is None:
            return config.workspace_id
        validate_workspace_id(requested)
        if config.workspace_id is not None and requested != config.workspace_id:
            raise HTTPException(403, f"this server serves workspace {config.workspace_id!r} only")
        return requested

    def session_or_404(session_id: str) -> Session:
        session = sessions().get(session_id)
        if session is None:
            raise HTTPException(404, "unknown or expired session; create one with POST /sessions")
        return session

    def storage_for(session_id: str | None) -> Storage:
        workspace = config.workspace_id
        if session_id:
            workspace = session_or_404(session_id).workspace_id
        registry: StorageRegistry = app.state.storages
        return registry.get(workspace)

    # ---- open endpoints --------------------------------------------------------------

    @app.get("/health", tags=["probes"])
    async def health() -> dict[str, Any]:
        return {
            "status": "healthy",
            "uptime_seconds": time.time() - started,
            "active_sessions": sessions().count,
            "last_activity": sessions().last_activity,
            "workspace_id": config.workspace_id,
            "version": __version__,
        }

    @app.get("/ready", tags=["probes"], response_model=ReadyResponse,
             responses={503: {"model": ReadyResponse, "description": "storage does not answer"}})
    async def ready() -> JSONResponse:
        try:
            await asyncio.wait_for(storage_for(None).ping(), 3.0)
        except (CodemodeError, TimeoutError) as exc:
            reason = str(exc) or "storage did not answer within 3s"
            return AsciiJSONResponse({"ready": False, "reason": reason}, status_code=503)
        return AsciiJSONResponse({"ready": True})

    @app.get("/metrics", tags=["probes"], response_class=PlainTextResponse)
    async def prometheus_metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    # ---- authenticated endpoints -------------------------------------------------------

    # Any request may be unauthenticated, too large or not Unicode.
    api = APIRouter(dependencies=[Depends(check_bearer)], default_response_class=AsciiJSONResponse,
                    responses=errors(400, 401, 413))

    @api.post("/sessions", status_code=201, response_model=CreateSessionResponse,
              responses=errors(403, 429))
    async def create_session(body: CreateSessionRequest | None = None) -> CreateSessionResponse:
        workspace = resolve_workspace(body.workspace_id if body else None)
        try:
            session = await sessions().create(workspace)
        except TooManySessions:
            raise HTTPException(
                429, f"session limit reached ({config.max_sessions}); end one with DELETE /sessions"
            ) from None
        return CreateSessionResponse(session_id=session.id, workspace_id=workspace,
                                     idle_timeout_seconds=config.session_idle_timeout)

    @api.delete("/sessions", responses=errors(404))
    async def end_session(x_session_id: str = Header(alias="X-Session-ID")) -> dict[str, Any]:
        if not await sessions().end(x_session_id):
            raise HTTPException(404, "unknown or expired session")
        return {"status": "ended", "session_id": x_session_id}

    async def session_for_execute(session_id: str | None) -> Session:
        if session_id is None:
            try:
                return await sessions().create(config.workspace_id)
            except TooManySessions:
                raise HTTPException(429, f"session limit reached ({config.max_sessions})") from None
        session = sessions().get(session_id)
        if session is not None:
            return session
        if config.accept_client_session_ids and CLIENT_ID_RE.match(session_id):
            try:
                return await sessions().create(config.workspace_id, session_id=session_id)
            except TooManySessions:
                raise HTTPException(429, f"session limit reached ({config.max_sessions})") from None
        raise HTTPException(
            404, "unknown or expired session; omit X-Session-ID or create one with POST /sessions"
        )

    @api.post("/execute", response_model=ExecuteResponse, responses=errors(404, 429))
    async def execute(
        body: ExecuteRequest, x_session_id: str | None = Header(default=None, alias="X-Session-ID")
    ) -> Response:
        if len(body.code.encode()) > config.max_code_bytes:
            raise HTTPException(413, f"code is larger than {config.max_code_bytes} bytes")
        timeout = body.timeout or config.default_timeout
        if timeout > config.max_execution_time:
            # Shaped like every other 422 (a list of errors), as the document says.
            raise RequestValidationError([{
                "type": "less_than_equal", "loc": ("body", "timeout"), "input": timeout,
                "msg": f"timeout {timeout:g}s exceeds MAX_EXECUTION_TIME="
                       f"{config.max_execution_time:g}s",
                "ctx": {"le": config.max_execution_time},
            }])
        session = await session_for_execute(x_session_id)
        # The reply already has ExecuteResponse's fields and JSON types (it came as JSON
        # from the worker); returning it as is skips a second validation per request.
        return AsciiJSONResponse(await sessions().execute(session, body.code, timeout))

    @api.get("/info", responses=errors(404, 503))
    async def info(x_session_id: str | None = Header(default=None, alias="X-Session-ID")
                   ) -> dict[str, Any]:
        storage = storage_for(x_session_id)
        tools = await _tool_specs(storage)
        workflows = [{"name": w.name, "description": w.description}
                     for w in await storage.list_workflows()]
        return {
            "tools": [{"name": s.name, "description": s.description} for s in tools.values()],
            "workflows": workflows,
            "skills": workflows,
            "artifacts_path": storage.description,
            "workspace_id": storage.workspace_id,
            "allow_runtime_deps": config.allow_runtime_deps,
            "default_timeout": config.default_timeout,
            "max_execution_time": config.max_execution_time,
            "version": __version__,
        }

    @api.post("/reset", responses=errors(404))
    async def reset(x_session_id: str = Header(alias="X-Session-ID")) -> dict[str, Any]:
        await sessions().reset(session_or_404(x_session_id))
        return {"status": "reset", "session_id": x_session_id}

    async def _tool_specs(storage: Storage) -> dict[str, Any]:
        texts = load_tools_dir(environ.get("TOOLS_PATH"))
        texts.update(await storage.list_tools())
        return tool_specs(texts)

    @api.get("/api/tools", responses=errors(404, 503))
    async def list_tools(x_session_id: str | None = Header(default=None, alias="X-Session-ID")
                         ) -> list[dict[str, Any]]:
        return [s.summary() for s in (await _tool_specs(storage_for(x_session_id))).values()]

    @api.get("/api/tools/search", responses=errors(404, 503))
    async def search_tools(
        query: str, limit: int = 10,
        x_session_id: str | None = Header(default=None, alias="X-Session-ID"),
    ) -> list[dict[str, Any]]:
        specs = (await _tool_specs(storage_for(x_session_id))).values()
        scored = sorted(((search_score(query, s.name, s.description), s) for s in specs),
                        key=lambda x: -x[0])
        return [s.summary() for score, s in scored if score > 0][: max(0, limit)]

    @api.get("/api/workflows", responses=errors(404, 503))
    async def list_workflows(x_session_id: str | None = Header(default=None, alias="X-Session-ID")
                             ) -> list[dict[str, Any]]:
        return [w.summary() for w in await storage_for(x_session_id).list_workflows()]

    @api.get("/api/workflows/search", responses=errors(404, 503))
    async def search_workflows(
        query: str, limit: int = 10,
        x_session_id: str | None = Header(default=None, alias="X-Session-ID"),
    ) -> list[dict[str, Any]]:
        workflows = await storage_for(x_session_id).list_workflows()
        scored = sorted(((search_score(query, w.name, w.description), w) for w in workflows),
                        key=lambda x: (-x[0], x[1].name))
        return [w.summary() for score, w in scored if score > 0][: max(0, limit)]

    # `{name:path}`: a name with a slash (`a%2Fb` arrives decoded) is a 400 that says
    # why, like any other invalid name, not the router's bare 404.
    @api.get("/api/workflows/{name:path}", responses=errors(404, 503))
    async def get_workflow(name: WorkflowName, x_session_id: str | None = Header(
            default=None, alias="X-Session-ID")) -> dict[str, Any]:
        validate_workflow_name(name)
        workflow = await storage_for(x_session_id).get_workflow(name)
        if workflow is None:
            raise HTTPException(404, f"no workflow named {name!r}")
        return workflow.to_dict()

    @api.post("/api/workflows", status_code=201, responses=errors(404, 409, 413, 503))
    async def create_workflow(body: WorkflowCreate, x_session_id: str | None = Header(
            default=None, alias="X-Session-ID")) -> dict[str, Any]:
        workflow = parse_workflow(body.name, body.source, body.description or None)
        await storage_for(x_session_id).save_workflow(workflow)
        return workflow.summary()

    @api.delete("/api/workflows/{name:path}", responses=errors(404, 409, 503))
    async def delete_workflow(name: WorkflowName, x_session_id: str | None = Header(
            default=None, alias="X-Session-ID")) -> bool:
        validate_workflow_name(name)
        if not await storage_for(x_session_id).delete_workflow(name):
            raise HTTPException(404, f"no workflow named {name!r}")
        return True

    @api.get("/api/artifacts", responses=errors(404, 503))
    async def list_artifacts(x_session_id: str | None = Header(default=None, alias="X-Session-ID")
                             ) -> list[dict[str, Any]]:
        return [i.to_dict() for i in await storage_for(x_session_id).list_artifacts()]

    @api.get("/api/artifacts/{name:path}", responses={
        **errors(404, 503),
        200: {"description": "The artifact: JSON, or bytes for binary data",
              "content": {"application/octet-stream": {"schema": {"type": "string",
                                                                  "format": "binary"}}}},
    })
    async def get_artifact(name: ArtifactName, x_session_id: str | None = Header(
            default=None, alias="X-Session-ID")) -> Response:
        found = await storage_for(x_session_id).load_artifact(name)
        if found is None:
            raise HTTPException(404, f"no artifact named {name!r}")
        value = decode_artifact(*found)
        if isinstance(value, bytes):
            return Response(value, media_type="application/octet-stream")
        return AsciiJSONResponse(value)

    @api.post("/api/artifacts", status_code=201, responses=errors(404, 409, 413, 503))
    async def save_artifact(body: ArtifactCreate, x_session_id: str | None = Header(
            default=None, alias="X-Session-ID")) -> dict[str, Any]:
        if body.data_base64 is not None:
            try:
                payload, data_type = base64.b64decode(body.data_base64, validate=True), "bytes"
            except ValueError:
                raise HTTPException(400, "data_base64 is not valid base64") from None
        else:
            payload, data_type = encode_artifact(body.data)
        info = ArtifactInfo(name=body.name, description=body.description,
                            metadata=artifact_metadata(body.metadata, data_type))
        await storage_for(x_session_id).save_artifact(info, payload)
        return info.to_dict()

    @api.delete("/api/artifacts/{name:path}", responses=errors(404, 409, 503))
    async def delete_artifact(name: ArtifactName, x_session_id: str | None = Header(
            default=None, alias="X-Session-ID")) -> dict[str, Any]:
        if not await storage_for(x_session_id).delete_artifact(name):
            raise HTTPException(404, f"no artifact named {name!r}")
        return {"deleted": name}

    def require_runtime_deps(verb: str) -> None:
        if not config.allow_runtime_deps:
            raise HTTPException(
                403, f"deps {verb} is disabled: runtime dependencies are off (ALLOW_RUNTIME_DEPS)"
            )

    @api.get("/api/deps", responses=errors(404, 503))
    async def list_deps(x_session_id: str | None = Header(default=None, alias="X-Session-ID")
                        ) -> list[str]:
        return await storage_for(x_session_id).list_deps()

    @api.post("/api/deps/add", responses=errors(403, 404, 503))
    async def add_dep(body: PackageRequest, x_session_id: str | None = Header(
            default=None, alias="X-Session-ID")) -> dict[str, Any]:
        require_runtime_deps("add")
        spec = validate_package_spec(body.package)
        await asyncio.to_thread(pip_install, [spec], environ.get("DEPS_DIR") or None)
        added = await storage_for(x_session_id).add_dep(spec)
        return {"installed": [spec], "already_present": [] if added else [spec], "failed": []}

    @api.post("/api/deps/remove", responses=errors(403, 404, 503))
    async def remove_dep(body: PackageRequest, x_session_id: str | None = Header(
            default=None, alias="X-Session-ID")) -> dict[str, Any]:
        require_runtime_deps("remove")
        spec = validate_package_spec(body.package)
        removed = await storage_for(x_session_id).remove_dep(spec)
        return {"removed": [spec] if removed else [], "not_found": [] if removed else [spec]}

    @api.post("/api/deps/sync", responses=errors(403, 404, 503))
    async def sync_deps(x_session_id: str | None = Header(default=None, alias="X-Session-ID")
                        ) -> dict[str, Any]:
        require_runtime_deps("sync")
        specs = await storage_for(x_session_id).list_deps()
        await asyncio.to_thread(pip_install, specs, environ.get("DEPS_DIR") or None)
        return {"installed": specs, "failed": []}

    app.include_router(api)
    return app

