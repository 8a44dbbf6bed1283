"""Settings of the server and of its workers, each read once from the environment
(docs/architecture.md §4.1).

The server parses its own in `create_app`: a bad value stops it with one readable
line. A worker parses the environment the server gave it once, in its `main`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from codemode_session.errors import ValidationError
from codemode_session.names import validate_workspace_id
from codemode_session.protocol import MAX_ATTACHMENT

TRUE = ("1", "true", "yes", "on")


def _flag(env: Mapping[str, str], name: str) -> bool:
    return env.get(name, "").lower() in TRUE


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ValidationError(f"{name}={raw!r} is not a number") from None
    if value <= 0:
        raise ValidationError(f"{name} must be positive, got {raw!r}")
    return value


def _bytes(env: Mapping[str, str], name: str, default: int) -> int:
    """A positive whole number of bytes (digits only, like 67108864)."""
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw.strip())
    except ValueError:
        raise ValidationError(f"{name}={raw!r} is not a whole number of bytes") from None
    if value <= 0:
        raise ValidationError(f"{name} must be positive, got {raw!r}")
    return value


def _whole(env: Mapping[str, str], name: str, default: int) -> int:
    """A positive whole number (digits only)."""
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    if not raw.strip().isdigit() or int(raw) <= 0:
        raise ValidationError(f"{name}={raw!r} is not a positive whole number")
    return int(raw)


MAX_REQUEST_BYTES_DEFAULT = 64 * 1024 * 1024


@dataclass(frozen=True)
class ServerConfig:
    auth_token: str | None = field(repr=False)  # kept out of logs and tracebacks
    auth_disabled: bool
    workspace_id: str | None
    default_timeout: float
    max_execution_time: float
    allow_runtime_deps: bool
    session_idle_timeout: float
    worker_idle_timeout: float
    max_sessions: int
    worker_spares: int
    accept_client_session_ids: bool
    max_code_bytes: int
    max_request_bytes: int
    tools_path: str | None = None
    deps_dir: str | None = None
    # Session history (storage/history.py): the agent a session is recorded under when
    # its creator names none, and the bounds of what is kept.
    agent_id: str = "default"
    # On unless HISTORY_ENABLED=false; stored messages count toward the storage quota.
    history_enabled: bool = True
    history_max_messages: int = 1000
    history_max_output_bytes: int = 64 * 1024
    # Workers fork from a template process (codemode_session.template) outside one-session
    # pods; false spawns each as a process of its own.
    worker_template: bool = True
    # Snapshots of each session's globals (server/snapshots.py), counted in the quota.
    snapshots_enabled: bool = True
    # One state for every server session (a CodeSession pod, set by the operator).
    state_id: str | None = None
    # The state a new state_id starts from (a CodeSession's spec.forkFrom).
    fork_from: str | None = None
    # A warm pool pod (SESSION_POOL): started unbound, it runs nothing until the operator
    # binds it to a CodeSession (POST /bind, server/binding.py). A restarted container of
    # a bound pod reads its binding from SESSION_BINDING_DIR (the pod's annotations).
    pool: bool = False
    # Each session's working folder (server/files.py): where, and how much uploads may put.
    files_dir: str | None = None  # default: <temp dir>/codemode-files
    max_file_bytes: int = 256 * 1024 * 1024
    max_folder_bytes: int = 512 * 1024 * 1024

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ServerConfig:
        env = os.environ if env is None else env
        token = env.get("CONTAINER_AUTH_TOKEN") or None
        disabled = _flag(env, "CONTAINER_AUTH_DISABLED")
        if token is None and not disabled:
            raise ValidationError(
                "refusing to start without auth: set CONTAINER_AUTH_TOKEN, or "
                "CONTAINER_AUTH_DISABLED=true to serve without a token"
            )
        default_timeout = _float(env, "DEFAULT_TIMEOUT", 30.0)
        max_time = _float(env, "MAX_EXECUTION_TIME", 300.0)
        if not env.get("REDIS_URL") and not env.get("STORAGE_DIR"):
            raise ValidationError("no storage configured: set REDIS_URL (or STORAGE_DIR)")
        return cls(
            auth_token=token,
            auth_disabled=disabled and token is None,
            workspace_id=validate_workspace_id(env.get("WORKSPACE_ID") or None),
            default_timeout=min(default_timeout, max_time),
            max_execution_time=max_time,
            allow_runtime_deps=_flag(env, "ALLOW_RUNTIME_DEPS"),
            session_idle_timeout=_float(env, "SESSION_IDLE_TIMEOUT", 3600.0),
            worker_idle_timeout=_float(env, "WORKER_IDLE_TIMEOUT", 300.0),
            max_sessions=int(_float(env, "MAX_SESSIONS", 32)),
            worker_spares=int(env.get("WORKER_SPARES", "1") or 0),
            # On unless turned off: py-code-mode's client chooses its session ids.
            accept_client_session_ids=env.get("ACCEPT_CLIENT_SESSION_IDS", "true").lower() in TRUE,
            max_code_bytes=int(_float(env, "MAX_CODE_BYTES", 1024 * 1024)),
            max_request_bytes=_bytes(env, "MAX_REQUEST_BYTES", MAX_REQUEST_BYTES_DEFAULT),
            tools_path=env.get("TOOLS_PATH") or None,
            deps_dir=env.get("DEPS_DIR") or None,
            agent_id=_agent_id(env),
            history_enabled=env.get("HISTORY_ENABLED", "true").lower() in TRUE,
            history_max_messages=_whole(env, "HISTORY_MAX_MESSAGES", 1000),
            history_max_output_bytes=_bytes(env, "HISTORY_MAX_OUTPUT_BYTES", 64 * 1024),
            snapshots_enabled=env.get("SNAPSHOTS_ENABLED", "true").lower() in TRUE,
            worker_template=env.get("WORKER_TEMPLATE", "true").lower() in TRUE,
            state_id=_state_id(env, "SESSION_STATE_ID"),
            fork_from=_state_id(env, "SESSION_FORK_FROM"),
            pool=_flag(env, "SESSION_POOL"),
            files_dir=env.get("FILES_DIR") or None,
            max_file_bytes=_bytes(env, "MAX_FILE_BYTES", 256 * 1024 * 1024),
            max_folder_bytes=_bytes(env, "MAX_FOLDER_BYTES", 512 * 1024 * 1024),
        )


def bound_env(env: Mapping[str, str]) -> dict[str, str]:
    """`env` with the binding a pool pod's operator wrote into SESSION_BINDING_DIR (files
    state-id, agent-id, fork-from: the downward API's view of the pod's annotations, empty
    until it was bound), as SESSION_STATE_ID, AGENT_ID and SESSION_FORK_FROM."""
    folder = env.get("SESSION_BINDING_DIR")
    if not folder:
        return dict(env)
    out = dict(env)
    for file, name in BINDING_FILES.items():
        try:
            with open(os.path.join(folder, file), encoding="utf-8") as f:
                value = f.read().strip()
        except OSError:
            continue
        if value:
            out[name] = value
    return out


BINDING_FILES = {
    "state-id": "SESSION_STATE_ID",
    "agent-id": "AGENT_ID",
    "fork-from": "SESSION_FORK_FROM",
}


def _state_id(env: Mapping[str, str], name: str) -> str | None:
    """SESSION_STATE_ID (the id every server session's snapshot and history are kept
    under) or SESSION_FORK_FROM (the one it starts from)."""
    from codemode_session.storage.history import validate_history_id

    raw = env.get(name)
    return validate_history_id(raw) if raw else None


def _agent_id(env: Mapping[str, str]) -> str:
    """AGENT_ID (a CodeSession's spec.agentId, passed by the operator), else "default"."""
    from codemode_session.storage.history import DEFAULT_AGENT_ID, validate_agent_id

    raw = env.get("AGENT_ID")
    return DEFAULT_AGENT_ID if not raw else validate_agent_id(raw)


def _lenient_int(env: Mapping[str, str], name: str, default: int) -> int:
    """A worker cannot refuse to start over a setting, so a bad value means the default."""
    try:
        return int(env.get(name, default))
    except ValueError:
        return default


@dataclass(frozen=True)
class WorkerConfig:
    memory_mb: int = 1024
    max_processes: int = 256
    output_limit_bytes: int = 1024 * 1024
    storage_prefix: str = "codemode"
    allow_runtime_deps: bool = False
    deps_dir: str | None = None
    tools_path: str | None = None
    snapshot_max_bytes: int = MAX_ATTACHMENT

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> WorkerConfig:
        """WORKER_MEMORY_MB, WORKER_MAX_PROCESSES, OUTPUT_LIMIT_BYTES, STORAGE_PREFIX,
        ALLOW_RUNTIME_DEPS (read as the server reads it), DEPS_DIR, TOOLS_PATH and
        SNAPSHOT_MAX_BYTES (at most protocol.MAX_ATTACHMENT)."""
        return cls(
            memory_mb=_lenient_int(env, "WORKER_MEMORY_MB", cls.memory_mb),
            max_processes=_lenient_int(env, "WORKER_MAX_PROCESSES", cls.max_processes),
            output_limit_bytes=_lenient_int(env, "OUTPUT_LIMIT_BYTES", cls.output_limit_bytes),
            storage_prefix=env.get("STORAGE_PREFIX") or cls.storage_prefix,
            allow_runtime_deps=_flag(env, "ALLOW_RUNTIME_DEPS"),
            deps_dir=env.get("DEPS_DIR") or None,
            tools_path=env.get("TOOLS_PATH") or None,
            snapshot_max_bytes=min(
                MAX_ATTACHMENT,
                _lenient_int(env, "SNAPSHOT_MAX_BYTES", cls.snapshot_max_bytes),
            ),
        )
