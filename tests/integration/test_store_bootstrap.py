"""`codemode store bootstrap` against a real redis-server and real git repositories."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import redis
from codemode_session.cli.main import main
from codemode_session.storage import RedisStorage
from codemode_session.store import gitfetch
from codemode_session.workflow_model import parse_workflow

from tests.conftest import free_port
from tests.integration.gitserver import GitRepo, workflow_source

pytestmark = [pytest.mark.redis, pytest.mark.git, pytest.mark.usefixtures("clean_store_env")]

WS = "ws1"


class Cli:
    """Runs `codemode ...` in-process and returns (exit code, stdout, stderr)."""

    def __init__(self, capsys: pytest.CaptureFixture[str], redis_url: str, prefix: str) -> None:
        self.capsys = capsys
        self.target = ["--redis-url", redis_url, "--prefix", prefix, "--workspace-id", WS]

    def __call__(self, *argv: str, target: bool = True) -> tuple[int, str, str]:
        self.capsys.readouterr()
        code = main([*argv, *(self.target if target else [])])
        out, err = self.capsys.readouterr()
        return code, out, err

    def ok(self, *argv: str) -> dict[str, Any]:
        code, out, err = self(*argv)
        assert code == 0, err
        lines = out.strip().splitlines()
        assert len(lines) == 1, out
        result: dict[str, Any] = json.loads(lines[0])
        return result


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str], redis_url: str, prefix: str) -> Cli:
    return Cli(capsys, redis_url, prefix)


def wf_key(prefix: str, ws: str = WS) -> str:
    return f"{prefix}:ws:{ws}:workflows:__workflows__"


def owners_key(prefix: str, ws: str = WS) -> str:
    return f"{prefix}:ws:{ws}:workflows:__owners__"


def counts(result: dict[str, Any]) -> tuple[int, int, int, int]:
    return result["added"], result["updated"], result["removed"], result["unchanged"]


def dump(client: redis.Redis, prefix: str) -> dict[str, Any]:
    """Every key under the prefix with its (hash) content, to prove nothing changed."""
    state: dict[str, Any] = {}
    for key in client.scan_iter(f"{prefix}:*"):
        kind = client.type(key)
        state[key] = client.hgetall(key) if kind == "hash" else client.dump(key)
    return state


def save_agent_workflow(redis_url: str, prefix: str, name: str, ws: str = WS) -> None:
    async def go() -> None:
        storage = RedisStorage(url=redis_url, prefix=prefix, workspace_id=ws)
        await storage.save_workflow(parse_workflow(name, workflow_source(99, "Agent made.")))
        await storage.close()

    asyncio.run(go())


def test_folder_bootstrap_is_idempotent(
    cli: Cli, r: redis.Redis, prefix: str, tmp_path: Path
) -> None:
    folder = tmp_path / "lib"
    folder.mkdir()
    for n in range(3):
        (folder / f"w{n}.py").write_text(workflow_source(n))
    (folder / "README.md").write_text("not a workflow")
    (folder / "__init__.py").write_text("")

    first = cli.ok("store", "bootstrap", "--library", "lib", "--folder", str(folder))
    assert counts(first) == (3, 0, 0, 0)
    assert first["revision"] == f"folder:{first['digest']}"
    assert first["library"] == "lib" and first["workspace_id"] == WS and first["count"] == 3
    stored = {k: json.loads(v) for k, v in r.hgetall(wf_key(prefix)).items()}
    assert set(stored) == {"w0", "w1", "w2"}
    assert stored["w1"]["description"] == "Workflow 1."
    assert stored["w1"]["parameters"][0]["name"] == "x"
    assert r.hgetall(owners_key(prefix)) == {"w0": "lib", "w1": "lib", "w2": "lib"}
    record = r.hgetall(f"{prefix}:ws:{WS}:libraries:lib")
    assert record["digest"] == first["digest"] and record["count"] == "3"

    before = r.hgetall(wf_key(prefix))
    again = cli.ok("store", "bootstrap", "--library", "lib", "--folder", str(folder))
    assert counts(again) == (0, 0, 0, 3)
    assert again["digest"] == first["digest"] and again["revision"] == first["revision"]
    assert r.hgetall(wf_key(prefix)) == before
    assert float(r.hget(f"{prefix}:ws:{WS}:libraries:lib", "synced_at") or 0) >= float(
        record["synced_at"]
    )


@pytest.fixture(params=["in-place", "shallow-fetch"])
def local_mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Local repositories are read in place; also run the tests through a real fetch."""
    if request.param == "shallow-fetch":
        monkeypatch.setattr(gitfetch, "_local_repo", lambda url: None)
    return str(request.param)


def test_force_repairs_what_clients_unaware_of_owners_changed(
    cli: Cli, r: redis.Redis, prefix: str, tmp_path: Path
) -> None:
    folder = tmp_path / "lib"
    folder.mkdir()
    for n in range(3):
        (folder / f"w{n}.py").write_text(workflow_source(n))
    cli.ok("store", "bootstrap", "--library", "lib", "--folder", str(folder))
    # A py-code-mode client knows nothing of owner records: it just edits the hash.
    r.hdel(wf_key(prefix), "w0")
    r.hset(wf_key(prefix), "w1", json.dumps({"name": "w1", "source": "tampered"}))
    fast = cli.ok("store", "bootstrap", "--library", "lib", "--folder", str(folder))
    assert counts(fast) == (0, 0, 0, 3)  # the digest matches: nothing is read
    forced = cli.ok("store", "bootstrap", "--library", "lib", "--folder", str(folder), "--force")
    assert counts(forced) == (1, 1, 0, 1)
    assert json.loads(r.hget(wf_key(prefix), "w1") or "")["source"] == workflow_source(1)


def test_git_refs_branch_tag_commit(
    cli: Cli, r: redis.Redis, prefix: str, tmp_path: Path, local_mode: str
) -> None:
    repo = GitRepo(tmp_path / "repo")
    repo.write({"a.py": workflow_source(1), "b.py": workflow_source(2)}, "wf")
    c1 = repo.commit("one")
    repo.git("tag", "-a", "v1", "-m", "release 1")
    repo.git("tag", "light", c1)
    repo.write({"b.py": workflow_source(20), "c.py": workflow_source(3)}, "wf")
    c2 = repo.commit("two")
    repo.git("checkout", "-q", "-b", "feature")
    repo.write({"d.py": workflow_source(4)}, "wf")
    c3 = repo.commit("three")
    repo.git("checkout", "-q", "main")

    def boot(ref: str | None) -> dict[str, Any]:
        ref_args = ["--ref", ref] if ref else []
        return cli.ok(
            "store", "bootstrap", "--library", "lib", "--git", repo.url, *ref_args, "--path", "wf"
        )

    assert boot("v1")["revision"] == c1
    assert set(r.hkeys(wf_key(prefix))) == {"a", "b"}
    result = boot("main")
    assert result["revision"] == c2 and counts(result) == (1, 1, 0, 1)
    assert boot(None)["revision"] == c2  # the remote HEAD
    assert boot("feature")["revision"] == c3
    assert set(r.hkeys(wf_key(prefix))) == {"a", "b", "c", "d"}
    assert boot("light")["revision"] == c1
    assert boot(c2)["revision"] == c2  # full sha
    assert boot(c3[:8])["revision"] == c3  # short sha: full fetch fallback
    result = boot(c1)
    assert result["revision"] == c1 and counts(result) == (0, 1, 2, 1)
    assert set(r.hkeys(wf_key(prefix))) == {"a", "b"}

    # A local repository path works like file://.
    local = cli.ok(
        "store",
        "bootstrap",
        "--library",
        "lib",
        "--git",
        str(repo.path),
        "--ref",
        "main",
        "--path",
        "wf",
    )
    assert local["revision"] == c2


def test_missing_ref_and_bad_source_fail_in_one_line(
    cli: Cli, r: redis.Redis, prefix: str, tmp_path: Path, local_mode: str
) -> None:
    repo = GitRepo(tmp_path / "repo")
    repo.write({"a.py": workflow_source(1)})
    repo.write({"b.py": workflow_source(2)}, "sub")
    repo.commit()
    cli.ok("store", "bootstrap", "--library", "lib", "--git", repo.url)
    before = dump(r, prefix)
    cases = [
        (["--git", repo.url, "--ref", "no-such-branch"], "not found"),
        (["--git", repo.url, "--ref", "deadbeef"], "not found"),
        (["--git", repo.url, "--path", "missing/dir"], "not found"),
        (["--git", (tmp_path / "nowhere").as_uri()], "not found"),
        (["--git", "ssh://git@example.com/x.git"], "unsupported git URL"),
        (["--git", "ext::sh -c touch% /tmp/pwned"], "unsupported git URL"),
        (["--git", repo.url, "--ref=--upload-pack=touch"], "invalid git ref"),
        (["--folder", str(tmp_path / "nope")], "not found"),
        (["--git", str(repo.path / "sub")], "not found"),
        (["--git", str(tmp_path)], "not found"),
    ]
    for args, expected in cases:
        code, out, err = cli("store", "bootstrap", "--library", "lib", *args)
        assert code == 2, (args, err)
        assert out == ""
        assert len(err.strip().splitlines()) == 1, err
        assert err.startswith("codemode: error: ") and expected in err, (args, err)
    assert dump(r, prefix) == before
    assert not Path("/tmp/pwned").exists()


def test_prune_removes_only_what_the_library_owns(
    cli: Cli, r: redis.Redis, prefix: str, redis_url: str, tmp_path: Path
) -> None:
    repo = GitRepo(tmp_path / "repo")
    repo.write({"a.py": workflow_source(1), "b.py": workflow_source(2), "c.py": workflow_source(3)})
    repo.commit()
    cli.ok("store", "bootstrap", "--library", "lib", "--git", repo.url)
    save_agent_workflow(redis_url, prefix, "agent_made")
    repo.write({"c.py": None})
    repo.commit("drop c")

    kept = cli.ok("store", "bootstrap", "--library", "lib", "--git", repo.url, "--no-prune")
    assert counts(kept) == (0, 0, 0, 2)
    assert "c" in r.hkeys(wf_key(prefix))

    result = cli.ok("store", "bootstrap", "--library", "lib", "--git", repo.url)
    assert counts(result) == (0, 0, 1, 2)
    assert set(r.hkeys(wf_key(prefix))) == {"a", "b", "agent_made"}
    assert r.hgetall(owners_key(prefix)) == {"a": "lib", "b": "lib"}
    assert json.loads(r.hget(wf_key(prefix), "agent_made") or "")["description"] == "Agent made."

    # Another library's workflows are as safe as agent-made ones.
    other = tmp_path / "other"
    other.mkdir()
    (other / "o.py").write_text(workflow_source(7))
    cli.ok("store", "bootstrap", "--library", "other", "--folder", str(other))
    repo.write({"b.py": None})
    repo.commit("drop b")
    assert counts(cli.ok("store", "bootstrap", "--library", "lib", "--git", repo.url)) == (
        0,
        0,
        1,
        1,
    )
    assert set(r.hkeys(wf_key(prefix))) == {"a", "agent_made", "o"}


def test_same_named_agent_workflow_is_adopted_only_with_adopt(
    cli: Cli, r: redis.Redis, prefix: str, redis_url: str, tmp_path: Path
) -> None:
    save_agent_workflow(redis_url, prefix, "shared")
    folder = tmp_path / "lib"
    folder.mkdir()
    (folder / "shared.py").write_text(workflow_source(5, "From git."))
    before = dump(r, prefix)
    code, _, err = cli("store", "bootstrap", "--library", "lib", "--folder", str(folder))
    assert code == 2 and "an agent created it" in err and len(err.splitlines()) == 1
    assert dump(r, prefix) == before
    result = cli.ok("store", "bootstrap", "--library", "lib", "--adopt", "--folder", str(folder))
    assert counts(result) == (0, 1, 0, 0) and result["adopted"] == 1
    assert r.hget(owners_key(prefix), "shared") == "lib"
    assert json.loads(r.hget(wf_key(prefix), "shared") or "")["description"] == "From git."


def test_workflow_owned_by_another_library_is_a_conflict(
    cli: Cli, r: redis.Redis, prefix: str, tmp_path: Path
) -> None:
    first = tmp_path / "first"
    second = tmp_path / "second"
    for folder, n in ((first, 1), (second, 2)):
        folder.mkdir()
        (folder / "same.py").write_text(workflow_source(n))
    (second / "extra.py").write_text(workflow_source(3))
    cli.ok("store", "bootstrap", "--library", "first", "--folder", str(first))
    before = dump(r, prefix)
    code, out, err = cli("store", "bootstrap", "--library", "second", "--folder", str(second))
    assert code == 2 and out == ""
    assert "'same'" in err and "'first'" in err and len(err.strip().splitlines()) == 1
    assert dump(r, prefix) == before


def test_invalid_workflow_fails_whole_bootstrap_and_leaves_redis(
    cli: Cli, r: redis.Redis, prefix: str, tmp_path: Path
) -> None:
    repo = GitRepo(tmp_path / "repo")
    repo.write({"good.py": workflow_source(1), "other.py": workflow_source(2)})
    repo.commit()
    cli.ok("store", "bootstrap", "--library", "lib", "--git", repo.url)
    before = dump(r, prefix)
    for bad_name, bad_source, expected in [
        ("broken.py", "async def run(:\n", "syntax error"),
        ("norun.py", "def helper():\n    return 1\n", "async def run"),
        ("syncrun.py", "def run():\n    return 1\n", "async def run"),
        ("list.py", workflow_source(1), "reserved"),
        ("bad-name.py", workflow_source(1), "invalid workflow name"),
    ]:
        repo.write({"good.py": workflow_source(100), "other.py": None, bad_name: bad_source})
        repo.commit("bad")
        code, out, err = cli("store", "bootstrap", "--library", "lib", "--git", repo.url)
        assert code == 2 and out == ""
        assert len(err.strip().splitlines()) == 1, err
        assert bad_name in err and expected in err, err
        assert dump(r, prefix) == before
        repo.write({bad_name: None, "other.py": workflow_source(2)})


def test_unreachable_redis_fails_in_one_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    folder = tmp_path / "lib"
    folder.mkdir()
    (folder / "a.py").write_text(workflow_source(1))
    url = f"redis://:hunter2@127.0.0.1:{free_port()}/0"
    code = main(
        [
            "store",
            "bootstrap",
            "--library",
            "lib",
            "--folder",
            str(folder),
            "--redis-url",
            url,
            "--redis-timeout",
            "2",
        ]
    )
    out, err = capsys.readouterr()
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and "unreachable" in err.lower()
    assert "hunter2" not in err

    code = main(["store", "list", "--redis-url", "http://127.0.0.1:1"])
    out, err = capsys.readouterr()
    assert code == 2 and "redis://" in err and len(err.strip().splitlines()) == 1


def test_workspace_scoping(
    cli: Cli, r: redis.Redis, prefix: str, redis_url: str, tmp_path: Path
) -> None:
    folder = tmp_path / "lib"
    folder.mkdir()
    (folder / "a.py").write_text(workflow_source(1))
    cli.ok("store", "bootstrap", "--library", "lib", "--folder", str(folder))
    assert r.hkeys(wf_key(prefix)) == ["a"]
    assert r.hkeys(wf_key(prefix, "wsB")) == []
    assert r.hkeys(f"{prefix}:workflows:__workflows__") == []

    def names(*ws: str) -> list[str]:
        code = main(["store", "list", "--json", "--redis-url", redis_url, "--prefix", prefix, *ws])
        out, _ = cli.capsys.readouterr()
        assert code == 0
        return [e["name"] for e in json.loads(out)]

    assert names("--workspace-id", WS) == ["a"]
    assert names("--workspace-id", "wsB") == []
    assert names() == []  # the legacy unscoped namespace

    # The same library name in another workspace is another library.
    code = main(
        [
            "store",
            "bootstrap",
            "--library",
            "lib",
            "--folder",
            str(folder),
            "--redis-url",
            redis_url,
            "--prefix",
            prefix,
            "--workspace-id",
            "wsB",
        ]
    )
    out, _ = cli.capsys.readouterr()
    assert code == 0 and json.loads(out)["added"] == 1
    code, _, err = cli("store", "list", "--workspace-id", "../x", target=False)
    assert code == 2 and "workspace_id" in err


def test_env_defaults_and_result_file(
    cli: Cli,
    r: redis.Redis,
    prefix: str,
    redis_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.setenv("STORAGE_PREFIX", prefix)
    monkeypatch.setenv("WORKSPACE_ID", "envws")
    folder = tmp_path / "lib"
    folder.mkdir()
    (folder / "a.py").write_text(workflow_source(1))
    result_file = tmp_path / "termination-log"
    code, out, _ = cli(
        "store",
        "bootstrap",
        "--library",
        "lib",
        "--folder",
        str(folder),
        "--result-file",
        str(result_file),
        target=False,
    )
    assert code == 0
    assert json.loads(result_file.read_text()) == json.loads(out)
    assert r.hkeys(wf_key(prefix, "envws")) == ["a"]

    (folder / "b.py").write_text("nonsense(")
    code, out, err = cli(
        "store",
        "bootstrap",
        "--library",
        "lib",
        "--folder",
        str(folder),
        "--result-file",
        str(result_file),
        target=False,
    )
    assert code == 2
    assert result_file.read_text().strip() == err.strip()
    assert err.startswith("codemode: error: b.py: ")


def test_empty_source_is_refused_unless_allowed(
    cli: Cli, r: redis.Redis, prefix: str, tmp_path: Path
) -> None:
    folder = tmp_path / "lib"
    folder.mkdir()
    (folder / "a.py").write_text(workflow_source(1))
    cli.ok("store", "bootstrap", "--library", "lib", "--folder", str(folder))
    (folder / "a.py").unlink()
    code, _, err = cli("store", "bootstrap", "--library", "lib", "--folder", str(folder))
    assert code == 2 and "--allow-empty" in err
    assert r.hkeys(wf_key(prefix)) == ["a"]
    result = cli.ok(
        "store", "bootstrap", "--library", "lib", "--folder", str(folder), "--allow-empty"
    )
    assert counts(result) == (0, 0, 1, 0)


def test_delete_removes_library_but_not_agent_workflows(
    cli: Cli, r: redis.Redis, prefix: str, redis_url: str, tmp_path: Path
) -> None:
    folder = tmp_path / "lib"
    folder.mkdir()
    for n in range(4):
        (folder / f"w{n}.py").write_text(workflow_source(n))
    cli.ok("store", "bootstrap", "--library", "lib", "--folder", str(folder))
    save_agent_workflow(redis_url, prefix, "mine")
    result = cli.ok("store", "bootstrap", "--library", "lib", "--delete")
    assert result["removed"] == 4 and result["deleted"] is True
    assert r.hkeys(wf_key(prefix)) == ["mine"]
    assert r.hgetall(owners_key(prefix)) == {}
    assert not r.exists(f"{prefix}:ws:{WS}:libraries:lib")
    assert cli.ok("store", "bootstrap", "--library", "lib", "--delete")["removed"] == 0


def test_tools_and_deps(cli: Cli, r: redis.Redis, prefix: str, tmp_path: Path) -> None:
    folder = tmp_path / "src"
    folder.mkdir()
    (folder / "curl.yaml").write_text("name: curl\ndescription: fetch\ncommand: curl\n")
    (folder / "jq.yml").write_text("description: json\ncommand: jq\n")
    (folder / "requirements.txt").write_text("# deps\nrequests>=2\n\npandas[excel]==2.2  # x\n")
    result = cli.ok("store", "bootstrap", "--type", "tools", "--folder", str(folder))
    assert counts(result) == (2, 0, 0, 0)
    assert set(r.hkeys(f"{prefix}:tools:__tools__")) == {"curl", "jq"}
    assert counts(cli.ok("store", "bootstrap", "--type", "tools", "--folder", str(folder))) == (
        0,
        0,
        0,
        2,
    )
    result = cli.ok("store", "bootstrap", "--type", "deps", "--folder", str(folder))
    assert counts(result) == (2, 0, 0, 0)
    assert r.smembers(f"{prefix}:deps:deps") == {"requests>=2", "pandas[excel]==2.2"}

    r.sadd(f"{prefix}:deps:deps", "agent-added")
    (folder / "requirements.txt").write_text("requests>=2\n")
    assert counts(cli.ok("store", "bootstrap", "--type", "deps", "--folder", str(folder))) == (
        0,
        0,
        0,
        1,
    )
    assert "agent-added" in r.smembers(f"{prefix}:deps:deps")  # no pruning unless asked
    result = cli.ok("store", "bootstrap", "--type", "deps", "--folder", str(folder), "--prune")
    assert counts(result) == (0, 0, 2, 1)
    assert r.smembers(f"{prefix}:deps:deps") == {"requests>=2"}

    (folder / "requirements.txt").write_text("requests\nhttps://evil.example/x.whl\n")
    code, _, err = cli("store", "bootstrap", "--type", "deps", "--folder", str(folder))
    assert code == 2 and "requirements.txt line 2" in err
    (folder / "bad.yaml").write_text("- a list\n")
    code, _, err = cli("store", "bootstrap", "--type", "tools", "--folder", str(folder))
    assert code == 2 and "bad.yaml" in err and "mapping" in err


def test_real_subprocess(redis_url: str, prefix: str, r: redis.Redis, tmp_path: Path) -> None:
    repo = GitRepo(tmp_path / "repo")
    repo.write({"a.py": workflow_source(1), "b.py": workflow_source(2)}, "flows")
    sha = repo.commit()
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "WORKSPACE_ID")}
    argv = [
        sys.executable,
        "-m",
        "codemode_session",
        "store",
        "bootstrap",
        "--library",
        "lib",
        "--git",
        repo.url,
        "--ref",
        "main",
        "--path",
        "flows",
        "--redis-url",
        redis_url,
        "--prefix",
        prefix,
        "--workspace-id",
        WS,
    ]
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["revision"] == sha and result["added"] == 2
    assert set(r.hkeys(wf_key(prefix))) == {"a", "b"}

    bad = [*argv[:-6], "--redis-url", f"redis://127.0.0.1:{free_port()}"]
    proc = subprocess.run(bad, capture_output=True, text=True, env=env, timeout=60, check=False)
    assert proc.returncode == 2 and proc.stdout == ""
    assert len(proc.stderr.strip().splitlines()) == 1 and "unreachable" in proc.stderr
