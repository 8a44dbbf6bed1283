"""Operator configuration, from the environment the Deployment sets."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class OperatorConfig:
    session_image: str
    image_pull_policy: str
    namespace: str
    watch_namespaces: tuple[str, ...]
    metrics_port: int
    session_poll_seconds: float
    library_poll_seconds: float

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> OperatorConfig:
        env = os.environ if env is None else env
        watch = tuple(n.strip() for n in env.get("WATCH_NAMESPACES", "").split(",") if n.strip())
        return cls(
            session_image=env.get("CODEMODE_SESSION_IMAGE", "localhost/codemode/session:dev"),
            image_pull_policy=env.get("CODEMODE_IMAGE_PULL_POLICY", "IfNotPresent"),
            namespace=env.get("OPERATOR_NAMESPACE", "codemode-system"),
            watch_namespaces=watch,
            metrics_port=int(env.get("METRICS_PORT", "8080")),
            session_poll_seconds=float(env.get("SESSION_POLL_SECONDS", "5")),
            library_poll_seconds=float(env.get("LIBRARY_POLL_SECONDS", "10")),
        )
