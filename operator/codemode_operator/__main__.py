"""`python -m codemode_operator`: run kopf with codemode's settings."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from typing import Any

import kopf
from prometheus_client import start_http_server

from codemode_operator import PREFIX, allocator, api_session, handlers, logs
from codemode_operator.kube import load_config
from codemode_operator.settings import ConfigError, OperatorConfig


def configure(settings: kopf.OperatorSettings, cfg: OperatorConfig) -> None:
    settings.persistence.finalizer = f"{PREFIX}/finalizer"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=PREFIX)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=PREFIX, key="last-handled-configuration"
    )
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.watching.connect_timeout = 30
    settings.networking.request_timeout = 60
    settings.execution.max_workers = cfg.workers
    # Our own Events (transitions, deletions) are posted explicitly; kopf's per-handler
    # "succeeded" lines would be two more API writes per object, so only its warnings go.
    settings.posting.level = logging.WARNING
    settings.peering.standalone = True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m codemode_operator")
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args(argv)
    allocator.limit_arenas()
    try:
        cfg = OperatorConfig.from_env()  # the one read of the environment
    except ConfigError as exc:
        parser.error(str(exc))
    logs.configure(args.verbose)
    load_config()
    handlers.register(cfg)

    @kopf.on.startup()
    def startup(settings: kopf.OperatorSettings, **_: Any) -> None:
        configure(settings, cfg)

    # kopf names itself after POD_ID when set (its in-cluster convention), else after
    # getpass.getuser(), which fails for a uid without a passwd entry (any runAsUser).
    os.environ["POD_ID"] = cfg.identity
    if cfg.metrics_port:
        start_http_server(cfg.metrics_port)
    namespaces = list(cfg.watch_namespaces)
    api_session.register(len(namespaces))
    asyncio.run(
        kopf.operator(
            clusterwide=not namespaces,
            namespaces=namespaces,
            standalone=True,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
