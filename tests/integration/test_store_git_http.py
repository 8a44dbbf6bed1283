"""Bootstrap over smart HTTP from a local `git http-backend` that requires auth."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from codemode_session.cli.main import main

from tests.integration.gitserver import GitHTTPServer, GitRepo, workflow_source

pytestmark = [pytest.mark.redis, pytest.mark.git]

TOKEN = "tok-3f9a1c77e2b84d0b"
PASSWORD = "pw-Zk81mQ0s"


@pytest.fixture
def repo(tmp_path: Path) -> GitRepo:
    repo = GitRepo(tmp_path / "work")
    repo.write({"a.py": workflow_source(1), "b.py": workflow_source(2)}, "flows")
    repo.commit("one")
    repo.git("tag", "v1")
    repo.write({"c.py": workflow_source(3)}, "flows")
    repo.commit("two")
    return repo


@pytest.fixture
def server(repo: GitRepo, tmp_path: Path) -> Iterator[GitHTTPServer]:
    root = tmp_path / "served"
    root.mkdir()
    repo.bare_copy(root / "lib.git")
    with GitHTTPServer(root, token=TOKEN, username="bob", password=PASSWORD) as srv:
        yield srv


@pytest.fixture
def argv_seen(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """Every argv a process is started with, to prove no secret is in one."""
    seen: list[list[str]] = []

    class Spy(subprocess.Popen):  # type: ignore[type-arg]
        def __init__(self, args: Any, *a: Any, **kw: Any) -> None:
            seen.append([str(x) for x in args])
            super().__init__(args, *a, **kw)

    monkeypatch.setattr(subprocess, "Popen", Spy)
    return seen


class Boot:
    def __init__(
        self, capsys: pytest.CaptureFixture[str], redis_url: str, prefix: str, url: str
    ) -> None:
        self.capsys = capsys
        self.base = [
            "store",
            "bootstrap",
            "--library",
            "lib",
            "--git",
            url,
            "--path",
            "flows",
            "--redis-url",
            redis_url,
            "--prefix",
            prefix,
            "--workspace-id",
            "ws",
        ]

    def __call__(self, *extra: str) -> tuple[int, str, str]:
        self.capsys.readouterr()
        code = main([*self.base, *extra])
        out, err = self.capsys.readouterr()
        return code, out, err


@pytest.fixture
def boot(
    capsys: pytest.CaptureFixture[str], redis_url: str, prefix: str, server: GitHTTPServer
) -> Boot:
    return Boot(capsys, redis_url, prefix, server.url("lib.git"))


def stored(redis_url: str, prefix: str) -> set[str]:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        return {str(k) for k in client.hkeys(f"{prefix}:ws:ws:workflows:__workflows__")}
    finally:
        client.close()


def test_token_from_file(
    boot: Boot,
    repo: GitRepo,
    tmp_path: Path,
    redis_url: str,
    prefix: str,
    server: GitHTTPServer,
    argv_seen: list[list[str]],
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    code, out, err = boot("--token-file", str(token_file), "--ref", "main")
    assert code == 0, err
    result = json.loads(out)
    assert result["revision"] == repo.git("rev-parse", "main") and result["added"] == 3
    assert stored(redis_url, prefix) == {"a", "b", "c"}
    assert any(ok for _, _, ok in server.requests)
    assert argv_seen and not any(TOKEN in arg for argv in argv_seen for arg in argv)


def test_token_from_env_and_refs(
    boot: Boot, repo: GitRepo, redis_url: str, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GIT_TOKEN", TOKEN)
    code, out, err = boot("--token-env", "GIT_TOKEN", "--ref", "v1")
    assert code == 0, err
    assert json.loads(out)["revision"] == repo.git("rev-parse", "v1")
    assert stored(redis_url, prefix) == {"a", "b"}
    head = repo.git("rev-parse", "main")
    code, out, err = boot("--token-env", "GIT_TOKEN", "--ref", head)
    assert code == 0, err
    assert json.loads(out)["revision"] == head
    first = repo.git("rev-parse", "main~1")
    code, out, err = boot("--token-env", "GIT_TOKEN", "--ref", first[:10])
    assert code == 0, err
    assert json.loads(out)["revision"] == first


def test_token_schemes(boot: Boot, tmp_path: Path, server: GitHTTPServer) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    for extra in (["--token-scheme", "bearer"], ["--username", "ci-bot"], []):
        server.requests.clear()
        code, _, err = boot("--token-file", str(token_file), *extra)
        assert code == 0, (extra, err)
        assert all(ok for _, _, ok in server.requests)  # sent up front, no 401 round trip


def test_basic_auth(
    boot: Boot, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, argv_seen: list[list[str]]
) -> None:
    password_file = tmp_path / "password"
    password_file.write_text(PASSWORD)
    code, _, err = boot("--username", "bob", "--password-file", str(password_file))
    assert code == 0, err
    monkeypatch.setenv("GIT_PASSWORD", PASSWORD)
    code, _, err = boot("--username", "bob", "--password-env", "GIT_PASSWORD")
    assert code == 0, err
    assert not any(PASSWORD in arg for argv in argv_seen for arg in argv)


@pytest.mark.parametrize("secret", ["wrong-token-7d1e", TOKEN[:-1]])
def test_wrong_token_fails_in_one_line_without_leaking(
    boot: Boot, tmp_path: Path, redis_url: str, prefix: str, secret: str
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(secret)
    code, out, err = boot("--token-file", str(token_file))
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1, err
    assert "authentication failed" in err
    assert secret not in err and TOKEN not in err
    assert stored(redis_url, prefix) == set()


def test_wrong_password_and_no_credentials(boot: Boot, tmp_path: Path) -> None:
    password_file = tmp_path / "password"
    password_file.write_text("not-the-password")
    code, _, err = boot("--username", "bob", "--password-file", str(password_file))
    assert code == 2 and "authentication failed" in err and "not-the-password" not in err
    code, _, err = boot()
    assert code == 2 and "authentication failed" in err
    assert len(err.strip().splitlines()) == 1


def test_missing_ref_and_repo_over_http(
    boot: Boot, tmp_path: Path, capsys: Any, redis_url: str, server: GitHTTPServer
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    code, _, err = boot("--token-file", str(token_file), "--ref", "nope")
    assert code == 2 and "ref 'nope' not found" in err and TOKEN not in err
    code = main(
        [
            "store",
            "bootstrap",
            "--library",
            "lib",
            "--git",
            server.url("missing.git"),
            "--token-file",
            str(token_file),
            "--redis-url",
            redis_url,
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and "not found" in err and TOKEN not in err
    assert len(err.strip().splitlines()) == 1


def test_credentials_are_never_taken_from_the_command_line(
    capsys: pytest.CaptureFixture[str], redis_url: str, server: GitHTTPServer, tmp_path: Path
) -> None:
    url = server.url("lib.git").replace("http://", f"http://bob:{PASSWORD}@")
    code = main(["store", "bootstrap", "--library", "lib", "--git", url, "--redis-url", redis_url])
    err = capsys.readouterr().err
    assert code == 2 and "must not embed a password" in err and PASSWORD not in err
    with pytest.raises(SystemExit):
        main(
            [
                "store",
                "bootstrap",
                "--library",
                "lib",
                "--git",
                server.url("lib.git"),
                "--token",
                TOKEN,
                "--redis-url",
                redis_url,
            ]
        )
    code = main(
        [
            "store",
            "bootstrap",
            "--library",
            "lib",
            "--git",
            server.url("lib.git"),
            "--token-env",
            "NO_SUCH_VAR_FOR_TEST",
            "--redis-url",
            redis_url,
        ]
    )
    assert code == 2 and "NO_SUCH_VAR_FOR_TEST" in capsys.readouterr().err
