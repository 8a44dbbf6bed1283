"""`/api/deps`: a workspace's runtime packages; changes need ALLOW_RUNTIME_DEPS."""

from __future__ import annotations

import asyncio
from typing import Any

from codemode_session.deps_install import pip_install
from codemode_session.errors import ForbiddenError
from codemode_session.names import validate_package_spec
from codemode_session.server.config import ServerConfig
from codemode_session.server.dependencies import CallerWorkspace, authenticated_router
from codemode_session.server.models import PackageRequest
from codemode_session.server.openapi import errors

router = authenticated_router()


def require_runtime_deps(config: ServerConfig, verb: str) -> None:
    if not config.allow_runtime_deps:
        raise ForbiddenError(
            f"deps {verb} is disabled: runtime dependencies are off (ALLOW_RUNTIME_DEPS)"
        )


async def install(config: ServerConfig, specs: list[str]) -> None:
    """pip off the event loop, into DEPS_DIR (on the workers' sys.path)."""
    await asyncio.to_thread(pip_install, specs, config.deps_dir)


@router.get("/api/deps", responses=errors(404, 503))
async def list_deps(workspace: CallerWorkspace) -> list[str]:
    return await workspace.storage().list_deps()


@router.post("/api/deps/add", responses=errors(403, 404, 503))
async def add_dep(body: PackageRequest, workspace: CallerWorkspace) -> dict[str, Any]:
    config = workspace.state.config
    require_runtime_deps(config, "add")
    spec = validate_package_spec(body.package)
    await install(config, [spec])
    added = await workspace.storage().add_dep(spec)
    return {"installed": [spec], "already_present": [] if added else [spec], "failed": []}


@router.post("/api/deps/remove", responses=errors(403, 404, 503))
async def remove_dep(body: PackageRequest, workspace: CallerWorkspace) -> dict[str, Any]:
    require_runtime_deps(workspace.state.config, "remove")
    spec = validate_package_spec(body.package)
    removed = await workspace.storage().remove_dep(spec)
    return {"removed": [spec] if removed else [], "not_found": [] if removed else [spec]}


@router.post("/api/deps/sync", responses=errors(403, 404, 503))
async def sync_deps(workspace: CallerWorkspace) -> dict[str, Any]:
    config = workspace.state.config
    require_runtime_deps(config, "sync")
    specs = await workspace.storage().list_deps()
    await install(config, specs)
    return {"installed": specs, "failed": []}
