"""`codemode store diff|list|pull` against Redis and FileStorage targets."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from codemode_session.cli.main import main
from codemode_session.storage import FileStorage, RedisStorage
from codemode_session.workflow_model import parse_workflow

from tests.integration.gitserver import GitRepo, workflow_source

pytestmark = [pytest.mark.redis, pytest.mark.git, pytest.mark.usefixtures("clean_store_env")]


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_diff_lines_json_and_exit_code(
    capsys: pytest.CaptureFixture[str], redis_url: str, prefix: str, tmp_path: Path
) -> None:
    target = ["--redis-url", redis_url, "--prefix", prefix, "--workspace-id", "ws"]
    repo = GitRepo(tmp_path / "repo")
    repo.write(
        {
            "keep.py": workflow_source(1),
            "change.py": workflow_source(2),
            "gone.py": workflow_source(3),
        }
    )
    repo.commit()
    code, _, err = run(capsys, "store", "bootstrap", "--library", "lib", "--git", repo.url, *target)
    assert code == 0, err

    async def agent() -> None:
        storage = RedisStorage(url=redis_url, prefix=prefix, workspace_id="ws")
        await storage.save_workflow(parse_workflow("agent", workflow_source(9)))
        await storage.close()

    asyncio.run(agent())
    repo.write({"change.py": workflow_source(20), "gone.py": None, "new.py": workflow_source(4)})
    repo.commit()

    code, out, _ = run(capsys, "store", "diff", "--library", "lib", "--git", repo.url, *target)
    assert code == 0
    assert out.splitlines() == ["~ change", "- gone", "= keep", "+ new"]
    code, out, _ = run(capsys, "store", "diff", "--git", repo.url, "--json", *target)
    assert json.loads(out) == {
        "added": ["new"],
        "removed": ["agent", "gone"],
        "changed": ["change"],
        "unchanged": ["keep"],
    }
    code, _, _ = run(capsys, "store", "diff", "--git", repo.url, "--exit-code", *target)
    assert code == 1
    run(capsys, "store", "bootstrap", "--library", "lib", "--git", repo.url, *target)
    code, out, _ = run(
        capsys, "store", "diff", "--library", "lib", "--git", repo.url, "--exit-code", *target
    )
    assert code == 0 and out.splitlines() == ["= change", "= keep", "= new"]


def test_list_and_pull_round_trip_through_a_file_target(
    capsys: pytest.CaptureFixture[str], redis_url: str, prefix: str, tmp_path: Path
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "alpha.py").write_text(workflow_source(1, "Alpha does things."))
    (src / "beta.py").write_text(workflow_source(2))
    (src / "curl.yaml").write_text("name: curl\ndescription: Fetch URLs\ncommand: curl\n")
    (src / "requirements.txt").write_text("requests>=2\n")
    target = ["--redis-url", redis_url, "--prefix", prefix]
    for kind in ("workflows", "tools", "deps"):
        code, _, err = run(
            capsys,
            "store",
            "bootstrap",
            "--library",
            "lib",
            "--type",
            kind,
            "--folder",
            str(src),
            *target,
        )
        assert code == 0, err

    code, out, _ = run(capsys, "store", "list", *target)
    assert out.splitlines() == ["alpha [lib]  Alpha does things.", "beta [lib]  Workflow 2."]
    code, out, _ = run(capsys, "store", "list", "--json", "--type", "tools", *target)
    entries: list[dict[str, Any]] = json.loads(out)
    assert entries == [{"name": "curl", "description": "Fetch URLs", "owner": None}]

    pulled = tmp_path / "pulled"
    for kind in ("workflows", "tools", "deps"):
        code, out, _ = run(capsys, "store", "pull", "--type", kind, "--to", str(pulled), *target)
        assert code == 0
    assert sorted(p.name for p in pulled.iterdir()) == [
        "alpha.py",
        "beta.py",
        "curl.yaml",
        "requirements.txt",
    ]
    assert (pulled / "alpha.py").read_text() == (src / "alpha.py").read_text()

    # The pulled folder bootstraps into a FileStorage dir with identical content.
    store_dir = tmp_path / "filestore"
    code, out, err = run(
        capsys,
        "store",
        "bootstrap",
        "--library",
        "lib",
        "--folder",
        str(pulled),
        "--dir",
        str(store_dir),
        "--workspace-id",
        "ws",
    )
    assert code == 0, err
    assert json.loads(out)["added"] == 2
    code, out, _ = run(
        capsys,
        "store",
        "diff",
        "--folder",
        str(src),
        "--dir",
        str(store_dir),
        "--workspace-id",
        "ws",
        "--exit-code",
    )
    assert code == 0 and out.splitlines() == ["= alpha", "= beta"]
    workflows = asyncio.run(FileStorage(store_dir, "ws").list_workflows())
    assert [w.name for w in workflows] == ["alpha", "beta"]
    code, out, _ = run(
        capsys,
        "store",
        "bootstrap",
        "--library",
        "lib",
        "--folder",
        str(pulled),
        "--dir",
        str(store_dir),
        "--workspace-id",
        "ws",
    )
    assert json.loads(out)["unchanged"] == 2
    code, out, _ = run(
        capsys,
        "store",
        "bootstrap",
        "--library",
        "lib",
        "--delete",
        "--dir",
        str(store_dir),
        "--workspace-id",
        "ws",
    )
    assert json.loads(out)["removed"] == 2
    assert asyncio.run(FileStorage(store_dir, "ws").list_workflows()) == []


def test_target_errors(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = run(capsys, "store", "list")
    assert code == 2 and "--redis-url" in err
    code, _, err = run(capsys, "store", "list", "--redis-url", "redis://x", "--dir", "y")
    assert code == 2 and "not both" in err
    code, _, err = run(
        capsys, "store", "list", "--redis-url", "redis://127.0.0.1:1", "--prefix", "bad prefix"
    )
    assert code == 2 and "prefix" in err
