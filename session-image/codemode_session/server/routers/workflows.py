"""`/api/workflows`: list, search, read, save and delete a workspace's workflows."""

from __future__ import annotations

from typing import Any

from codemode_session.names import validate_workflow_name
from codemode_session.search import service as search
from codemode_session.server.dependencies import (
    CallerWorkspace,
    WorkflowName,
    authenticated_router,
)
from codemode_session.server.models import WorkflowCreate
from codemode_session.server.openapi import errors
from codemode_session.workflow_model import parse_workflow

router = authenticated_router()


@router.get("/api/workflows", responses=errors(404, 503))
async def list_workflows(workspace: CallerWorkspace) -> list[dict[str, Any]]:
    return [w.summary() for w in await workspace.storage().list_workflows()]


# Before `/api/workflows/{name:path}`, which would take "search" for a name.
@router.get("/api/workflows/search", responses=errors(404, 503))
async def search_workflows(
    query: str, workspace: CallerWorkspace, limit: int = 10
) -> list[dict[str, Any]]:
    """Best first: hybrid of word matches and meaning when the search model is installed."""
    return [w.summary() for w in await search.search_workflows(workspace.storage(), query, limit)]


# `{name:path}`: a name with a slash (`a%2Fb` arrives decoded) is a 400 that says
# why, like any other invalid name, not the router's bare 404.
@router.get("/api/workflows/{name:path}", responses=errors(404, 503))
async def get_workflow(name: WorkflowName, workspace: CallerWorkspace) -> dict[str, Any] | None:
    """The workflow, or null when there is none (as py-code-mode's server answers)."""
    validate_workflow_name(name)
    workflow = await workspace.storage().get_workflow(name)
    return None if workflow is None else workflow.to_dict()


# 200, not 201: py-code-mode's client takes only 200 as a created workflow.
@router.post("/api/workflows", responses=errors(404, 409, 413, 503))
async def create_workflow(body: WorkflowCreate, workspace: CallerWorkspace) -> dict[str, Any]:
    workflow = parse_workflow(body.name, body.source, body.description or None)
    storage = workspace.storage()
    await storage.save_workflow(workflow)
    await search.workflows_changed(storage, saved=[workflow])
    return workflow.summary()


@router.delete("/api/workflows/{name:path}", responses=errors(404, 409, 503))
async def delete_workflow(name: WorkflowName, workspace: CallerWorkspace) -> bool:
    """true when it was deleted, false when there was none (as py-code-mode answers)."""
    validate_workflow_name(name)
    storage = workspace.storage()
    deleted = await storage.delete_workflow(name)
    await search.workflows_changed(storage, deleted=[name])
    return deleted


# py-code-mode's skills-era names for the same workflows: its older client calls
# /api/skills (list, search, get, create, delete) with the same bodies and answers.
for _route in list(router.routes):
    _path = getattr(_route, "path", "")
    if _path.startswith("/api/workflows"):
        router.add_api_route(
            _path.replace("/api/workflows", "/api/skills", 1),
            _route.endpoint,  # type: ignore[attr-defined]
            methods=sorted(_route.methods),  # type: ignore[attr-defined]
            responses=_route.responses,  # type: ignore[attr-defined]
            name=f"{_route.name}_as_skills",  # type: ignore[attr-defined]
            summary=f"{_route.summary or _route.name} (py-code-mode's skills-era name)",  # type: ignore[attr-defined]
            deprecated=True,
        )
