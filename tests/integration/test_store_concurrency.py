"""`codemode store bootstrap` against concurrent writers, on a real redis-server.

Interleavings are forced, not hoped for: a wrapper around `plan_workflows` (which
bootstrap calls after reading storage and before publishing) runs the competing
write exactly there, and a wrapper around the writer's Redis connection looks at
the stored set after every reply it reads. No test relies on sleeps or timing.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
import redis
from codemode_session.cli.main import main
from codemode_session.errors import ConflictError
from codemode_session.storage import RedisStorage
from codemode_session.store import bootstrap
from codemode_session.tools import stored_tool_value
from codemode_session.workflow_model import parse_workflow
from redis.asyncio.connection import AbstractConnection

from tests.integration.gitserver import folder, workflow_source

pytestmark = [pytest.mark.redis, pytest.mark.usefixtures("clean_store_env")]
T = TypeVar("T")

WS = "ws"
AGENT_SOURCE = '"""Made by an agent."""\n\nasync def run():\n    return "agent"\n'


def wf_key(prefix: str) -> str:
    return f"{prefix}:ws:{WS}:workflows:__workflows__"


def owners_key(prefix: str) -> str:
    return f"{prefix}:ws:{WS}:workflows:__owners__"


def library_key(prefix: str, library: str) -> str:
    return f"{prefix}:ws:{WS}:libraries:{library}"


def snapshot(client: redis.Redis, prefix: str) -> dict[str, Any]:
    """DUMP of every key of the test's prefix."""
    return {key: client.dump(key) for key in sorted(client.scan_iter(f"{prefix}*"))}


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(["store", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def elsewhere(fn: Callable[[], T]) -> T:
    """Run `fn` to completion as another client would: its own thread, event loop and
    connections (bootstrap's loop is busy calling us)."""
    results: list[T] = []
    errors: list[BaseException] = []

    def target() -> None:
        try:
            results.append(fn())
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=target)
    thread.start()
    thread.join()
    if errors:
        raise errors[0]
    return results[0]


def agent_save(redis_url: str, prefix: str, name: str, source: str = AGENT_SOURCE) -> None:
    """What the session server's `workflows.create` does: `storage.save_workflow`."""

    async def save() -> None:
        storage = RedisStorage(redis_url, prefix=prefix, workspace_id=WS)
        try:
            await storage.save_workflow(parse_workflow(name, source))
        finally:
            await storage.close()

    elsewhere(lambda: asyncio.run(save()))


def between_read_and_write(
    monkeypatch: pytest.MonkeyPatch, step: Callable[[int], None]
) -> list[int]:
    """Run `step(n)` each time bootstrap has read storage and is about to decide
    (n counts from 0); returns the list of calls, so tests can count the decisions."""
    real = bootstrap.plan_workflows
    calls: list[int] = []

    def wrapped(*args: Any, **kwargs: Any) -> bootstrap.WorkflowPlan:
        n = len(calls)
        calls.append(n)
        step(n)
        return real(*args, **kwargs)

    monkeypatch.setattr(bootstrap, "plan_workflows", wrapped)
    return calls


# ---- an agent saves a workflow while a bootstrap is deciding ------------------------------


def test_agent_workflow_saved_mid_bootstrap_is_never_overwritten(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    r: redis.Redis,
    redis_url: str,
    prefix: str,
    tmp_path: Path,
) -> None:
    target = ["--redis-url", redis_url, "--prefix", prefix, "--workspace-id", WS]
    src = folder(tmp_path, "src", {"a.py": workflow_source(1), "shared.py": workflow_source(2)})
    after_agent: dict[str, Any] = {}

    def agent(n: int) -> None:
        if n == 0:  # bootstrap saw no "shared"; now an agent creates it
            agent_save(redis_url, prefix, "shared")
            after_agent.update(snapshot(r, prefix))

    calls = between_read_and_write(monkeypatch, agent)
    code, out, err = run_cli(capsys, "bootstrap", "--library", "lib", "--folder", str(src), *target)

    assert code == 2, (out, err)
    assert out == "" and len(err.splitlines()) == 1 and "Traceback" not in err
    assert "'shared'" in err and "an agent created it" in err
    assert len(calls) == 2  # decided again on fresh data, then refused
    stored = json.loads(r.hget(wf_key(prefix), "shared") or "{}")
    assert stored["source"] == AGENT_SOURCE
    assert r.hget(owners_key(prefix), "shared") is None
    assert snapshot(r, prefix) == after_agent  # nothing of the library was published


def test_agent_workflow_recreated_mid_bootstrap_is_never_pruned(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    r: redis.Redis,
    redis_url: str,
    prefix: str,
    tmp_path: Path,
) -> None:
    """The library owned `old` when bootstrap read the owners; before it publishes, the
    library is removed (`bootstrap --delete`) and an agent saves its own `old`."""
    target = ["--redis-url", redis_url, "--prefix", prefix, "--workspace-id", WS]
    v1 = folder(tmp_path, "v1", {"a.py": workflow_source(1), "old.py": workflow_source(2)})
    code, _, err = run_cli(capsys, "bootstrap", "--library", "lib", "--folder", str(v1), *target)
    assert code == 0, err
    v2 = folder(tmp_path, "v2", {"a.py": workflow_source(3)})

    def release_and_recreate(n: int) -> None:
        if n == 0:
            code = elsewhere(
                lambda: main(["store", "bootstrap", "--library", "lib", "--delete", *target])
            )
            assert code == 0
            agent_save(redis_url, prefix, "old")

    calls = between_read_and_write(monkeypatch, release_and_recreate)
    code, out, err = run_cli(capsys, "bootstrap", "--library", "lib", "--folder", str(v2), *target)

    assert code == 0, err
    result = json.loads(out.splitlines()[-1])
    assert (result["added"], result["removed"]) == (1, 0)
    assert len(calls) == 2
    assert json.loads(r.hget(wf_key(prefix), "old") or "{}")["source"] == AGENT_SOURCE
    assert r.hgetall(owners_key(prefix)) == {"a": "lib"}
    assert json.loads(r.hget(wf_key(prefix), "a") or "{}")["source"] == workflow_source(3)


def test_unrelated_agent_write_costs_one_retry_and_both_survive(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    r: redis.Redis,
    redis_url: str,
    prefix: str,
    tmp_path: Path,
) -> None:
    target = ["--redis-url", redis_url, "--prefix", prefix, "--workspace-id", WS]
    src = folder(tmp_path, "src", {"a.py": workflow_source(1), "b.py": workflow_source(2)})
    calls = between_read_and_write(
        monkeypatch, lambda n: agent_save(redis_url, prefix, "mine") if n == 0 else None
    )
    code, out, err = run_cli(capsys, "bootstrap", "--library", "lib", "--folder", str(src), *target)
    assert code == 0, err
    assert json.loads(out)["added"] == 2
    assert len(calls) == 2
    assert sorted(r.hkeys(wf_key(prefix))) == ["a", "b", "mine"]
    assert r.hgetall(owners_key(prefix)) == {"a": "lib", "b": "lib"}


def test_retries_are_bounded_then_one_line_exit_2_and_nothing_written(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    r: redis.Redis,
    redis_url: str,
    prefix: str,
    tmp_path: Path,
) -> None:
    target = ["--redis-url", redis_url, "--prefix", prefix, "--workspace-id", WS]
    src = folder(tmp_path, "src", {"a.py": workflow_source(1)})
    after_agent: dict[str, Any] = {}

    def busy_agent(n: int) -> None:  # another save every time bootstrap decides
        agent_save(redis_url, prefix, f"agent_{n}")
        after_agent.clear()
        after_agent.update(snapshot(r, prefix))

    calls = between_read_and_write(monkeypatch, busy_agent)
    code, out, err = run_cli(capsys, "bootstrap", "--library", "lib", "--folder", str(src), *target)
    assert code == 2, (out, err)
    assert out == "" and len(err.splitlines()) == 1 and "Traceback" not in err
    assert "another writer" in err and "nothing was written" in err
    from codemode_session.storage import TRANSACTION_ATTEMPTS

    assert len(calls) == TRANSACTION_ATTEMPTS
    assert snapshot(r, prefix) == after_agent
    assert r.hget(wf_key(prefix), "a") is None and not r.exists(library_key(prefix, "lib"))


# ---- two libraries bootstrap the same name at once ------------------------------------


def test_two_libraries_claiming_one_name_end_with_one_owner(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    r: redis.Redis,
    redis_url: str,
    prefix: str,
    tmp_path: Path,
) -> None:
    """Both bootstraps have read (nobody owns `shared`) before either publishes."""
    target = ["--redis-url", redis_url, "--prefix", prefix, "--workspace-id", WS]
    sources = {
        "one": folder(
            tmp_path, "one", {"shared.py": workflow_source(1), "only_one.py": workflow_source(2)}
        ),
        "two": folder(
            tmp_path, "two", {"shared.py": workflow_source(3), "only_two.py": workflow_source(4)}
        ),
    }
    both_read = threading.Barrier(2, timeout=30)
    first_decision: set[int] = set()
    real = bootstrap.plan_workflows

    def wrapped(*args: Any, **kwargs: Any) -> bootstrap.WorkflowPlan:
        me = threading.get_ident()
        if me not in first_decision:
            first_decision.add(me)
            both_read.wait()
        return real(*args, **kwargs)

    monkeypatch.setattr(bootstrap, "plan_workflows", wrapped)
    codes: dict[str, int] = {}

    def run(library: str) -> None:
        codes[library] = main(
            ["store", "bootstrap", "--library", library, "--folder", str(sources[library]), *target]
        )

    capsys.readouterr()
    threads = [threading.Thread(target=run, args=(lib,)) for lib in sources]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    out, err = capsys.readouterr()

    assert sorted(codes.values()) == [0, 2], (codes, out, err)
    winner = next(lib for lib, code in codes.items() if code == 0)
    loser = next(lib for lib, code in codes.items() if code == 2)
    assert len(out.splitlines()) == 1 and json.loads(out)["library"] == winner
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert f"owned by WorkflowLibrary {winner!r}" in err
    assert r.hgetall(owners_key(prefix)) == {"shared": winner, f"only_{winner}": winner}
    assert sorted(r.hkeys(wf_key(prefix))) == sorted(["shared", f"only_{winner}"])
    assert r.exists(library_key(prefix, winner)) and not r.exists(library_key(prefix, loser))


def test_agent_save_racing_a_bootstrap_claim_is_refused(
    monkeypatch: pytest.MonkeyPatch,
    r: redis.Redis,
    redis_url: str,
    prefix: str,
) -> None:
    """The agent side checks the owner and writes in one transaction: a library that
    claims the name after the check cannot have its workflow overwritten."""
    real_execute = redis.asyncio.client.Pipeline.execute
    claimed: list[bool] = []

    async def execute(self: Any, raise_on_error: bool = True) -> Any:
        if not claimed:  # the agent has checked the owner; a library claims the name
            claimed.append(True)
            r.hset(wf_key(prefix), "flow", parse_workflow("flow", workflow_source(1)).to_json())
            r.hset(owners_key(prefix), "flow", "lib")
        return await real_execute(self, raise_on_error)

    monkeypatch.setattr(redis.asyncio.client.Pipeline, "execute", execute)

    async def save() -> None:
        storage = RedisStorage(redis_url, prefix=prefix, workspace_id=WS)
        try:
            await storage.save_workflow(parse_workflow("flow", AGENT_SOURCE))
        finally:
            await storage.close()

    with pytest.raises(ConflictError, match="managed by WorkflowLibrary 'lib'"):
        asyncio.run(save())
    assert json.loads(r.hget(wf_key(prefix), "flow") or "{}")["source"] == workflow_source(1)


# ---- tools and deps: one transaction each ---------------------------------------------


OLD_TOOLS = {
    "t1": "name: t1\ncommand: echo one\n",
    "t2": "name: t2\ncommand: echo two\n",
    "gone": "name: gone\ncommand: echo gone\n",
}
NEW_TOOLS = {
    "t1": "name: t1\ncommand: echo ONE\n",
    "t2": "name: t2\ncommand: echo TWO\n",
    **{f"n{i}": f"name: n{i}\ncommand: echo {i}\n" for i in range(5)},
}
OLD_DEPS = {"requests>=2", "gone-pkg"}
NEW_DEPS = {"requests>=2", *(f"pkg{i}" for i in range(5))}


def sources_for_sync(tmp_path: Path) -> tuple[Path, Path]:
    tools = folder(tmp_path, "tools", {f"{n}.yaml": t for n, t in NEW_TOOLS.items()})
    deps = folder(tmp_path, "deps", {"requirements.txt": "".join(f"{d}\n" for d in NEW_DEPS)})
    return tools, deps


def seed(r: redis.Redis, prefix: str) -> None:
    r.hset(f"{prefix}:tools:__tools__", mapping=OLD_TOOLS)
    r.sadd(f"{prefix}:deps:deps", *OLD_DEPS)


def stored_sets(r: redis.Redis, prefix: str) -> tuple[dict[str, str], set[str]]:
    return r.hgetall(f"{prefix}:tools:__tools__"), r.smembers(f"{prefix}:deps:deps")


def test_readers_never_see_a_partial_tools_or_deps_sync(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    r: redis.Redis,
    redis_url: str,
    prefix: str,
    tmp_path: Path,
) -> None:
    """After every reply the syncing connection reads, a reader looks at the stored set:
    it must be the old set or the new one. A polling thread checks the same meanwhile."""
    target = ["--redis-url", redis_url, "--prefix", prefix]
    tools_src, deps_src = sources_for_sync(tmp_path)
    seed(r, prefix)
    # Stored as py-code-mode stores tools: the JSON of each YAML mapping.
    new_tools = {n: stored_tool_value(t) for n, t in NEW_TOOLS.items()}
    allowed_tools = [OLD_TOOLS, new_tools]
    allowed_deps = [OLD_DEPS, NEW_DEPS]
    seen: list[tuple[dict[str, str], set[str]]] = []
    reader = redis.Redis.from_url(redis_url, decode_responses=True)
    real_read = AbstractConnection.read_response

    async def observed(self: Any, *args: Any, **kwargs: Any) -> Any:
        response = await real_read(self, *args, **kwargs)
        seen.append(stored_sets(reader, prefix))
        return response

    monkeypatch.setattr(AbstractConnection, "read_response", observed)
    polled: list[tuple[dict[str, str], set[str]]] = []
    stop = threading.Event()

    def poll() -> None:
        client = redis.Redis.from_url(redis_url, decode_responses=True)
        while not stop.is_set():
            polled.append(stored_sets(client, prefix))
        client.close()

    thread = threading.Thread(target=poll)
    thread.start()
    try:
        for kind, src in (("tools", tools_src), ("deps", deps_src)):
            code, out, err = run_cli(
                capsys, "bootstrap", "--type", kind, "--prune", "--folder", str(src), *target
            )
            assert code == 0, err
            result = json.loads(out)
            assert (result["added"], result["removed"]) == (5, 1)
    finally:
        stop.set()
        thread.join()
        reader.close()
    assert stored_sets(r, prefix) == (new_tools, NEW_DEPS)
    assert len(seen) >= 4
    for tools, deps in seen + polled:
        assert tools in allowed_tools, f"a reader saw a partial tools set: {sorted(tools)}"
        assert deps in allowed_deps, f"a reader saw a partial deps set: {sorted(deps)}"


WRITES = (b"$4\r\nHSET\r\n", b"$4\r\nHDEL\r\n", b"$4\r\nSADD\r\n", b"$4\r\nSREM\r\n")


@pytest.mark.parametrize("kind", ["tools", "deps"])
def test_redis_failing_midway_leaves_the_old_set(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    r: redis.Redis,
    redis_url: str,
    prefix: str,
    tmp_path: Path,
    kind: str,
) -> None:
    """The connection dies in the middle of the sync: the bytes up to its second write
    command reach Redis, then the server is gone for this client."""
    target = ["--redis-url", redis_url, "--prefix", prefix]
    tools_src, deps_src = sources_for_sync(tmp_path)
    seed(r, prefix)
    before = snapshot(r, prefix)
    real_send = AbstractConnection.send_packed_command
    state = {"writes": 0, "dead": False}

    async def flaky(self: Any, command: Any, check_health: bool = True) -> None:
        if state["dead"]:
            raise redis.exceptions.ConnectionError("injected: Redis went away")
        data = (
            command.encode()
            if isinstance(command, str)
            else (command if isinstance(command, bytes) else b"".join(command))
        )
        cuts = sorted(i for w in WRITES for i in _find_all(data, w))
        cut = next((i for n, i in enumerate(cuts, state["writes"]) if n >= 1), None)
        state["writes"] += len(cuts)
        if cut is None:
            await real_send(self, data, check_health)
            return
        await real_send(self, data[:cut], check_health)
        await self.disconnect()
        state["dead"] = True
        raise redis.exceptions.ConnectionError("injected: Redis went away")

    monkeypatch.setattr(AbstractConnection, "send_packed_command", flaky)
    code, out, err = run_cli(
        capsys,
        "bootstrap",
        "--type",
        kind,
        "--prune",
        "--folder",
        str(tools_src if kind == "tools" else deps_src),
        *target,
    )
    monkeypatch.undo()
    assert state["dead"], "the fault was never injected"
    assert code == 2, (out, err)
    assert out == "" and len(err.splitlines()) == 1 and "Traceback" not in err
    assert snapshot(r, prefix) == before


def _find_all(data: bytes, needle: bytes) -> list[int]:
    found, i = [], data.find(needle)
    while i >= 0:
        found.append(i)
        i = data.find(needle, i + 1)
    return found


# ---- FileStorage (--dir) ---------------------------------------------------------------


def test_dir_tools_sync_failing_midway_changes_nothing(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    store = tmp_path / "store"
    (store / "tools").mkdir(parents=True)
    for name, text in OLD_TOOLS.items():
        (store / "tools" / f"{name}.yaml").write_text(text)
    tools_src, _ = sources_for_sync(tmp_path)
    import codemode_session.storage.file_storage as fs

    real_mkstemp = fs.tempfile.mkstemp
    made: list[int] = []

    def failing_mkstemp(*args: Any, **kwargs: Any) -> tuple[int, str]:
        made.append(1)
        if len(made) == 3:
            raise OSError(28, "No space left on device")
        return real_mkstemp(*args, **kwargs)

    monkeypatch.setattr(fs.tempfile, "mkstemp", failing_mkstemp)
    code, out, err = run_cli(
        capsys,
        "bootstrap",
        "--type",
        "tools",
        "--prune",
        "--folder",
        str(tools_src),
        "--dir",
        str(store),
    )
    monkeypatch.undo()
    assert code == 2, (out, err)
    assert len(err.splitlines()) == 1 and "No space left" in err
    files = {
        p.name: p.read_text() for p in (store / "tools").iterdir() if not p.name.startswith(".")
    }
    assert files == {f"{n}.yaml": t for n, t in OLD_TOOLS.items()}
    assert not [p for p in (store / "tools").iterdir() if p.name.startswith(".tmp-")]


def test_dir_tools_and_deps_sync_then_resync_is_unchanged(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    store = tmp_path / "store"
    tools_src, deps_src = sources_for_sync(tmp_path)
    for kind, src, count in (
        ("tools", tools_src, len(NEW_TOOLS)),
        ("deps", deps_src, len(NEW_DEPS)),
    ):
        code, out, err = run_cli(
            capsys, "bootstrap", "--type", kind, "--folder", str(src), "--dir", str(store)
        )
        assert code == 0, err
        assert json.loads(out)["added"] == count
        code, out, err = run_cli(
            capsys, "bootstrap", "--type", kind, "--folder", str(src), "--dir", str(store)
        )
        assert code == 0, err
        assert json.loads(out)["unchanged"] == count
    assert (store / "deps.txt").read_text() == "".join(f"{d}\n" for d in sorted(NEW_DEPS))
    assert {p.stem for p in (store / "tools").glob("*.yaml")} == set(NEW_TOOLS)
