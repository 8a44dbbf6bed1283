"""`codemode sessions list | history | fork | suspend | resume`: durable CodeSessions from
a shell (the Sessions client's methods, one line each)."""

from __future__ import annotations

import argparse
import json
from typing import Any

from codemode_operator.exec_cmd import _kubernetes_errors, _namespace


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "sessions", help="list CodeSessions, read their history, fork, suspend or resume them"
    )
    parser.add_argument("-n", "--namespace", default=None, help="namespace (default: context's)")
    parser.add_argument("--json", action="store_true", help="print JSON")
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = actions.add_parser("list", help="sessions, newest first")
    listing.add_argument("--agent", help="only this agent's (spec.agentId)")
    listing.add_argument("-w", "--workspace", help="only this workspace's")
    history = actions.add_parser("history", help="a session's runs, oldest first")
    history.add_argument("session")
    history.add_argument("--offset", type=int, default=0)
    history.add_argument("--limit", type=int, default=100)
    fork = actions.add_parser("fork", help="a new session from another's latest state")
    fork.add_argument("session")
    fork.add_argument("new_session")
    for name, what in (("suspend", "save the state, delete the pod"), ("resume", "bring it back")):
        action = actions.add_parser(name, help=what)
        action.add_argument("session")
        action.add_argument(
            "--wait", type=float, default=None, help="seconds to wait until it is done"
        )
    parser.set_defaults(func=run)


def _row(obj: dict[str, Any]) -> dict[str, Any]:
    status = obj.get("status") or {}
    return {
        "name": obj["metadata"]["name"],
        "workspace": (obj.get("spec") or {}).get("workspaceRef"),
        "agent": (obj.get("spec") or {}).get("agentId"),
        "phase": status.get("phase"),
        "state_id": status.get("stateId"),
        "last_snapshot": status.get("lastSnapshotTime"),
        "created": obj["metadata"].get("creationTimestamp"),
    }


def run(args: argparse.Namespace) -> int:
    from codemode_operator.sessions import Sessions

    with _kubernetes_errors():
        sessions = Sessions(namespace=_namespace(args.namespace))
        try:
            return _act(sessions, args)
        finally:
            sessions.close()


def _act(sessions: Any, args: argparse.Namespace) -> int:
    if args.action == "list":
        rows = [_row(o) for o in sessions.list(args.agent, args.workspace)]
        if args.json:
            print(json.dumps(rows))
        for row in [] if args.json else rows:
            print(
                f"{row['name']}\t{row['phase'] or '-'}\t{row['workspace']}\t"
                f"{row['agent'] or '-'}\t{row['last_snapshot'] or '-'}"
            )
        return 0
    if args.action == "history":
        page = sessions.history(args.session, args.offset, args.limit)
        if args.json:
            print(json.dumps(page))
            return 0
        for message in page.get("messages", []):
            print(f"[{message.get('timestamp')}] {message.get('role')}: {message.get('content')}")
        return 0
    if args.action == "fork":
        created = sessions.fork(args.session, args.new_session)
        print(json.dumps(_row(created)) if args.json else created["metadata"]["name"])
        return 0
    found = (sessions.suspend if args.action == "suspend" else sessions.resume)(
        args.session, args.wait
    )
    row = _row(found or {"metadata": {"name": args.session}})
    print(json.dumps(row) if args.json else f"{row['name']}\t{row['phase'] or '-'}")
    return 0
