"""`python -m codemode_operator`: run kopf with codemode's settings."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import socket
import sys
from typing import Any

import kopf
from kopf._core.engines.peering import Identity
from prometheus_client import start_http_server

from codemode_operator import PREFIX, allocator, api_session, logs
from codemode_operator.kube import load_config
from codemode_operator.settings import OperatorConfig


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    settings.persistence.finalizer = f"{PREFIX}/finalizer"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=PREFIX)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=PREFIX, key="last-handled-configuration")
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.watching.connect_timeout = 30
    settings.networking.request_timeout = 60
    settings.execution.max_workers = int(os.environ.get("OPERATOR_WORKERS", "32"))
    # Our own Events (transitions, deletions) are posted explicitly; kopf's per-handler
    # "succeeded" lines would be two more API writes per object, so only its warnings go.
    settings.posting.level = logging.WARNING
    settings.peering.standalone = True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m codemode_operator")
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args(argv)
    allocator.limit_arenas()
    cfg = OperatorConfig.from_env()
    logs.configure(args.verbose)
    load_config()
    import codemode_operator.handlers  # noqa: F401  (registers the handlers)

    if cfg.metrics_port:
        start_http_server(cfg.metrics_port)
    namespaces = list(cfg.watch_namespaces)
    api_session.register(len(namespaces))
    asyncio.run(kopf.operator(
        clusterwide=not namespaces,
        namespaces=namespaces,
        standalone=True,
        # kopf's default identity asks getpass.getuser(), which fails for a uid
        # without a passwd entry (any runAsUser in a pod): name ourselves.
        identity=Identity(f"codemode-operator@{socket.gethostname()}"),
    ))
    return 0


if __name__ == "__main__":
    sys.exit(main())
