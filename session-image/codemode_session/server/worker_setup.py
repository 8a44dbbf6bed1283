"""How the server sets up the workers of its sessions (isolation decided in one place)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Mapping

from codemode_session.deps_install import pip_install, reset_folder, verify_folder
from codemode_session.server.config import ServerConfig
from codemode_session.server.storage_broker import StorageBroker
from codemode_session.storage.base import Storage
from codemode_session.workers import WorkerPool, worker_env


def sole_session(config: ServerConfig) -> bool:
    """PID 1 of a one-session pod: everything else in the container is agent code's."""
    return os.getpid() == 1 and config.max_sessions == 1


def build_pool(
    environ: Mapping[str, str], config: ServerConfig, storage_for: Callable[[str | None], Storage]
) -> WorkerPool:
    deps_dir = config.deps_dir
    if deps_dir:
        reset_folder(deps_dir)  # a restarted container's leftovers are not ours

    async def install(specs: list[str]) -> None:
        await asyncio.to_thread(pip_install, specs, deps_dir)

    async def check_deps() -> None:
        await asyncio.to_thread(verify_folder, deps_dir)

    broker = StorageBroker(storage_for, config.allow_runtime_deps, install, config.tools_path)
    return WorkerPool(
        worker_env(environ),
        spares=config.worker_spares,
        broker=broker,
        sole=sole_session(config),
        before_handout=check_deps,
        use_template=config.worker_template,
    )
