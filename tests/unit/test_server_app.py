"""The server's structure: routers, the error table and the settings (no workers started)."""

from __future__ import annotations

from pathlib import Path

import pytest
from codemode_session.errors import (
    CodemodeError,
    ConflictError,
    ForbiddenError,
    NotFoundError,
    QuotaExceededError,
    StorageUnavailableError,
    ValidationError,
)
from codemode_session.server.app import create_app
from codemode_session.server.config import ServerConfig, WorkerConfig
from codemode_session.server.http_errors import SessionLimitReached, TooLarge, status_of

ROUTES = [
    ("GET", "/health"),
    ("GET", "/ready"),
    ("GET", "/metrics"),
    ("POST", "/sessions"),
    ("DELETE", "/sessions"),
    ("POST", "/execute"),
    ("GET", "/info"),
    ("POST", "/reset"),
    ("POST", "/bind"),
    ("GET", "/api/tools"),
    ("GET", "/api/tools/search"),
    ("GET", "/api/workflows"),
    ("GET", "/api/workflows/search"),
    ("GET", "/api/workflows/{name}"),
    ("POST", "/api/workflows"),
    ("DELETE", "/api/workflows/{name}"),
    ("GET", "/api/skills"),
    ("GET", "/api/skills/search"),
    ("GET", "/api/skills/{name}"),
    ("POST", "/api/skills"),
    ("DELETE", "/api/skills/{name}"),
    ("GET", "/api/artifacts"),
    ("GET", "/api/artifacts/{name}"),
    ("POST", "/api/artifacts"),
    ("DELETE", "/api/artifacts/{name}"),
    ("GET", "/api/deps"),
    ("POST", "/api/deps/add"),
    ("POST", "/api/deps/remove"),
    ("POST", "/api/deps/sync"),
    ("POST", "/install_deps"),
    ("POST", "/uninstall_deps"),
    ("GET", "/files"),
    ("PUT", "/files/{path}"),
    ("GET", "/files/{path}"),
    ("DELETE", "/files/{path}"),
    ("GET", "/api/history/sessions"),
    ("GET", "/api/history/sessions/{session_id}"),
    ("DELETE", "/api/history/sessions/{session_id}"),
    ("POST", "/api/history/sessions/{session_id}/fork"),
]
PROBES = {"/health", "/ready", "/metrics"}


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {"CONTAINER_AUTH_TOKEN": "t", "STORAGE_DIR": str(tmp_path)}


def test_routes_keep_their_order_and_auth(env: dict[str, str]) -> None:
    paths = create_app(env).openapi()["paths"]
    documented = [(method.upper(), path) for path, ops in paths.items() for method in ops]
    assert sorted(documented) == sorted(ROUTES)
    assert list(paths) == list(dict.fromkeys(path for _, path in ROUTES))
    for method, path in documented:
        answers = paths[path][method.lower()]["responses"]
        assert ("401" in answers) == (path not in PROBES), (method, path)


def test_operation_ids_are_unchanged(env: dict[str, str]) -> None:
    """Generated clients name their methods after these."""
    paths = create_app(env).openapi()["paths"]
    assert paths["/api/tools/search"]["get"]["operationId"] == "search_tools_api_tools_search_get"
    assert paths["/execute"]["post"]["operationId"] == "execute_execute_post"
    assert [p["name"] for p in paths["/api/tools/search"]["get"]["parameters"]] == [
        "query",
        "limit",
        "X-Session-ID",
    ]


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (ValidationError, 400),
        (NotFoundError, 404),
        (ForbiddenError, 403),
        (ConflictError, 409),
        (StorageUnavailableError, 503),
        (QuotaExceededError, 413),
        (TooLarge, 413),
        (SessionLimitReached, 429),
        (CodemodeError, 400),
    ],
)
def test_one_table_maps_errors_to_statuses(error: type[CodemodeError], status: int) -> None:
    assert status_of(error("x")) == status


def test_server_settings_are_read_once(env: dict[str, str]) -> None:
    config = ServerConfig.from_env(
        {**env, "TOOLS_PATH": "/tools", "DEPS_DIR": "", "ALLOW_RUNTIME_DEPS": "on"}
    )
    assert (config.tools_path, config.deps_dir, config.allow_runtime_deps) == ("/tools", None, True)
    with pytest.raises(ValidationError, match="MAX_SESSIONS"):
        ServerConfig.from_env({**env, "MAX_SESSIONS": "many"})


def test_worker_settings_fall_back_to_defaults() -> None:
    assert WorkerConfig.from_env({}) == WorkerConfig()
    config = WorkerConfig.from_env(
        {
            "WORKER_MEMORY_MB": "lots",
            "WORKER_MAX_PROCESSES": " 9 ",
            "OUTPUT_LIMIT_BYTES": "",
            "STORAGE_PREFIX": "",
            "ALLOW_RUNTIME_DEPS": "yes",
            "DEPS_DIR": "/d",
        }
    )
    assert config == WorkerConfig(max_processes=9, allow_runtime_deps=True, deps_dir="/d")
