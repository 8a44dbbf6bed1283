"""The HTTP API's routes, one router per area; `ROUTERS` is their order in the document."""

from __future__ import annotations

from fastapi import APIRouter

from codemode_session.server.routers import (
    artifacts,
    binding,
    deps,
    files,
    history,
    probes,
    sessions,
    tools,
    workflows,
)

ROUTERS: tuple[APIRouter, ...] = (
    probes.router,
    sessions.router,
    binding.router,
    tools.router,
    workflows.router,
    artifacts.router,
    deps.router,
    files.router,
    history.router,
)
