"""Operator configuration, parsed once at start-up from the environment the Deployment sets.

`python -m codemode_operator` calls `OperatorConfig.from_env()` once and hands the result
to everything that needs it (handlers.register, the kopf settings); no module reads the
environment at import.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass


class ConfigError(ValueError):
    """An environment variable has a value the operator cannot use."""


def _number(
    env: Mapping[str, str], name: str, default: str, kind: type[float] | type[int], minimum: float
) -> float:
    text = env.get(name, default)
    try:
        value = kind(text)
    except ValueError:
        raise ConfigError(f"{name}={text!r} is not a {kind.__name__}") from None
    if value < minimum:
        raise ConfigError(f"{name}={text!r} must be at least {minimum:g}")
    return value


@dataclass(frozen=True)
class OperatorConfig:
    session_image: str
    image_pull_policy: str
    namespace: str
    watch_namespaces: tuple[str, ...]
    metrics_port: int
    session_poll_seconds: float
    library_poll_seconds: float
    workers: int = 32
    # kopf's name for this process; kopf asks getpass.getuser() otherwise, which fails for
    # a uid without a passwd entry (any runAsUser in a pod).
    identity: str = "codemode-operator"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> OperatorConfig:
        env = os.environ if env is None else env
        watch = tuple(n.strip() for n in env.get("WATCH_NAMESPACES", "").split(",") if n.strip())
        return cls(
            session_image=env.get("CODEMODE_SESSION_IMAGE", "localhost/codemode/session:dev"),
            image_pull_policy=env.get("CODEMODE_IMAGE_PULL_POLICY", "IfNotPresent"),
            namespace=env.get("OPERATOR_NAMESPACE", "codemode-system"),
            watch_namespaces=watch,
            metrics_port=int(_number(env, "METRICS_PORT", "8080", int, 0)),
            session_poll_seconds=_number(env, "SESSION_POLL_SECONDS", "5", float, 0.1),
            library_poll_seconds=_number(env, "LIBRARY_POLL_SECONDS", "10", float, 0.1),
            workers=int(_number(env, "OPERATOR_WORKERS", "32", int, 1)),
            identity=env.get("POD_ID") or f"codemode-operator@{socket.gethostname()}",
        )
