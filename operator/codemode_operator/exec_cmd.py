"""`codemode exec SESSION CODE`: run code in a CodeSession from a shell."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "exec", help="run Python code in a CodeSession (created if --workspace is given)")
    parser.add_argument("session", help="CodeSession name")
    parser.add_argument("code", help="Python code, or - to read it from stdin")
    parser.add_argument("-n", "--namespace", default=None,
                        help="namespace (default: the kubeconfig context's, else default)")
    parser.add_argument("-w", "--workspace", help="create the session in this Workspace")
    parser.add_argument("--timeout", type=float, help="execution timeout in seconds")
    parser.add_argument("--wait", type=float, default=120.0,
                        help="seconds to wait for the session to be Ready")
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


def run(args: argparse.Namespace) -> int:
    from codemode_operator.sessions import Sessions

    code = sys.stdin.read() if args.code == "-" else args.code
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
