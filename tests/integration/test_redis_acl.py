"""A workspace's Redis user, provisioned with the operator's real rules on a real
redis-server: every command that would show or touch more than its own keys is refused,
client tracking tells it nothing about another workspace, and codemode's storage and the
store CLI still do all they do.

The server has a password on `default`, as the chart's Redis does, and is this module's
own: a command that got through by mistake (SHUTDOWN, FLUSHALL) harms no other test.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
from codemode_operator import redis_acl
from codemode_session.cli.main import main
from codemode_session.errors import ForbiddenError
from codemode_session.storage import ArtifactInfo, LibraryRecord, RedisStorage
from codemode_session.storage.artifact_redis import SAVE_SHA
from codemode_session.storage.keys import KeyLayout
from codemode_session.workflow_model import parse_workflow

from tests.conftest import RedisServer

pytestmark = pytest.mark.redis

PREFIX = "acl"
ADMIN_PASSWORD = "admin-secret"
SRC = "async def run(n: int = 1):\n    return n\n"
PROTECTED = ("debug", "module")  # off by default in Redis 7 (enable-debug/module-command)


@dataclass(frozen=True)
class Tenant:
    workspace_id: str
    username: str
    password: str
    url: str

    @property
    def keys(self) -> KeyLayout:
        return KeyLayout(PREFIX, self.workspace_id)


@dataclass(frozen=True)
class Env:
    server: RedisServer
    alpha: Tenant
    beta: Tenant

    def admin(self) -> redis.Redis:
        return redis.Redis.from_url(self.server.url, socket_timeout=5)


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    server = RedisServer(tmp_path_factory.mktemp("acl-redis"), password=ADMIN_PASSWORD)
    tenants = []
    for workspace_id in ("alpha", "beta"):
        username = redis_acl.acl_username("team", workspace_id)
        password = redis_acl.new_password()
        redis_acl.provision(server.url, username, password, PREFIX, workspace_id)
        tenants.append(
            Tenant(
                workspace_id,
                username,
                password,
                redis_acl.scoped_url(server.url, username, password),
            )
        )
    yield Env(server, *tenants)
    server.stop()


# ---- a small RESP2/RESP3 client: what any agent with the credentials could speak -------


class RespError(Exception):
    pass


class Resp:
    """One raw connection; replies are parsed, pushes (`>`) come back as ("push", [...])."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.file = self.sock.makefile("rb")

    def close(self) -> None:
        self.file.close()
        self.sock.close()

    def send(self, *args: str | bytes) -> None:
        out = [b"*%d\r\n" % len(args)]
        for arg in args:
            data = arg.encode() if isinstance(arg, str) else arg
            out.append(b"$%d\r\n%s\r\n" % (len(data), data))
        self.sock.sendall(b"".join(out))

    def call(self, *args: str | bytes) -> Any:
        self.send(*args)
        return self.read()

    def read(self) -> Any:
        line = self.file.readline()
        if not line:
            raise ConnectionError("server closed the connection")
        kind, rest = line[:1], line[1:-2]
        if kind in (b"+", b"("):
            return rest.decode()
        if kind in (b"-", b"!"):
            if kind == b"!":
                rest = self.file.read(int(rest) + 2)[:-2]
            raise RespError(rest.decode())
        if kind == b":":
            return int(rest)
        if kind in (b"$", b"="):
            if int(rest) < 0:
                return None
            return self.file.read(int(rest) + 2)[:-2]
        if kind == b"_":
            return None
        if kind in (b",", b"#"):
            return rest.decode()
        if kind in (b"*", b"~", b">"):
            items = [self.read() for _ in range(max(0, int(rest)))]
            return ("push", items) if kind == b">" else items
        if kind in (b"%", b"|"):
            pairs = {}
            for _ in range(int(rest)):
                key = self.read()
                pairs[key if not isinstance(key, list) else str(key)] = self.read()
            if kind == b"|":  # an attribute precedes the real reply
                return self.read()
            return pairs
        raise AssertionError(f"unexpected RESP line {line!r}")

    def pending(self, wait: float) -> bytes:
        """Whatever the server sent without being asked, within `wait` seconds."""
        self.sock.settimeout(wait)
        try:
            return self.sock.recv(65536)
        except TimeoutError:
            return b""
        finally:
            self.sock.settimeout(5)


@pytest.fixture
def as_alpha(env: Env) -> Iterator[Resp]:
    conn = Resp(env.server.port)
    conn.call("HELLO", "3", "AUTH", env.alpha.username, env.alpha.password)
    yield conn
    conn.close()


def _server_commands(env: Env) -> list[tuple[str, int]]:
    """(name, arity) of every command and subcommand this redis-server has."""
    with env.admin() as admin:
        admin.set_response_callback("COMMAND", lambda response, **_: response)
        table: list[list[Any]] = admin.execute_command("COMMAND")
    found: list[tuple[str, int]] = []
    for entry in table:
        subcommands = entry[9] if len(entry) > 9 else []
        for item in subcommands or [entry]:
            found.append((item[0].decode().lower(), int(item[1])))
    return sorted(found)


def _probe(name: str, arity: int, key: str) -> list[str]:
    """The command with as many arguments as its arity needs, all of them an own key, so a
    refusal can only be about the command itself."""
    words = name.split("|")
    return [*words, *[key] * max(0, abs(arity) - len(words))]


# ---- the allow-list ------------------------------------------------------------------------


def test_every_command_of_this_server_is_decided(env: Env) -> None:
    """A Redis upgrade that brings commands nobody decided on fails here (they are denied
    until someone does)."""
    commands = _server_commands(env)
    assert len(commands) > 200
    undecided = [name for name, _ in commands if not redis_acl.decided(name)]
    assert not undecided, f"decide these in redis_acl.ALLOWED or DENIED: {undecided}"


def test_the_user_runs_exactly_the_allowed_commands(env: Env) -> None:
    """ACL DRYRUN asks the server's own ACL check, for every command it has."""
    key = env.alpha.keys.artifact("probe")
    wrong = []
    with env.admin() as admin:
        for name, arity in _server_commands(env):
            if name in redis_acl.UNRESTRICTED:
                continue
            answer = admin.execute_command(
                "ACL", "DRYRUN", env.alpha.username, *_probe(name, arity, key)
            )
            allowed = answer == b"OK"
            if allowed != (name in redis_acl.ALLOWED):
                wrong.append((name, answer))
    assert not wrong


def test_denied_commands_are_refused_when_tried(env: Env) -> None:
    """Each denied command, sent for real as the workspace user: refused, by name."""
    key = env.alpha.keys.artifact("probe")
    got_through = []
    conn = Resp(env.server.port)
    conn.call("HELLO", "3", "AUTH", env.alpha.username, env.alpha.password)
    try:
        for name, arity in _server_commands(env):
            if name in redis_acl.ALLOWED or name in redis_acl.UNRESTRICTED:
                continue
            try:
                reply = conn.call(*_probe(name, arity, key))
            except RespError as exc:
                message = str(exc)
                if f"no permissions to run the '{name}' command" in message:
                    continue
                if name.split("|")[0] in PROTECTED and "command not allowed" in message:
                    continue  # refused even before ACLs (enable-*-command); DRYRUN covers it
                got_through.append((name, message))
            else:
                got_through.append((name, reply))
            conn.close()  # whatever it did to the connection, start from a clean one
            conn = Resp(env.server.port)
            conn.call("HELLO", "3", "AUTH", env.alpha.username, env.alpha.password)
    finally:
        conn.close()
    assert not got_through
    assert env.admin().ping()  # nothing shut the server down


def test_the_issue_cases_dbsize_keys_scan_info(env: Env, as_alpha: Resp) -> None:
    with env.admin() as admin:
        admin.set(env.beta.keys.artifact("plan"), b"beta's")
    for command in (
        ["DBSIZE"],
        ["KEYS", "*"],
        ["SCAN", "0"],
        ["RANDOMKEY"],
        ["INFO"],
        ["INFO", "keyspace"],
        ["MEMORY", "STATS"],
        ["CLIENT", "LIST"],
        ["PUBSUB", "CHANNELS"],
        ["OBJECT", "FREQ", env.alpha.keys.artifact("x")],
        ["SUBSCRIBE", "__keyspace@0__:*"],
        ["CLIENT", "KILL", "TYPE", "normal"],
        ["CLIENT", "PAUSE", "1000"],
        ["CLIENT", "NO-EVICT", "on"],
        ["WAIT", "0", "0"],
        ["SELECT", "1"],
        ["FUNCTION", "LIST"],
        ["LATENCY", "LATEST"],
        ["CONFIG", "GET", "*"],
    ):
        with pytest.raises(RespError, match=r"^NOPERM"):
            as_alpha.call(*command)
    with pytest.raises(RespError, match=r"^NOPERM this user has no permissions to access"):
        as_alpha.call("GET", env.beta.keys.artifact("plan"))


# ---- client tracking ---------------------------------------------------------------------


def test_client_tracking_tells_alpha_nothing_about_beta(env: Env, as_alpha: Resp) -> None:
    own = env.alpha.keys.artifact("mine")
    beta_key = env.beta.keys.artifact("secret-plan")
    watcher = Resp(env.server.port)  # the control: the same probe, as the admin
    try:
        watcher.call("HELLO", "3", "AUTH", "default", ADMIN_PASSWORD)
        assert watcher.call("CLIENT", "TRACKING", "ON", "BCAST") == "OK"

        redirect = str(watcher.call("CLIENT", "ID"))
        for mode in (
            ["ON", "BCAST"],
            ["ON"],
            ["ON", "OPTIN"],
            ["ON", "OPTOUT"],
            ["ON", "BCAST", "PREFIX", f"{PREFIX}:ws:beta:"],
            ["ON", "BCAST", "PREFIX", f"{PREFIX}:ws:alpha:"],
            ["ON", "REDIRECT", redirect],
        ):
            with pytest.raises(RespError, match=r"no permissions to run the 'client\|tracking'"):
                as_alpha.call("CLIENT", "TRACKING", *mode)
        for command in (
            ["CLIENT", "CACHING", "yes"],
            ["CLIENT", "GETREDIR"],
            ["CLIENT", "TRACKINGINFO"],
        ):
            with pytest.raises(RespError, match=r"^NOPERM"):
                as_alpha.call(*command)

        assert as_alpha.call("SET", own, "v") == "OK"
        assert as_alpha.call("GET", own) == b"v"  # a read that default tracking would track
        with redis.Redis.from_url(env.beta.url) as beta:
            beta.set(beta_key, b"launch at dawn")
        with env.admin() as admin:
            admin.set(own, b"changed by someone else")

        seen = b""
        for _ in range(20):  # the control sees beta's key name: the probe can see a leak
            seen += watcher.pending(0.2)
            if b"secret-plan" in seen:
                break
        assert b"secret-plan" in seen
        assert as_alpha.pending(0.5) == b""
        assert as_alpha.call("PING") == "PONG"  # and no push was queued ahead of the reply
    finally:
        watcher.close()


def test_reset_cannot_be_denied_but_leaves_a_logged_out_connection(
    env: Env, as_alpha: Resp
) -> None:
    """RESET is outside ACLs and logs in as `default`, which needs a password here."""
    assert as_alpha.call("RESET") == "RESET"
    with pytest.raises(RespError, match=r"^NOAUTH"):
        as_alpha.call("GET", env.alpha.keys.artifact("x"))


# ---- what codemode needs still works -----------------------------------------------------


@pytest.mark.parametrize("protocol", [2, 3])
def test_redis_py_connects_and_names_its_connection(env: Env, protocol: int) -> None:
    with redis.Redis.from_url(env.alpha.url, protocol=protocol, client_name="session-s1") as client:
        assert client.ping()
        client.set(env.alpha.keys.artifact("hello"), b"x")
        assert client.get(env.alpha.keys.artifact("hello")) == b"x"


async def test_redis_storage_does_everything_as_the_workspace_user(env: Env) -> None:
    store = RedisStorage(env.alpha.url, prefix=PREFIX, workspace_id="alpha")
    other = RedisStorage(env.beta.url, prefix=PREFIX, workspace_id="beta")
    try:
        await store.ping()
        await store.save_workflow(parse_workflow("double", SRC))
        found = await store.get_workflow("double")
        assert found is not None and found.source == SRC
        assert [w.name for w in await store.list_workflows()] == ["double"]

        await store.save_artifact(
            ArtifactInfo("report.json", metadata={"_data_type": "json"}), b'{"n": 1}'
        )
        loaded = await store.load_artifact("report.json")
        assert loaded is not None and loaded[1] == b'{"n": 1}'
        assert [a.name for a in await store.list_artifacts()] == ["report.json"]
        assert await store.get_artifact("report.json") is not None

        await store.apply_library(
            "lib",
            [parse_workflow("from_git", SRC)],
            [],
            LibraryRecord(revision="abc", digest="d", count=1, synced_at=1.0),
        )
        assert await store.workflow_owners() == {"from_git": "lib"}
        assert (await store.get_library("lib")) is not None

        async def read_all(txn: Any) -> tuple[Any, ...]:
            return (
                await txn.workflow_owners(),
                await txn.list_tools(),
                await txn.list_deps(),
                await txn.get_workflows(["double"]),
            )

        owners, tools, deps, workflows = await store.transaction(read_all, "read")
        assert owners == {"from_git": "lib"} and tools == {} and deps == []
        assert workflows["double"] is not None
        assert await store.list_deps() == [] and await store.list_tools() == {}

        assert await store.delete_workflow("double") is True
        assert await store.delete_artifact("report.json") is True

        # a workspace adds packages to its own set; the shared deps and tools are read-only
        admin = env.admin()
        admin.sadd(KeyLayout(PREFIX).deps, "shared-pkg")
        assert await store.add_dep("pandas") is True
        assert await store.list_deps() == ["pandas", "shared-pkg"]
        with pytest.raises(ForbiddenError, match="shared by every workspace"):
            await store.remove_dep("shared-pkg")
        assert await store.remove_dep("pandas") is True
        assert admin.smembers(KeyLayout(PREFIX).deps) == {b"shared-pkg"}
        with pytest.raises(ForbiddenError):
            await store.save_tool("curl", "name: curl\n")
        # and beta sees none of alpha's
        assert await other.list_workflows() == []
        assert await other.list_artifacts() == []
    finally:
        await store.close()
        await other.close()


def test_store_cli_bootstrap_runs_as_the_workspace_user(
    env: Env, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """What a WorkflowLibrary's sync Job runs, with the credentials it gets."""
    folder = tmp_path / "flows"
    folder.mkdir()
    (folder / "triple.py").write_text('"""Triples n."""\n' + SRC)
    target = ["--redis-url", env.alpha.url, "--prefix", PREFIX, "--workspace-id", "alpha"]
    assert (
        main(["store", "bootstrap", "--library", "cli-lib", "--folder", str(folder), *target]) == 0
    )
    assert main(["store", "list", "--json", *target]) == 0
    assert "triple" in capsys.readouterr().out
    assert main(["store", "bootstrap", "--library", "cli-lib", "--delete", *target]) == 0


def test_shared_deps_read_only_own_deps_writable(env: Env) -> None:
    username = redis_acl.acl_username("team", "gamma")
    password = redis_acl.new_password()
    redis_acl.provision(env.server.url, username, password, PREFIX, "gamma")
    url = redis_acl.scoped_url(env.server.url, username, password)
    keys = KeyLayout(PREFIX, "gamma")
    with redis.Redis.from_url(url) as gamma:
        assert gamma.sadd(keys.workspace_deps, "pandas") == 1
        assert gamma.smembers(keys.deps) is not None
        with pytest.raises(redis.exceptions.NoPermissionError):
            gamma.sadd(keys.deps, "pandas")
        with pytest.raises(redis.exceptions.NoPermissionError):
            gamma.hset(KeyLayout(PREFIX, "gamma").tools, "t", "x")
        with pytest.raises(redis.exceptions.NoPermissionError):
            gamma.dbsize()


async def test_the_user_runs_the_save_script_and_no_other(env: Env) -> None:
    """The one script (an artifact save in one round trip) runs as the workspace user; any
    other script is refused, and a Redis that lost its scripts still saves, in two round
    trips, until the operator loads the script again."""
    store = RedisStorage(env.alpha.url, prefix=PREFIX, workspace_id="alpha")
    try:
        fast = store.sync_artifacts()
        assert fast is not None
        await store.save_artifact(ArtifactInfo("start.bin"), b"s")  # starts the counter
        before = env.admin().info("commandstats").get("cmdstat_evalsha", {}).get("calls", 0)
        assert fast.save_artifact(ArtifactInfo("scripted.bin"), b"x" * 10)
        after = env.admin().info("commandstats").get("cmdstat_evalsha", {}).get("calls", 0)
        assert after == before + 1
        found = fast.load_artifact("scripted.bin")
        assert found is not None and found[1] == b"x" * 10

        user = redis.Redis.from_url(env.alpha.url, socket_timeout=5)
        sha = env.admin().script_load("return redis.call('GET', KEYS[1])")
        for denied in (("EVALSHA", sha, 1, "x"), ("EVAL", "return 1", 0), ("SCRIPT", "FLUSH")):
            with pytest.raises(redis.exceptions.NoPermissionError):
                user.execute_command(*denied)

        env.admin().script_flush()  # as after a restart: the script is gone
        assert fast.save_artifact(ArtifactInfo("unscripted.bin"), b"y" * 10)
        again = fast.load_artifact("unscripted.bin")
        assert again is not None and again[1] == b"y" * 10
        redis_acl.provision(env.server.url, env.alpha.username, env.alpha.password, PREFIX, "alpha")
        assert env.admin().script_exists(SAVE_SHA) == [True]
    finally:
        await store.close()
