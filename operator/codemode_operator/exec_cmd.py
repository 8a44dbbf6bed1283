"""`codemode exec SESSION CODE`: run code in a CodeSession from a shell."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections.abc import Iterator
from typing import Any

from codemode_session.errors import CodemodeError


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "exec", help="run Python code in a CodeSession (created if --workspace is given)"
    )
    parser.add_argument("session", help="CodeSession name")
    parser.add_argument("code", help="Python code, or - to read it from stdin")
    parser.add_argument(
        "-n",
        "--namespace",
        default=None,
        help="namespace (default: the kubeconfig context's, else default)",
    )
    parser.add_argument("-w", "--workspace", help="create the session in this Workspace")
    parser.add_argument("--timeout", type=float, help="execution timeout in seconds")
    parser.add_argument(
        "--wait", type=float, default=120.0, help="seconds to wait for the session to be Ready"
    )
    parser.add_argument("--json", action="store_true", help="print the whole result as JSON")
    parser.set_defaults(func=run)


def _namespace(explicit: str | None) -> str:
    if explicit:
        return explicit
    from kubernetes import config

    try:
        _, context = config.list_kube_config_contexts()  # type: ignore[no-untyped-call]
        return str(context.get("context", {}).get("namespace") or "default")
    except (config.ConfigException, OSError, TypeError):
        return "default"


@contextlib.contextmanager
def _kubernetes_errors() -> Iterator[None]:
    """Say which part of reaching Kubernetes failed, in one line."""
    from kubernetes import config
    from urllib3.exceptions import MaxRetryError

    try:
        yield
    except config.ConfigException as exc:
        raise CodemodeError(f"no usable kubeconfig (set KUBECONFIG): {exc}") from None
    except MaxRetryError as exc:
        server = f"{exc.pool.scheme}://{exc.pool.host}:{exc.pool.port}" if exc.pool else "?"
        reason = str(exc.reason or exc).strip().splitlines()[0]
        raise CodemodeError(
            f"cannot reach the Kubernetes API server at {server}: {reason}"
        ) from None


def run(args: argparse.Namespace) -> int:
    from codemode_operator.sessions import Sessions

    code = sys.stdin.read() if args.code == "-" else args.code
    with _kubernetes_errors():
        sessions = Sessions(namespace=_namespace(args.namespace))
        try:
            with sessions.connect(args.session, args.workspace, timeout=args.wait) as client:
                result = client.execute(code, timeout=args.timeout)
        finally:
            sessions.close()
    if args.json:
        print(json.dumps(result.__dict__, default=str))
        return 0 if result.ok else 1
    if result.stdout:
        sys.stdout.write(result.stdout)
    if result.stderr:
        sys.stderr.write(result.stderr)
    if result.error:
        print(result.error, file=sys.stderr)
        return 1
    if result.value is not None:
        value: Any = result.value
        print(value if isinstance(value, str) else json.dumps(value))
    return 0
