"""The session server's HTTP API: `create_app` wires settings, state, errors and routers.

Endpoints and fields follow py-code-mode's SessionServer so its remote client
can drive our pods; `/ready`, `/metrics` and `/sessions` are ours. Every error
a caller can cause is a 4xx with a `detail` that says what to change (see
`http_errors`); the routes are in `routers`, one module per area.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager

from fastapi import FastAPI

from codemode_session import __version__
from codemode_session.server import http_errors, openapi
from codemode_session.server.binding import Binding
from codemode_session.server.body_limit import BodySizeLimit
from codemode_session.server.config import ServerConfig, bound_env
from codemode_session.server.files import SessionFolders
from codemode_session.server.history import History
from codemode_session.server.responses import AsciiJSONResponse
from codemode_session.server.routers import ROUTERS
from codemode_session.server.sessions import SessionManager
from codemode_session.server.snapshots import Snapshots
from codemode_session.server.state import ServerState, StorageRegistry
from codemode_session.server.worker_setup import build_pool


def create_app(env: Mapping[str, str] | None = None) -> FastAPI:
    """The app for `env` (default: the process environment), read once, here."""
    environ = bound_env(os.environ if env is None else env)
    config = ServerConfig.from_env(environ)
    binding = Binding(config.pool, config.state_id, config.agent_id, config.fork_from)
    state = ServerState(config, StorageRegistry(environ), refusal=lambda: binding.refusal)
    # Build the default storage now: a bad REDIS_URL scheme or STORAGE_PREFIX stops
    # the server at start (one readable line) instead of failing every session later.
    state.storages.get(config.workspace_id)
    history = History(state.storages, config)
    snapshots = Snapshots(
        state.storages,
        config.state_id,
        config.fork_from,
        history.fork_once if config.history_enabled else None,
    )

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        pool = build_pool(environ, config, state.storages.get)
        state.start(
            SessionManager(
                pool,
                config.session_idle_timeout,
                config.max_sessions,
                config.worker_idle_timeout,
                recorder=history.record if config.history_enabled else None,
                snapshots=snapshots if config.snapshots_enabled else None,
                folders=SessionFolders(
                    config.files_dir or os.path.join(tempfile.gettempdir(), "codemode-files"),
                    config.max_file_bytes,
                    config.max_folder_bytes,
                ),
            )
        )
        yield
        await history.close()
        await state.close()
        await snapshots.close()

    app = FastAPI(
        title="codemode session server",
        version=__version__,
        lifespan=lifespan,
        default_response_class=AsciiJSONResponse,
    )
    app.state.config = config  # read by auth.check_bearer
    app.state.server = state
    app.state.history = history  # read by routers.history
    app.state.snapshots = snapshots  # read by routers.probes (/health)
    app.state.binding = binding  # read by routers.binding
    openapi.install(app, config.max_execution_time)
    http_errors.install(app)
    # Every body but the probes' is capped before anything reads it (MAX_REQUEST_BYTES).
    app.add_middleware(BodySizeLimit, max_bytes=config.max_request_bytes)
    for router in ROUTERS:
        app.include_router(router)
    return app
