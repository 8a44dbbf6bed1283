"""Artifact save and load in Redis, planned once for both of the server's clients.

The asyncio `RedisStorage` and `SyncArtifacts` (below) read, check and write an artifact
the same way: `save_reads` under WATCH, `save_writes` decides within the quota, and the
writes go in MULTI/EXEC. `SyncArtifacts` exists for speed: a worker's storage thread
(server/storage_thread.py) answers `artifacts.save`/`load` with it directly on blocking
sockets, which costs a fraction of a round trip through the event loop and redis-py's
asyncio client (each of those added about 100 us to a call agent code waits for).
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import urlsplit

import redis
from redis.exceptions import (
    AuthenticationError,
    NoPermissionError,
    NoScriptError,
    ResponseError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from codemode_session.errors import (
    CodemodeError,
    ConflictError,
    ForbiddenError,
    StorageUnavailableError,
)
from codemode_session.names import validate_artifact_name
from codemode_session.storage.base import TRANSACTION_ATTEMPTS, ArtifactInfo
from codemode_session.storage.keys import KeyLayout
from codemode_session.storage.quota import Quota

T = TypeVar("T")
Command = tuple[Any, ...]
CONNECTION_RETRIES = 3  # as the client's own Retry does for single commands

_pack_command: Callable[[Command], bytes] | None
try:
    from hiredis import pack_command as _pack_command
except ImportError:  # an install without the session extra: redis-py packs instead
    _pack_command = None

# hiredis packs in C, but copies every argument into one string (and redis-py's packer
# calls hiredis too when it is installed), which for a large value costs more than the
# round trip: a command with one is packed here, the value sent as its own piece.
_HIREDIS_MAX_ARGUMENT = 16 * 1024


def counter(raw: bytes | str | None) -> int | None:
    """The usage counter's value; None when it was never started (or is not a number)."""
    try:
        return max(0, int(raw)) if raw is not None else None
    except ValueError:
        return None


def loads(raw: bytes | str | None) -> Any:
    """JSON another client (or a corruption) stored; None when it is not JSON."""
    if raw is None:
        return None
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):
        return None


def _resp_pieces(command: Command) -> list[bytes]:
    """One command in RESP as pieces: headers joined, large values by reference."""
    pieces: list[bytes] = []
    head = bytearray(b"*%d\r\n" % len(command))
    for arg in command:
        value = arg if isinstance(arg, bytes) else str(arg).encode()
        head += b"$%d\r\n" % len(value)
        if len(value) > _HIREDIS_MAX_ARGUMENT:
            pieces += [bytes(head), value]
            head = bytearray(b"\r\n")
        else:
            head += value + b"\r\n"
    pieces.append(bytes(head))
    return pieces


def packed(commands: list[Command]) -> list[bytes]:
    """The commands in RESP: small ones packed by hiredis when it is there (redis-py's own
    packer costs ~10 us of Python per command; a save sends nine), large values uncopied,
    and neighbouring small pieces joined (each piece is a send of its own)."""
    pieces: list[bytes] = []
    for command in commands:
        if _pack_command is not None and all(
            not isinstance(arg, bytes | str) or len(arg) <= _HIREDIS_MAX_ARGUMENT for arg in command
        ):
            pieces.append(_pack_command(command))
        else:
            pieces += _resp_pieces(command)
    joined: list[bytes] = []
    small: list[bytes] = []
    for piece in pieces:
        if len(piece) > _HIREDIS_MAX_ARGUMENT:
            if small:
                joined.append(b"".join(small))
                small = []
            joined.append(piece)
        else:
            small.append(piece)
    if small:
        joined.append(b"".join(small))
    return joined


def storage_error(exc: BaseException, where: str) -> CodemodeError | None:
    """What a Redis client's exception means to our callers; None: not a Redis failure."""
    if isinstance(exc, NoPermissionError):
        return ForbiddenError(f"Redis refused the operation: {exc}")
    if isinstance(exc, AuthenticationError):
        return StorageUnavailableError(f"Redis authentication failed at {where}: {exc}")
    if isinstance(exc, RedisConnectionError | RedisTimeoutError | OSError):
        return StorageUnavailableError(f"Redis unreachable at {where}: {exc}")
    if isinstance(exc, ResponseError):
        return StorageUnavailableError(f"Redis error at {where}: {exc}")
    return None


def conflict(verb: str) -> ConflictError:
    return ConflictError(
        f"cannot {verb}: other writers kept changing it ({TRANSACTION_ATTEMPTS} "
        "attempts); nothing was written, try again"
    )


# ---- the plan both clients follow ------------------------------------------------------


def save_size(info: ArtifactInfo, data: bytes) -> tuple[str, int]:
    """The index entry, and what the artifact adds to usage: the description and metadata
    are stored too, so they count like the data."""
    entry = json.dumps(info.index_entry())
    return entry, len(data) + len(entry.encode())


def save_watch(keys: KeyLayout, name: str) -> list[str]:
    return [keys.artifact(name), keys.artifact_index, keys.usage]


def save_reads(keys: KeyLayout, name: str) -> list[Command]:
    return [
        ("STRLEN", keys.artifact(name)),
        ("HSTRLEN", keys.artifact_index, name),
        ("HGET", keys.usage, "bytes"),
    ]


def save_writes(
    keys: KeyLayout,
    name: str,
    data: bytes,
    entry: str,
    size: int,
    reads: list[Any],
    quota: Quota,
    measured: int | None = None,
) -> list[Command] | None:
    """The writes of a save, given what `save_reads` returned; QuotaExceededError when it
    would pass the workspace's limit. None when the usage counter was never started and
    the save grows usage: the caller measures the workspace (RedisStorage does) and asks
    again with `measured`, and the writes then start the counter at the true total."""
    old = int(reads[0]) + int(reads[1])
    used = counter(reads[2])
    delta = size - old
    if used is None and delta > 0 and measured is None:
        return None
    writes: list[Command] = [
        ("SET", keys.artifact(name), data),
        ("HSET", keys.artifact_index, name, entry),
    ]
    if used is None and delta > 0:
        assert measured is not None
        quota.check_bytes(measured + delta, grows=True)
        return [*writes, ("HSET", keys.usage, "bytes", str(measured + delta))]
    quota.check_bytes((used or 0) + delta, grows=delta > 0)
    if used is not None:  # else started, with the true total, by the next write that grows
        writes.append(("HINCRBY", keys.usage, "bytes", delta))
    return writes


def load_reads(keys: KeyLayout, name: str) -> list[Command]:
    return [("GET", keys.artifact(name)), ("HGET", keys.artifact_index, name)]


def loaded(name: str, replies: list[Any]) -> tuple[ArtifactInfo, bytes] | None:
    data, entry = replies
    if data is None:
        return None
    return ArtifactInfo.from_index_entry(name, loads(entry)), bytes(data)


# The same plan as one script, so a save is one round trip instead of two (WATCH and reads,
# then MULTI/EXEC). Replies: {0} saved; {1} the counter never started and the save grows
# usage (the caller measures, as `save_writes` returning None says); {2, after} the quota
# (ARGV[5], -1 for none) would be passed. Workspace users may run this script and no other
# (the operator's ACL rule `+evalsha|SAVE_SHA`; redis_acl.py), and it touches only the
# keys it is given, which the user's key patterns check as for any command.
SAVE_SCRIPT = """
local old = redis.call('STRLEN', KEYS[1]) + redis.call('HSTRLEN', KEYS[2], ARGV[1])
local raw = redis.call('HGET', KEYS[3], 'bytes')
local used = nil
if raw and string.match(raw, '^%-?%d+$') then used = math.max(0, tonumber(raw)) end
local delta = tonumber(ARGV[4]) - old
if used == nil and delta > 0 then return {1} end
local limit = tonumber(ARGV[5])
local after = (used or 0) + delta
if delta > 0 and limit >= 0 and after > limit then return {2, after} end
redis.call('SET', KEYS[1], ARGV[2])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
if used ~= nil then redis.call('HINCRBY', KEYS[3], 'bytes', delta) end
return {0}
"""
SAVE_SHA = hashlib.sha1(SAVE_SCRIPT.encode()).hexdigest()
# After NOSCRIPT or NOPERM (a Redis that restarted and lost its scripts, a user without the
# rule), saves take two round trips for this long before the script is tried again.
SCRIPT_RETRY_SECONDS = 30.0
# Larger values are saved with the transaction: Lua copies its arguments, and for a large
# one that cost more than the round trip it saves (1 MiB: 3.4 ms against 1.9 ms).
SCRIPT_MAX_DATA = 16 * 1024


# ---- the synchronous client -------------------------------------------------------------


def _exchange(conn: Any, commands: list[Command]) -> list[Any]:
    """Send `commands` at once and read every reply in order (an error reply is raised,
    leaving the connection out of step: the caller drops it)."""
    conn.send_packed_command(packed(commands))
    return [conn.read_response() for _ in commands]


def exec_result(answers: list[Any]) -> list[Any] | None:
    """From the replies to MULTI, commands, EXEC: EXEC's replies, or None when a WATCHed
    key changed; a command's error reply is raised."""
    if answers[-1] is None:
        return None
    failed = [r for r in answers[-1] if isinstance(r, Exception)]
    if failed:
        raise failed[0]
    return list(answers[-1])


def _exec(conn: Any, commands: list[Command]) -> list[Any] | None:
    """MULTI, `commands`, EXEC in one round trip (see `exec_result`)."""
    return exec_result(_exchange(conn, [("MULTI",), *commands, ("EXEC",)]))


class SyncArtifacts:
    """`save_artifact`/`load_artifact` of one workspace on blocking sockets, for threads.

    Same keys, quota checks and usage counting as RedisStorage (the plan above), the
    same retry rules: a connection lost mid-exchange is dropped and the attempt reruns
    from fresh reads, so an EXEC that did land is never counted twice. redis-py's
    connection pool is thread-safe, so the storage threads of many workers share one.
    """

    def __init__(self, client: redis.Redis, keys: KeyLayout, quota: Quota, where: str) -> None:
        self._redis = client
        self.keys = keys
        self.quota = quota
        self._where = where
        self._script_off_until = 0.0

    @classmethod
    def from_url(
        cls, url: str, keys: KeyLayout, quota: Quota, where: str, socket_timeout: float
    ) -> SyncArtifacts | None:
        """None for a URL this client does not take (the asyncio path serves it then)."""
        if urlsplit(url).scheme not in ("redis", "rediss", "unix"):
            return None
        client = redis.Redis.from_url(
            url,
            socket_timeout=socket_timeout,
            socket_connect_timeout=socket_timeout,
            health_check_interval=10,
            socket_read_size=1 << 20,
        )
        return cls(client, keys, quota, where)

    def close(self) -> None:
        self._redis.close()

    def save_artifact(self, info: ArtifactInfo, data: bytes) -> bool:
        """True when saved; False when the usage counter must be measured first (rare:
        data another client wrote): the caller saves through RedisStorage then."""
        validate_artifact_name(info.name)
        entry, size = save_size(info, data)
        self.quota.check_artifact(info.name, size)
        keys = self.keys
        if len(data) <= SCRIPT_MAX_DATA and time.monotonic() >= self._script_off_until:
            scripted = self._save_scripted(info.name, data, entry, size)
            if scripted is not None:
                return scripted
        first = [("WATCH", *save_watch(keys, info.name)), *save_reads(keys, info.name)]

        def attempt(conn: Any) -> list[Any] | bool | None:
            replies = _exchange(conn, first)
            try:
                writes = save_writes(keys, info.name, data, entry, size, replies[1:], self.quota)
            except BaseException:
                conn.send_command("UNWATCH")
                conn.read_response()
                raise
            if writes is None:
                conn.send_command("UNWATCH")
                conn.read_response()
                return False
            return _exec(conn, writes)

        return self._on_connection(attempt, f"save artifact {info.name!r}") is not False

    def _save_scripted(self, name: str, data: bytes, entry: str, size: int) -> bool | None:
        """The save in one round trip (SAVE_SCRIPT); None when the script cannot run here
        (then the two-round-trip save runs, and the script is left alone for a while)."""
        limit = -1 if self.quota.max_bytes is None else self.quota.max_bytes
        command = (
            "EVALSHA",
            SAVE_SHA,
            3,
            *save_watch(self.keys, name),
            name,
            data,
            entry,
            size,
            limit,
        )

        def attempt(conn: Any) -> list[Any]:
            return _exchange(conn, [command])

        try:
            replies = self._on_connection(attempt, f"save artifact {name!r}")
        except NoScriptError:
            if not self._load_script():
                return None
            return self._save_scripted(name, data, entry, size)
        except ForbiddenError:  # NOPERM: this user may not run it
            self._script_off_until = time.monotonic() + SCRIPT_RETRY_SECONDS
            return None
        assert isinstance(replies, list)
        reply = replies[0]
        code = int(reply[0])
        if code == 2:
            self.quota.check_bytes(int(reply[1]), grows=True)
        return code == 0

    def _load_script(self) -> bool:
        """SCRIPT LOAD, for a user that may (a server run by hand with an admin URL); the
        operator loads it for workspace users, which may not."""
        try:
            self._redis.script_load(SAVE_SCRIPT)
        except (NoPermissionError, ResponseError):
            self._script_off_until = time.monotonic() + SCRIPT_RETRY_SECONDS
            return False
        return True

    def load_artifact(self, name: str) -> tuple[ArtifactInfo, bytes] | None:
        validate_artifact_name(name)
        reads = load_reads(self.keys, name)
        replies = self._on_connection(lambda conn: _exec(conn, reads), f"load artifact {name!r}")
        assert isinstance(replies, list)
        return loaded(name, replies)

    def _on_connection(
        self, attempt: Callable[[Any], list[Any] | bool | None], verb: str
    ) -> list[Any] | bool:
        """Run `attempt` on one pooled connection; None from it means "decide again"."""
        pool = self._redis.connection_pool
        lost = 0
        try:
            for _ in range(TRANSACTION_ATTEMPTS):
                conn: Any = pool.get_connection()
                try:
                    result = attempt(conn)
                except (RedisConnectionError, RedisTimeoutError, OSError):
                    conn.disconnect()
                    lost += 1
                    if lost > CONNECTION_RETRIES:
                        raise
                    time.sleep(0.05 * lost)
                    continue
                except BaseException:
                    conn.disconnect()
                    raise
                finally:
                    pool.release(conn)
                if result is not None:
                    return result
        except (CodemodeError, NoScriptError):
            raise
        except Exception as exc:
            mapped = storage_error(exc, self._where)
            if mapped is None:
                raise
            raise mapped from None
        raise conflict(verb)


class SyncArtifactsCache:
    """One SyncArtifacts per storage, made on first use by whichever thread asks first."""

    def __init__(self, make: Callable[[], SyncArtifacts | None]) -> None:
        self._make = make
        self._lock = threading.Lock()
        self._made = False
        self._value: SyncArtifacts | None = None

    def get(self) -> SyncArtifacts | None:
        if not self._made:
            with self._lock:
                if not self._made:
                    self._value = self._make()
                    self._made = True
        return self._value

    def close(self) -> None:
        with self._lock:
            if self._value is not None:
                self._value.close()
            self._value, self._made = None, True
