"""`/api/deps`: a workspace's runtime packages; changes need ALLOW_RUNTIME_DEPS."""

from __future__ import annotations

import asyncio
import importlib.metadata
import re
import sys
from typing import Any

from codemode_session.deps_install import pip_install
from codemode_session.errors import ForbiddenError
from codemode_session.names import validate_package_spec
from codemode_session.server.config import ServerConfig
from codemode_session.server.dependencies import CallerWorkspace, authenticated_router
from codemode_session.server.models import PackageRequest, PackagesRequest, PackagesResult
from codemode_session.server.openapi import errors
from codemode_session.server.responses import AsciiJSONResponse

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


# py-code-mode's executor calls these two (`Session(sync_deps_on_start=True)` installs
# the executor's configured packages with /install_deps). Here they follow
# ALLOW_RUNTIME_DEPS like the rest of /api/deps: with it off, packages the image (or
# DEPS_DIR) already has are reported as already present, and anything else is a 403
# whose body carries the reason as `detail` and as `error` (what py-code-mode's older
# client reads).

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*")


def installed(spec: str, deps_dir: str | None) -> bool:
    """The requirement is met by what the server's interpreter (or DEPS_DIR) has."""
    name = _NAME.match(spec)
    if name is None:
        return False
    path = [*sys.path, deps_dir] if deps_dir else sys.path
    found = next(iter(importlib.metadata.distributions(name=name.group(0), path=path)), None)
    if found is None:
        return False
    try:
        from packaging.requirements import Requirement
    except ImportError:  # without packaging, a version range is not checked
        return "==" not in spec or spec.split("==", 1)[1].strip() == found.version
    return Requirement(spec).specifier.contains(found.version, prereleases=True)


def _refused(verb: str, specs: list[str]) -> AsciiJSONResponse:
    reason = (
        f"{verb} {', '.join(specs)}: runtime dependencies are off on this server "
        "(ALLOW_RUNTIME_DEPS); have them in the session image, or turn runtime deps on"
    )
    return AsciiJSONResponse({"detail": reason, "error": reason}, status_code=403)


@router.post("/install_deps", response_model=PackagesResult, responses=errors(403, 404, 503))
async def install_deps(body: PackagesRequest, workspace: CallerWorkspace) -> Any:
    config = workspace.state.config
    specs = [validate_package_spec(p) for p in body.packages]
    present = [s for s in specs if installed(s, config.deps_dir)]
    missing = [s for s in specs if s not in present]
    if missing and not config.allow_runtime_deps:
        return _refused("cannot install", missing)
    if missing:
        await install(config, missing)
        storage = workspace.storage()
        for spec in missing:
            await storage.add_dep(spec)
    return PackagesResult(installed=missing, already_present=present)


@router.post("/uninstall_deps", response_model=PackagesResult, responses=errors(403, 404, 503))
async def uninstall_deps(body: PackagesRequest, workspace: CallerWorkspace) -> Any:
    """Takes the packages off the workspace's list; what a running worker imported stays
    until its session restarts (packages are not uninstalled from the image)."""
    config = workspace.state.config
    specs = [validate_package_spec(p) for p in body.packages]
    if not config.allow_runtime_deps:
        return _refused("cannot uninstall", specs)
    storage = workspace.storage()
    removed = [s for s in specs if await storage.remove_dep(s)]
    return PackagesResult(removed=removed, not_found=[s for s in specs if s not in removed])
