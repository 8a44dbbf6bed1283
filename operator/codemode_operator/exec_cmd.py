"""`codemode exec SESSION CODE`: run code in a CodeSession from a shell."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections.abc import Callable, Iterator
from typing import Any

from codemode_session.errors import CodemodeError

TRUNCATED = "\n[output truncated"


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
    from codemode_session.results import ExecuteResult

    from codemode_operator import exec_cache

    code = sys.stdin.read() if args.code == "-" else args.code
    # Output is printed as the code runs, unless the whole result is asked for as JSON.
    on_output = None if args.json else _print_output
    from codemode_operator import gateway_client

    found = None
    # The gateway is the fast path when there is one; creating a session needs Kubernetes.
    if not args.workspace and not gateway_client.configured():
        found = exec_cache.try_execute(args.namespace, args.session, code, args.timeout, on_output)
    result = (
        ExecuteResult.from_json(found)
        if found is not None
        else _through_kubernetes(args, code, on_output)
    )
    return _print(result, args.json, printed=on_output is not None)


def _print_output(stream: str, text: str) -> None:
    out = sys.stderr if stream == "stderr" else sys.stdout
    out.write(text)
    out.flush()


def _through_kubernetes(
    args: argparse.Namespace, code: str, on_output: Callable[[str, str], None] | None
) -> Any:
    """The slow path: find (or create) the session through the API server, run the code,
    and remember the session's address for the next call."""
    from codemode_session.client import SessionClient

    from codemode_operator import exec_cache
    from codemode_operator.sessions import Sessions

    with _kubernetes_errors():
        sessions = Sessions(namespace=_namespace(args.namespace))
        try:
            url, token = sessions.address(args.session, args.workspace, timeout=args.wait)
            # Through the gateway there may be no kubeconfig: the session is not read.
            status = {} if sessions.gateway else (sessions.get(args.session) or {}).get("status")
            # Remembered: the server session the next calls use (left open for them); a
            # port-forward or the gateway is not remembered, so its session is ended.
            kept = not sessions.gateway and exec_cache.cacheable(url, (status or {}).get("stateId"))
            server_session = exec_cache.session_id(args.namespace, args.session) if kept else None
            with SessionClient(url, token=token, session_id=server_session) as client:
                try:
                    result = _run(client, code, args.timeout, on_output)
                finally:
                    if not kept:
                        with contextlib.suppress(Exception):  # the pod may be gone
                            client.end_session()
            if kept:
                with contextlib.suppress(OSError):
                    exec_cache.remember(
                        args.namespace,
                        args.session,
                        url,
                        token,
                        (status or {}).get("stateId"),
                        server_session,
                    )
        finally:
            sessions.close()
    return result


def _run(
    client: Any, code: str, timeout: float | None, on_output: Callable[[str, str], None] | None
) -> Any:
    from codemode_session.client import Output

    if on_output is None:
        return client.execute(code, timeout=timeout)
    result = None
    for item in client.execute_stream(code, timeout=timeout):
        if isinstance(item, Output):
            on_output(item.stream, item.text)
        else:
            result = item
    if result is None:
        raise CodemodeError("/execute's stream ended without a result")
    return result


def _print(result: Any, as_json: bool, printed: bool = False) -> int:
    """The result as the user asked; `printed`: its output went out as the code ran."""
    if as_json:
        print(json.dumps(result.__dict__, default=str))
        return 0 if result.ok else 1
    if result.stdout and not printed:
        sys.stdout.write(result.stdout)
    if result.stderr and not printed:
        sys.stderr.write(result.stderr)
    if printed:  # what was cut off was never streamed: say so once
        for text in (result.stdout, result.stderr):
            if TRUNCATED in (text or ""):
                print(TRUNCATED + text.rsplit(TRUNCATED, 1)[1], file=sys.stderr)
    if result.error:
        print(result.error, file=sys.stderr)
        return 1
    if result.value is not None:
        value: Any = result.value
        print(value if isinstance(value, str) else json.dumps(value))
    return 0
