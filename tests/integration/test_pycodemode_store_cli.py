"""Issue 12 case 9: the store CLI in py-code-mode's form (`--source`, `--target`,
`--dest`, a per-kind `--prefix`) against a real redis-server, with our safety rules."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
import redis
from codemode_session.cli.main import main
from codemode_session.storage import RedisStorage
from codemode_session.workflow_model import parse_workflow

from tests.integration.gitserver import workflow_source

pytestmark = [pytest.mark.redis, pytest.mark.usefixtures("clean_store_env")]


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def write_workflows(folder: Path, *numbers: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*.py"):
        old.unlink()
    for n in numbers:
        (folder / f"wf{n}.py").write_text(workflow_source(n))


def test_bootstrap_pull_diff_as_the_seed_documents_write_them(
    capsys: pytest.CaptureFixture[str], r: redis.Redis, redis_url: str, prefix: str, tmp_path: Path
) -> None:
    src = tmp_path / "workflows"
    write_workflows(src, 1, 2)
    target = ["--target", redis_url, "--prefix", prefix]
    code, out, err = run_cli(capsys, "store", "bootstrap", "--source", str(src), *target)
    assert code == 0, err
    result = json.loads(out)
    assert (result["added"], result["library"]) == (2, "default")
    # Where RedisStorage(prefix=prefix) and the session server read them.
    stored = r.hgetall(f"{prefix}:workflows:__workflows__")
    assert sorted(stored) == ["wf1", "wf2"]
    assert r.hgetall(f"{prefix}:workflows:__owners__") == {"wf1": "default", "wf2": "default"}

    # py-code-mode's bootstrap adds: a file gone from the source is kept without --clear.
    write_workflows(src, 1)
    code, out, err = run_cli(capsys, "store", "bootstrap", "--source", str(src), *target)
    assert code == 0, err
    assert json.loads(out)["removed"] == 0
    assert r.hexists(f"{prefix}:workflows:__workflows__", "wf2")

    # An agent's workflow (no owner) and the diff in py-code-mode's marks.
    agent = parse_workflow("agent_made", workflow_source(7))
    asyncio.run(_save(redis_url, prefix, agent))
    write_workflows(src, 1, 3)
    (src / "wf1.py").write_text(workflow_source(1, doc="Changed."))
    code, out, err = run_cli(capsys, "store", "diff", "--source", str(src), *target)
    assert code == 0, err
    assert out.splitlines() == [
        "  + agent_made (in storage only)",
        "  ~ wf1 (changed)",
        "  + wf2 (in storage only)",
        "  - wf3 (in the source only)",
    ]

    # --clear prunes, but only what the library owns: the agent's workflow stays.
    code, out, err = run_cli(capsys, "store", "bootstrap", "--source", str(src), *target, "--clear")
    assert code == 0, err
    assert json.loads(out)["removed"] == 1
    assert sorted(r.hkeys(f"{prefix}:workflows:__workflows__")) == ["agent_made", "wf1", "wf3"]

    dest = tmp_path / "review"
    code, out, err = run_cli(capsys, "store", "pull", *target, "--dest", str(dest))
    assert code == 0, err
    assert json.loads(out)["written"] == 3
    assert sorted(p.name for p in dest.iterdir()) == ["agent_made.py", "wf1.py", "wf3.py"]
    assert "Changed." in (dest / "wf1.py").read_text()


async def _save(redis_url: str, prefix: str, workflow: object) -> None:
    storage = RedisStorage(url=redis_url, prefix=prefix)
    try:
        await storage.save_workflow(workflow)  # type: ignore[arg-type]
    finally:
        await storage.close()


def test_a_source_workflow_named_like_an_agents_is_a_conflict_and_nothing_is_written(
    capsys: pytest.CaptureFixture[str], r: redis.Redis, redis_url: str, prefix: str, tmp_path: Path
) -> None:
    asyncio.run(_save(redis_url, prefix, parse_workflow("wf1", workflow_source(9))))
    before = r.hgetall(f"{prefix}:workflows:__workflows__")
    src = tmp_path / "workflows"
    write_workflows(src, 1, 2)
    code, _, err = run_cli(
        capsys, "store", "bootstrap", "--source", str(src), "--target", redis_url,
        "--prefix", prefix,
    )  # fmt: skip
    assert code == 2
    assert "wf1" in err
    assert r.hgetall(f"{prefix}:workflows:__workflows__") == before
    assert not r.exists(f"{prefix}:workflows:__owners__")


@pytest.mark.parametrize("kind_prefix", ["skills", "workflows"])
def test_per_kind_prefix_of_workflows_and_the_skills_type(
    capsys: pytest.CaptureFixture[str],
    r: redis.Redis,
    redis_url: str,
    prefix: str,
    tmp_path: Path,
    kind_prefix: str,
) -> None:
    src = tmp_path / "skills"
    write_workflows(src, 4)
    code, _, err = run_cli(
        capsys, "store", "bootstrap", "--type", "skills", "--source", str(src),
        "--target", redis_url, "--prefix", f"{prefix}:{kind_prefix}",
    )  # fmt: skip
    assert code == 0, err
    assert r.hkeys(f"{prefix}:workflows:__workflows__") == ["wf4"]
    code, out, err = run_cli(
        capsys, "store", "list", "--target", redis_url, "--prefix", f"{prefix}:{kind_prefix}"
    )
    assert code == 0, err
    assert out.startswith("wf4 [default]")


def test_tools_and_deps_with_per_kind_prefixes(
    capsys: pytest.CaptureFixture[str], r: redis.Redis, redis_url: str, prefix: str, tmp_path: Path
) -> None:
    tools = tmp_path / "tools"
    tools.mkdir()
    (tools / "echo.yaml").write_text("name: echo\ndescription: Echo text.\ncommand: echo\n")
    code, _, err = run_cli(
        capsys, "store", "bootstrap", "--type", "tools", "--source", str(tools),
        "--target", redis_url, "--prefix", f"{prefix}:tools",
    )  # fmt: skip
    assert code == 0, err
    stored = r.hgetall(f"{prefix}:tools:__tools__")
    assert json.loads(stored["echo"])["description"] == "Echo text."
    assert r.keys(f"{prefix}:tools:tools*") == []

    reqs = tmp_path / "requirements.txt"
    reqs.write_text("# pinned\nrequests>=2.31\n")
    code, _, err = run_cli(
        capsys, "store", "bootstrap", "--type", "deps", "--source", str(reqs),
        "--target", redis_url, "--prefix", f"{prefix}:deps", "--deps", "pandas>=2.0",
    )  # fmt: skip
    assert code == 0, err
    assert r.smembers(f"{prefix}:deps:deps") == {"requests>=2.31", "pandas>=2.0"}

    # Inline specs alone are a source too.
    code, _, err = run_cli(
        capsys, "store", "bootstrap", "--type", "deps", "--target", redis_url,
        "--prefix", prefix, "--deps", "rich",
    )  # fmt: skip
    assert code == 0, err
    assert "rich" in r.smembers(f"{prefix}:deps:deps")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--redis-url", "redis://127.0.0.1:1", "--target", "{url}"], "not more than one"),
        (["--target", "s3://bucket"], "redis://"),
        (["--target", "{url}", "--deps", "rich"], "--deps needs --type deps"),
    ],
)
def test_refusals_are_one_line_and_exit_2(
    capsys: pytest.CaptureFixture[str],
    r: redis.Redis,
    redis_url: str,
    prefix: str,
    tmp_path: Path,
    argv: list[str],
    message: str,
) -> None:
    src = tmp_path / "workflows"
    write_workflows(src, 1)
    args = [a.replace("{url}", redis_url) for a in argv]
    code, _, err = run_cli(
        capsys, "store", "bootstrap", "--source", str(src), "--prefix", prefix, *args
    )
    assert code == 2
    assert message in err
    assert len(err.strip().splitlines()) == 1
    assert r.keys(f"{prefix}:*") == []
