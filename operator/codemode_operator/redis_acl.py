"""Redis ACL users that confine a workspace's sessions to the workspace's own keys.

The operator holds the admin URL; sessions and Jobs only ever see a URL for a
user whose key patterns are `{prefix}:ws:{id}:*` (read-write) plus the
prefix-wide deps and tools (read-only unless runtime deps are allowed). Even
raw Redis commands from agent code cannot reach another workspace.
"""

from __future__ import annotations

import secrets
from urllib.parse import quote, urlsplit, urlunsplit

import redis
from codemode_session.storage.keys import KeyLayout

# SCAN and RANDOMKEY take no key argument, so ACL key patterns cannot filter them:
# they would reveal other workspaces' key names.
COMMANDS = ["-@all", "+@read", "+@write", "+@transaction", "+@connection", "-@dangerous",
            "-scan", "-randomkey", "-select", "-swapdb", "-move", "-copy", "-migrate", "-rename",
            "-renamenx", "-sort", "-sort_ro", "-script", "-eval", "-evalsha",
            "-eval_ro", "-evalsha_ro", "-fcall", "-fcall_ro", "-function"]


def acl_username(namespace: str, workspace: str) -> str:
    return f"codemode:{namespace}:{workspace}"


def acl_rules(prefix: str, workspace_id: str, password: str, deps_writable: bool) -> list[str]:
    keys = KeyLayout(prefix=prefix, workspace_id=workspace_id)
    shared = "~" if deps_writable else "%R~"
    return [
        "reset", "on", f">{password}", "resetchannels",
        f"~{keys.scope}:*",
        f"{shared}{keys.deps}",
        f"%R~{keys.root}:tools:*",
        *COMMANDS,
    ]


def scoped_url(admin_url: str, username: str, password: str) -> str:
    """The admin URL with its credentials replaced by the workspace user's."""
    parts = urlsplit(admin_url)
    host = parts.hostname or "localhost"
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{quote(username, safe='')}:{quote(password, safe='')}@{host}"
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def new_password() -> str:
    return secrets.token_urlsafe(32)


def _client(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)


def provision(admin_url: str, username: str, rules: list[str]) -> None:
    with _client(admin_url) as client:
        client.execute_command("ACL", "SETUSER", username, *rules)


def deprovision(admin_url: str, username: str) -> None:
    with _client(admin_url) as client:
        client.execute_command("ACL", "DELUSER", username)


def ping(url: str) -> None:
    with _client(url) as client:
        client.ping()


def delete_workspace_keys(admin_url: str, prefix: str, workspace_id: str) -> int:
    """UNLINK every key of the workspace (its scope only; shared deps/tools stay)."""
    keys = KeyLayout(prefix=prefix, workspace_id=workspace_id)
    removed = 0
    with _client(admin_url) as client:
        batch: list[bytes] = []
        for key in client.scan_iter(match=f"{keys.scope}:*", count=1000):
            batch.append(key)
            if len(batch) >= 500:
                removed += int(client.unlink(*batch))
                batch.clear()
        if batch:
            removed += int(client.unlink(*batch))
    return removed
