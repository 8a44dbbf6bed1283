"""Hostile inputs to `codemode store`: what a user sees (exit code, one stderr line,
JSON) and that Redis is byte-for-byte unchanged after every failure."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import redis
from codemode_session.cli.main import main

from tests.integration.gitserver import GitHTTPServer, GitRepo, folder, workflow_source

pytestmark = [pytest.mark.redis, pytest.mark.git, pytest.mark.usefixtures("clean_store_env")]

WS = "ws"


def snapshot(redis_url: str, prefix: str) -> dict[str, Any]:
    """DUMP of every key under `prefix` in every database of the server (other tests'
    session servers share this Redis and write their own keys at any time)."""
    state: dict[str, Any] = {}
    for db in range(16):
        client = redis.Redis.from_url(redis_url.rsplit("/", 1)[0] + f"/{db}")
        try:
            for key in sorted(client.scan_iter(f"{prefix}*")):
                state[f"{db}/{key!r}"] = client.dump(key)
        finally:
            client.close()
    return state


class Cli:
    def __init__(self, capsys: pytest.CaptureFixture[str], redis_url: str, prefix: str) -> None:
        self.capsys = capsys
        self.redis_url = redis_url
        self.prefix = prefix
        self.target = ["--redis-url", redis_url, "--prefix", prefix, "--workspace-id", WS]

    def __call__(self, *argv: str, target: bool = True) -> tuple[int, str, str]:
        self.capsys.readouterr()
        try:
            code = main(["store", *argv, *(self.target if target else [])])
        except SystemExit as exc:  # argparse
            code = int(exc.code or 0)
        out, err = self.capsys.readouterr()
        return code, out, err

    def ok(self, *argv: str, target: bool = True) -> dict[str, Any]:
        code, out, err = self(*argv, target=target)
        assert code == 0, err
        data: dict[str, Any] = json.loads(out)
        return data

    def fails(self, *argv: str, target: bool = True) -> str:
        """Exit 2, exactly one line on stderr, nothing on stdout, Redis untouched."""
        before = snapshot(self.redis_url, self.prefix)
        code, out, err = self(*argv, target=target)
        assert code == 2, (code, out, err)
        assert out == ""
        lines = err.splitlines()
        assert len(lines) == 1 and "Traceback" not in err, err
        assert snapshot(self.redis_url, self.prefix) == before
        return lines[0]


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str], redis_url: str, prefix: str) -> Cli:
    return Cli(capsys, redis_url, prefix)


def wf_key(prefix: str) -> str:
    return f"{prefix}:ws:{WS}:workflows:__workflows__"


def owners_key(prefix: str) -> str:
    return f"{prefix}:ws:{WS}:workflows:__owners__"


def agent_workflow(r: redis.Redis, prefix: str, name: str) -> str:
    """What an agent (any client) stores: a workflow without an owner record."""
    text = json.dumps(
        {
            "name": name,
            "description": "agent's",
            "parameters": [],
            "source": "async def run():\n    return 'agent'\n",
        },
        sort_keys=True,
    )
    r.hset(wf_key(prefix), name, text)
    return text


# ---- ownership ------------------------------------------------------------------------


def test_agent_created_workflow_of_the_same_name_is_never_touched(
    cli: Cli, r: redis.Redis, prefix: str, tmp_path: Path
) -> None:
    agent_text = agent_workflow(r, prefix, "shared")
    agent_workflow(r, prefix, "agent_only")
    one = folder(tmp_path, "one", {"a.py": workflow_source(1), "owned.py": workflow_source(2)})
    assert cli.ok("bootstrap", "--library", "one", "--folder", str(one))["added"] == 2
    two = folder(tmp_path, "two", {"shared.py": workflow_source(3), "c.py": workflow_source(4)})

    line = cli.fails("bootstrap", "--library", "two", "--folder", str(two))
    assert "'shared'" in line and "an agent created it" in line and "--adopt" in line
    assert r.hget(wf_key(prefix), "shared") == agent_text

    # The other library's workflow is a conflict too, and stays its.
    (two / "owned.py").write_text(workflow_source(5))
    line = cli.fails("bootstrap", "--library", "two", "--folder", str(two), "--adopt")
    assert "owned by WorkflowLibrary 'one'" in line
    (two / "owned.py").unlink()

    result = cli.ok("bootstrap", "--library", "two", "--folder", str(two), "--adopt")
    assert (result["added"], result["updated"], result["adopted"]) == (1, 1, 1)
    assert r.hgetall(owners_key(prefix)) == {
        "a": "one",
        "owned": "one",
        "shared": "two",
        "c": "two",
    }
    # Pruning everything two owns leaves one's and the agent's workflows.
    result = cli.ok(
        "bootstrap",
        "--library",
        "two",
        "--folder",
        str(folder(tmp_path, "empty", {})),
        "--allow-empty",
    )
    assert result["removed"] == 2
    assert set(r.hkeys(wf_key(prefix))) == {"a", "owned", "agent_only"}


def test_delete_of_a_library_never_published_changes_nothing(cli: Cli, redis_url: str) -> None:
    before = snapshot(redis_url, cli.prefix)
    result = cli.ok("bootstrap", "--library", "never", "--delete")
    assert (result["removed"], result["deleted"], result["revision"]) == (0, True, "")
    assert snapshot(redis_url, cli.prefix) == before


# ---- targets --------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/abc", "/0/1", "/ 1", "/%zz", "/-1"])
def test_redis_url_with_a_bad_database_is_refused(
    cli: Cli, redis_url: str, prefix: str, tmp_path: Path, path: str
) -> None:
    src = folder(tmp_path, "src", {"a.py": workflow_source(1)})
    base = redis_url.rsplit("/", 1)[0]
    line = cli.fails(
        "bootstrap",
        "--library",
        "lib",
        "--folder",
        str(src),
        "--redis-url",
        base + path,
        "--prefix",
        prefix,
        target=False,
    )
    assert "invalid Redis URL" in line and "database" in line


@pytest.mark.parametrize("url", ["redis://", "redis:///0", "127.0.0.1:6379", "http://h/0"])
def test_redis_url_without_host_or_scheme_is_refused(cli: Cli, prefix: str, url: str) -> None:
    line = cli.fails("list", "--redis-url", url, "--prefix", prefix, target=False)
    assert "invalid Redis URL" in line


def test_explicitly_empty_options_do_not_fall_back(
    cli: Cli, redis_url: str, prefix: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = folder(tmp_path, "src", {"a.py": workflow_source(1)})
    monkeypatch.setenv("REDIS_URL", redis_url)
    assert "--prefix is empty" in cli.fails(
        "bootstrap", "--library", "lib", "--folder", str(src), "--prefix", "", target=False
    )
    assert "--redis-url is empty" in cli.fails(
        "bootstrap",
        "--library",
        "lib",
        "--folder",
        str(src),
        "--redis-url",
        "",
        "--prefix",
        prefix,
        target=False,
    )
    assert "invalid library name ''" in cli.fails(
        "bootstrap", "--library", "", "--folder", str(src)
    )
    assert "invalid library name ''" in cli.fails("list", "--library", "")


@pytest.mark.parametrize(
    "argv",
    [
        ["list"],
        ["diff", "--folder", "{src}"],
        ["pull", "--to", "{out}"],
        ["bootstrap", "--library", "lib", "--delete"],
    ],
)
def test_read_commands_on_a_missing_dir_fail_and_create_nothing(
    cli: Cli, tmp_path: Path, argv: list[str]
) -> None:
    src = folder(tmp_path, "src", {"a.py": workflow_source(1)})
    missing = tmp_path / "typo"
    filled = [a.format(src=src, out=tmp_path / "out") for a in argv]
    line = cli.fails(*filled, "--dir", str(missing), target=False)
    assert line == f"codemode: error: target folder not found: {missing}"
    assert not missing.exists() and not (tmp_path / "out").exists()


def test_pull_into_a_file_or_under_one_is_one_line(cli: Cli, tmp_path: Path) -> None:
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    assert cli.fails("pull", "--to", str(a_file)).endswith(f"{a_file}: it is not a folder")
    assert cli.fails("pull", "--to", str(a_file / "sub")).endswith(
        f"{a_file / 'sub'}: Not a directory"
    )


def test_pull_into_a_non_empty_folder_replaces_only_same_named_files(
    cli: Cli, tmp_path: Path
) -> None:
    src = folder(tmp_path, "src", {"a.py": workflow_source(1)})
    cli.ok("bootstrap", "--library", "lib", "--folder", str(src))
    out = folder(tmp_path, "out", {"a.py": "old", "notes.md": "mine"})
    assert cli.ok("pull", "--to", str(out)) == {"to": str(out), "type": "workflows", "written": 1}
    assert (out / "a.py").read_text() == workflow_source(1)
    assert (out / "notes.md").read_text() == "mine"
    assert sorted(p.name for p in out.iterdir()) == ["a.py", "notes.md"]


def test_corrupt_records_from_other_clients_never_give_a_traceback(
    cli: Cli, r: redis.Redis, prefix: str, tmp_path: Path
) -> None:
    src = folder(tmp_path, "src", {"a.py": workflow_source(1)})
    r.hset(wf_key(prefix), "junk", "not json {")
    r.hset(f"{prefix}:ws:{WS}:libraries:lib", mapping={"count": "many", "digest": "x"})
    for argv in (["list"], ["list", "--json"], ["diff", "--folder", str(src)]):
        code, _, err = cli(*argv)
        assert "Traceback" not in err and len(err.splitlines()) <= 1, err
        assert code in (0, 2)
    result = cli.ok("bootstrap", "--library", "lib", "--folder", str(src))
    assert (result["added"], result["count"]) == (1, 1)
    assert r.hget(owners_key(prefix), "a") == "lib"
    assert r.hget(wf_key(prefix), "junk") == "not json {"


def test_unwritable_result_file_fails_before_publishing(cli: Cli, tmp_path: Path) -> None:
    src = folder(tmp_path, "src", {"a.py": workflow_source(1)})
    line = cli.fails(
        "bootstrap",
        "--library",
        "lib",
        "--folder",
        str(src),
        "--result-file",
        str(tmp_path / "no" / "such" / "file"),
    )
    assert "cannot write --result-file" in line


# ---- sources --------------------------------------------------------------------------


def test_folder_symlinks_may_not_leave_the_folder(
    cli: Cli, r: redis.Redis, prefix: str, tmp_path: Path
) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("token-abc123\n")
    src = folder(tmp_path, "src", {"a.py": workflow_source(1)})
    (src / "requirements.txt").symlink_to(secret)
    line = cli.fails("bootstrap", "--type", "deps", "--folder", str(src))
    assert line.endswith(
        f"requirements.txt: symlink points outside the source folder {src.resolve()}"
    )
    assert "token-abc123" not in line
    (src / "requirements.txt").unlink()
    (src / "passwd.py").symlink_to("/etc/passwd")
    assert "passwd.py: symlink points outside" in cli.fails(
        "bootstrap", "--library", "lib", "--folder", str(src)
    )
    assert "leads outside the source folder" in cli.fails(
        "bootstrap", "--library", "lib", "--folder", str(src), "--path", "passwd.py"
    )
    assert not r.exists(wf_key(prefix))


def test_configmap_style_symlinks_loops_and_dangling_links(
    cli: Cli, r: redis.Redis, prefix: str, tmp_path: Path
) -> None:
    src = tmp_path / "cm"
    data = src / "..2024_01_01_00_00_00.1"
    data.mkdir(parents=True)
    (data / "a.py").write_text(workflow_source(1))
    (src / "..data").symlink_to(data.name)
    (src / "a.py").symlink_to("..data/a.py")
    (src / "loop.py").symlink_to("loop.py")
    (src / "dangling.py").symlink_to("nowhere.py")
    result = cli.ok("bootstrap", "--library", "lib", "--folder", str(src))
    assert (result["added"], result["count"]) == (1, 1)
    assert set(r.hkeys(wf_key(prefix))) == {"a"}


def test_non_utf8_file_names_are_one_line(cli: Cli, tmp_path: Path) -> None:
    bad = os.fsdecode(b"b\xffad.py")
    src = folder(tmp_path, "src", {"ok.py": workflow_source(1), bad: workflow_source(2)})
    assert cli.fails("bootstrap", "--library", "lib", "--folder", str(src)).endswith(
        "b\\xffad.py: file name is not UTF-8"
    )
    repo = GitRepo(tmp_path / "repo")
    repo.write({"ok.py": workflow_source(1), bad: workflow_source(2)})
    repo.commit()
    assert cli.fails("bootstrap", "--library", "lib", "--git", repo.url).endswith(
        "b\\xffad.py: file name is not UTF-8"
    )


def test_large_files_are_refused_before_reading_and_unrelated_ones_ignored(
    cli: Cli, tmp_path: Path
) -> None:
    repo = GitRepo(tmp_path / "repo")
    repo.write({"a.py": workflow_source(1)})
    (repo.path / "data.bin").write_bytes(os.urandom(5 * 1024 * 1024))
    repo.commit()
    assert cli.ok("bootstrap", "--library", "lib", "--git", repo.url)["count"] == 1
    (repo.path / "huge.py").write_text("#" * (5 * 1024 * 1024))
    repo.commit()
    assert cli.fails("bootstrap", "--library", "lib", "--git", repo.url).endswith(
        "huge.py: larger than 4194304 bytes"
    )


def test_empty_repository_says_to_pass_a_ref(cli: Cli, tmp_path: Path) -> None:
    repo = GitRepo(tmp_path / "empty")
    line = cli.fails("bootstrap", "--library", "lib", "--git", repo.url)
    assert "has no commit on its default branch" in line and "--ref" in line
    repo.write({"a.py": workflow_source(1)})
    repo.commit()
    line = cli.fails("bootstrap", "--library", "lib", "--git", repo.url, "--ref", "nope")
    assert line.endswith(f"git ref 'nope' not found in {repo.url}")


def test_wrong_credentials_against_an_http_server(cli: Cli, tmp_path: Path) -> None:
    repo = GitRepo(tmp_path / "work")
    repo.write({"a.py": workflow_source(1)})
    repo.commit()
    root = tmp_path / "served"
    root.mkdir()
    repo.bare_copy(root / "lib.git")
    (tmp_path / "bad").write_text("s3cr3t-bad\n")
    (tmp_path / "empty").write_text("\n")
    with GitHTTPServer(root, token="right-token") as srv:
        url = srv.url("lib.git")
        for extra, expected in [
            ([], "git authentication failed"),
            (["--token-file", str(tmp_path / "bad")], "git authentication failed"),
            (["--token-file", str(tmp_path / "empty")], "is empty"),
            (["--token-file", str(tmp_path / "missing")], "No such file"),
            (["--token-env", "CODEMODE_TEST_UNSET_VAR"], "is not set or empty"),
        ]:
            line = cli.fails("bootstrap", "--library", "lib", "--git", url, *extra)
            assert expected in line and "s3cr3t-bad" not in line


# ---- the process as users run it ------------------------------------------------------


def test_usage_and_unexpected_errors_are_one_line_in_a_real_process(
    redis_url: str, prefix: str, tmp_path: Path
) -> None:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("REDIS_URL", "STORAGE_PREFIX", "WORKSPACE_ID", "CODEMODE_DEBUG")
    }
    target = ["--redis-url", redis_url, "--prefix", prefix, "--workspace-id", WS]
    cases = [
        (
            ["bootstrap", "--library", "--folder", str(tmp_path), *target],
            "argument --library: expected one argument",
        ),
        (
            ["bootstrap", "--library", "lib", "--git", "-uhoh", *target],
            "argument --git: expected one argument",
        ),
        (["list", "--type", "nope", *target], "invalid choice"),
        (["list", "--workspace-id", "a:b", "--redis-url", redis_url], "invalid workspace_id"),
    ]
    before = snapshot(redis_url, prefix)
    for argv, expected in cases:
        proc = subprocess.run(
            [sys.executable, "-m", "codemode_session.cli.main", "store", *argv],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
            check=False,
        )
        assert proc.returncode == 2, proc.stderr
        assert proc.stdout == ""
        assert len(proc.stderr.splitlines()) == 1 and expected in proc.stderr, proc.stderr
    assert snapshot(redis_url, prefix) == before


def test_git_symlinks_read_their_target_inside_the_repository(
    cli: Cli, r: redis.Redis, prefix: str, tmp_path: Path
) -> None:
    repo = GitRepo(tmp_path / "repo")
    repo.write({"shared.py": workflow_source(7)}, sub="lib")
    repo.write({"own.py": workflow_source(1)}, sub="workflows")
    (repo.path / "workflows" / "linked.py").symlink_to("../lib/shared.py")
    (repo.path / "workflows" / "dangling.py").symlink_to("nowhere.py")
    repo.commit()
    result = cli.ok("bootstrap", "--library", "lib", "--git", repo.url, "--path", "workflows")
    assert (result["added"], result["count"]) == (2, 2)
    stored = json.loads(r.hget(wf_key(prefix), "linked") or "{}")
    assert stored["source"] == workflow_source(7)

    for name, target in (("passwd.py", "/etc/passwd"), ("up.py", "../../../etc/passwd")):
        (repo.path / "workflows" / name).symlink_to(target)
        repo.commit()
        line = cli.fails("bootstrap", "--library", "lib", "--git", repo.url, "--path", "workflows")
        assert line.endswith(f"{name}: symlink points outside the repository ({target})")
        (repo.path / "workflows" / name).unlink()
