"""Redis ACL users that confine a workspace's sessions to the workspace's own keys.

The operator holds the admin URL; sessions and Jobs only ever see a URL for a
user whose key patterns are `{prefix}:ws:{id}:*` (read-write) plus the
prefix-wide deps and tools (read-only unless runtime deps are allowed). Key
patterns only filter commands that name keys, so the user gets an allow-list of
commands: none that reveals key names, counts, sizes or values outside those
patterns (SCAN, DBSIZE, INFO, client tracking, pub/sub...) or that affects
other clients. This module also holds the operator's other admin-side Redis
calls (usage of a workspace, deleting its keys).
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import redis
from codemode_session.storage.artifact_redis import SAVE_SCRIPT, SAVE_SHA
from codemode_session.storage.keys import KeyLayout


def _table(groups: Mapping[str, str]) -> dict[str, str]:
    """{reason: "cmd cmd|sub ..."} -> {command: reason}."""
    return {name: why for why, names in groups.items() for name in names.split()}


# Every command of redis-server 7.0 is decided here (tests/integration/test_redis_acl.py
# fails on a command of the server's table that is in neither list). The user gets ALLOWED
# only; anything else, including commands of later Redis versions, is denied by `-@all`.
# A `cmd|sub` entry is that subcommand only; a bare `cmd` in DENIED covers all of its
# subcommands.
# Each reason stays next to its commands, as written:
# fmt: off
ALLOWED = _table({
    "redis-py's handshake and health checks (CLIENT SETINFO exists from Redis 7.2)":
        "ping client|setname client|setinfo",
    "RedisStorage's optimistic transactions":
        "multi exec discard watch unwatch",
    "per-key commands on the workspace's own keys (key patterns check each key)":
        "del unlink exists type ttl pttl expire pexpire expireat pexpireat persist "
        "expiretime pexpiretime",
    "strings: artifacts and counters":
        "get set setnx setex psetex mget mset msetnx getdel getex getset strlen append "
        "incr incrby incrbyfloat decr decrby getrange substr",
    "hashes: workflows, owners, libraries, artifact index, usage, Agentix sessions":
        "hdel hexists hget hgetall hincrby hincrbyfloat hkeys hlen hmget hmset hscan hset "
        "hsetnx hstrlen hvals",
    "sets: deps":
        "sadd scard sdiff sdiffstore sinter sintercard sinterstore sismember smembers "
        "smismember smove spop srem sscan sunion sunionstore",
    "lists: Agentix messages":
        "lindex linsert llen lmove lmpop lpop lpos lpush lpushx lrange lrem lset ltrim rpop "
        "rpoplpush rpush rpushx",
    "sorted sets: Agentix session index":
        "zadd zcard zcount zdiff zdiffstore zincrby zinter zintercard zinterstore zlexcount "
        "zmpop zmscore zpopmax zpopmin zrange zrangebylex zrangebyscore zrangestore zrank "
        "zrem zremrangebylex zremrangebyrank zremrangebyscore zrevrange zrevrangebylex "
        "zrevrangebyscore zrevrank zscan zscore zunion zunionstore",
})

DENIED = _table({
    "takes no key, so key patterns cannot filter it: reveals other workspaces' key names, "
    "key counts or memory use (MEMORY USAGE, which takes a key, is not needed either)":
        "keys scan randomkey dbsize info memory",
    "client tracking: invalidation pushes (BCAST above all) name other workspaces' keys":
        "client|tracking client|caching client|getredir client|trackinginfo",
    "shows or changes other clients' connections (ids are sequential: CLIENT ID and INFO "
    "count everyone's connections)":
        "client|list client|kill client|pause client|unpause client|unblock client|no-evict "
        "client|no-touch client|id client|info monitor",
    "pub/sub: channel names, subscriber counts and keyspace notifications of every client "
    "(the user has no channels anyway)":
        "publish spublish subscribe psubscribe ssubscribe unsubscribe punsubscribe "
        "sunsubscribe pubsub",
    "whole-server or whole-database state, replication and persistence (DEBUG can also "
    "stall or crash the server; SLOWLOG shows other clients' commands and arguments)":
        "flushall flushdb swapdb config save bgsave bgrewriteaof lastsave shutdown replicaof "
        "slaveof failover sync psync replconf role wait waitaof module cluster readonly "
        "readwrite asking acl slowlog latency debug",
    "other databases: key patterns hold in every database, so another one would be "
    "storage the workspace's usage and dataPolicy never see":
        "select move copy migrate",
    "scripts and functions run for as long as they like with the whole server blocked, "
    "and FUNCTION LIST shows other tenants' code":
        "eval eval_ro evalsha evalsha_ro fcall fcall_ro function script",
    "reads keys that are not its arguments (BY/GET patterns)":
        "sort sort_ro",
    "one call allocates up to 512 MB (offsets) or builds a reply of any size (negative "
    "counts) or blocks the server (LCS): not needed by codemode's storage":
        "setrange setbit bitfield lcs hrandfield srandmember zrandmember",
    "loads a serialized value unchecked, or reads one: not needed":
        "restore restore-asking dump",
    "not needed by codemode's storage or py-code-mode's layout (bitmaps, HyperLogLog, geo, "
    "streams, blocking pops, renames, key internals, own-connection extras, server info)":
        "bitcount bitfield_ro bitop bitpos getbit pfadd pfcount pfmerge pfdebug pfselftest "
        "geoadd geodist geohash geopos georadius georadius_ro georadiusbymember "
        "georadiusbymember_ro geosearch geosearchstore xack xadd xautoclaim xclaim xdel "
        "xgroup xinfo xlen xpending xrange xread xreadgroup xrevrange xsetid xtrim blpop "
        "brpop brpoplpush blmove blmpop bzpopmax bzpopmin bzmpop rename renamenx touch "
        "object client|getname client|reply client|help command echo time lolwut",
})
# fmt: on


# Redis runs these for any user, whatever its rules say. RESET logs the connection in as
# `default`, so that user must require a password (the chart's Redis does).
UNRESTRICTED = _table({"connection setup and teardown, outside ACLs": "auth hello quit reset"})


def decided(command: str) -> bool:
    """Whether `command` (`name` or `name|sub`, lower case) is in one of the lists."""
    parent = command.split("|", 1)[0]
    return (
        command in ALLOWED
        or command in DENIED
        or command in UNRESTRICTED
        or (parent != command and parent in DENIED)
    )


def acl_username(namespace: str, workspace: str) -> str:
    return f"codemode:{namespace}:{workspace}"


def acl_rules(
    prefix: str, workspace_id: str, password: str, commands: Iterable[str] = ALLOWED
) -> list[str]:
    """ACL SETUSER rules; `commands` is ALLOWED, narrowed to what the server knows.

    What every workspace of the prefix shares (deps, tools) is read-only: a session's
    own packages go to its workspace's deps set, inside its scope."""
    keys = KeyLayout(prefix=prefix, workspace_id=workspace_id)
    return [
        "reset",
        "on",
        f">{password}",
        "resetchannels",
        f"~{keys.scope}:*",
        f"%R~{keys.deps}",
        f"%R~{keys.root}:tools:*",
        "-@all",
        *(f"+{name}" for name in sorted(commands)),
        # The one script the user may run: an artifact save in one round trip, within the
        # quota (storage/artifact_redis.SAVE_SCRIPT; `provision` loads it). EVALSHA of any
        # other script, EVAL and SCRIPT stay denied.
        f"+evalsha|{SAVE_SHA}",
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
    client = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
    # redis-py's COMMAND parser fails on the nil that COMMAND INFO answers for unknown names
    client.set_response_callback("COMMAND", lambda response, **_: response)
    return client


def known_commands(client: redis.Redis, names: Iterable[str]) -> list[str]:
    """The `names` this server has: ACL SETUSER refuses an unknown one (CLIENT SETINFO
    before Redis 7.2), and COMMAND INFO answers nil for each of those."""
    wanted = sorted(names)
    infos: list[Any] = client.execute_command(  # type: ignore[no-untyped-call]
        "COMMAND", "INFO", *wanted
    )
    return [name for name, info in zip(wanted, infos, strict=True) if info]


def save_acl(client: redis.Redis) -> bool:
    """ACL SAVE: write the server's users to its `aclfile`, so a restarted Redis has them
    at once (the chart's bundled Redis has one on its data volume). A Redis without an
    aclfile (one you run, a managed one) answers that none is configured: that is fine,
    and False; its users come back only through the operator's Workspace timer."""
    try:
        client.execute_command("ACL", "SAVE")  # type: ignore[no-untyped-call]
    except redis.ResponseError as exc:
        if "not configured to use an ACL file" in str(exc):
            return False
        raise
    return True


def load_save_script(client: redis.Redis) -> bool:
    """SCRIPT LOAD of the artifact save script (lost when Redis restarts: loaded again with
    each provisioning). A Redis that refuses scripts is fine: saves take two round trips."""
    try:
        client.script_load(SAVE_SCRIPT)
    except redis.ResponseError:
        return False
    return True


def _user(client: redis.Redis, username: str) -> Any:
    return client.execute_command("ACL", "GETUSER", username)  # type: ignore[no-untyped-call]


# Users this process has written to an aclfile since it started, with what they were then
# (as ACL GETUSER showed them): a periodic reconcile that changes nothing saves nothing,
# as one ACL SAVE rewrites the whole file (every workspace's user).
_saved: dict[tuple[str, str], Any] = {}


def provision(admin_url: str, username: str, password: str, prefix: str, workspace_id: str) -> None:
    """Create or update the workspace's user (one ACL SETUSER: never half-applied), then
    ACL SAVE when the user was missing (a new workspace, or a Redis that restarted without
    it), is changed, or was not saved by this process yet."""
    with _client(admin_url) as client:
        rules = acl_rules(prefix, workspace_id, password, known_commands(client, ALLOWED))
        before = _user(client, username)
        load_save_script(client)
        client.execute_command("ACL", "SETUSER", username, *rules)
        after = _user(client, username)
        key = (admin_url, username)
        if before is None or _saved.get(key) != after:
            save_acl(client)
            _saved[key] = after


def deprovision(admin_url: str, username: str) -> None:
    with _client(admin_url) as client:
        client.execute_command("ACL", "DELUSER", username)
        save_acl(client)
        _saved.pop((admin_url, username), None)


def ping(url: str) -> None:
    with _client(url) as client:
        client.ping()


@dataclass(frozen=True)
class Usage:
    """What a workspace holds, as the session servers account it (raw Redis replies)."""

    storage_bytes: bytes | None
    artifacts: int
    workflows: int


def read_usage(admin_url: str, prefix: str, workspace_id: str) -> Usage:
    """The usage counter the session servers keep, and the artifact and workflow counts."""
    keys = KeyLayout(prefix=prefix, workspace_id=workspace_id)
    with _client(admin_url) as client, client.pipeline(transaction=False) as pipe:
        pipe.hget(keys.usage, "bytes")
        pipe.hlen(keys.artifact_index)
        pipe.hlen(keys.workflows)
        stored, artifacts, workflows = pipe.execute()
    return Usage(storage_bytes=stored, artifacts=int(artifacts), workflows=int(workflows))


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
