"""`/api/tools`: the CLI tools a session's workspace offers (TOOLS_PATH and storage)."""

from __future__ import annotations

from typing import Any

from codemode_session.search import service as search
from codemode_session.server.dependencies import CallerWorkspace, authenticated_router
from codemode_session.server.openapi import errors
from codemode_session.storage.base import Storage
from codemode_session.tools import AnyToolSpec, load_tools_dir, tool_specs

router = authenticated_router()


async def tool_specs_for(storage: Storage, tools_path: str | None) -> dict[str, AnyToolSpec]:
    """The folder's tools, overridden by the workspace's stored ones of the same name."""
    texts = load_tools_dir(tools_path)
    texts.update(await storage.list_tools())
    return tool_specs(texts)


async def _specs(workspace: CallerWorkspace) -> dict[str, AnyToolSpec]:
    return await tool_specs_for(workspace.storage(), workspace.state.config.tools_path)


@router.get("/api/tools", responses=errors(404, 503))
async def list_tools(workspace: CallerWorkspace) -> list[dict[str, Any]]:
    return [s.summary() for s in (await _specs(workspace)).values()]


@router.get("/api/tools/search", responses=errors(404, 503))
async def search_tools(
    query: str, workspace: CallerWorkspace, limit: int = 10
) -> list[dict[str, Any]]:
    """Best first, by name, description, tags and recipes (and meaning, with the model)."""
    specs = await _specs(workspace)
    found = await search.search_tools(workspace.storage(), specs, query, limit)
    return [s.summary() for s in found]
