"""Storage backends against a real redis-server and a real directory tree."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis
from codemode_session.errors import ConflictError, ValidationError
from codemode_session.storage import ArtifactInfo, FileStorage, LibraryRecord, RedisStorage
from codemode_session.workflow_model import parse_workflow

pytestmark = pytest.mark.redis

BAD_IDS = ["", ".", "..", "../x", "a/b", "a\\b", "a:b", "x" * 129, "a b", "é"]
SRC = "async def run(n: int = 1):\n    return n\n"


@pytest.fixture
async def stores(redis_url: str, prefix: str) -> AsyncIterator[dict[str, RedisStorage]]:
    made = {
        "a1": RedisStorage(redis_url, prefix=prefix, workspace_id="client-a"),
        "a2": RedisStorage(redis_url, prefix=prefix, workspace_id="client-a"),
        "b": RedisStorage(redis_url, prefix=prefix, workspace_id="client-b"),
        "legacy": RedisStorage(redis_url, prefix=prefix),
    }
    yield made
    for store in made.values():
        await store.close()


@pytest.mark.parametrize("bad", BAD_IDS)
def test_invalid_workspace_ids_are_rejected(bad: str, tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="workspace_id"):
        RedisStorage("redis://127.0.0.1:1/0", prefix="p", workspace_id=bad)
    with pytest.raises(ValidationError, match="workspace_id"):
        FileStorage(tmp_path, workspace_id=bad)


def test_a_128_character_id_is_accepted() -> None:
    RedisStorage("redis://127.0.0.1:1/0", prefix="p", workspace_id="x" * 128)


async def test_workspaces_are_isolated_and_sessions_share(stores: dict[str, RedisStorage]) -> None:
    a1, a2, b, legacy = stores["a1"], stores["a2"], stores["b"], stores["legacy"]
    await a1.save_workflow(parse_workflow("shared", SRC))
    await a1.save_artifact(ArtifactInfo("report.json", metadata={"_data_type": "json"}), b"[1]")

    assert [w.name for w in await a2.list_workflows()] == ["shared"]
    found = await a2.load_artifact("report.json")
    assert found is not None and found[1] == b"[1]"

    for other in (b, legacy):
        assert await other.list_workflows() == []
        assert await other.list_artifacts() == []
        assert await other.load_artifact("report.json") is None
        assert await other.get_workflow("shared") is None


async def test_legacy_layout_keys(
    stores: dict[str, RedisStorage], redis_url: str, prefix: str
) -> None:
    legacy, scoped = stores["legacy"], stores["a1"]
    await legacy.save_workflow(parse_workflow("old", SRC, "legacy one"))
    await legacy.save_artifact(ArtifactInfo("blob", metadata={"_data_type": "bytes"}), b"\x00")
    await scoped.save_artifact(ArtifactInfo("blob", metadata={"_data_type": "bytes"}), b"\x01")
    await scoped.add_dep("requests>=2")
    await scoped.save_tool("echo", "name: echo\ncommand: echo\n")

    raw = redis.Redis.from_url(redis_url)
    keys = {k.decode() for k in raw.keys(f"{prefix}*")}
    assert keys == {
        f"{prefix}:workflows:__workflows__",
        f"{prefix}:skills:__skills__",  # the copy py-code-mode's skills-era readers read
        f"{prefix}:artifacts:blob",
        f"{prefix}:artifacts:__index__",
        f"{prefix}:ws:client-a:artifacts:blob",
        f"{prefix}:ws:client-a:artifacts:__index__",
        f"{prefix}:ws:client-a:deps:deps",  # ours: a workspace's own packages
        f"{prefix}:tools:__tools__",
        f"{prefix}:usage",  # ours: the quota's usage counter, one per namespace
        f"{prefix}:ws:client-a:usage",
    }
    stored = json.loads(raw.hget(f"{prefix}:workflows:__workflows__", "old"))  # type: ignore[arg-type]
    assert stored["description"] == "legacy one"
    assert stored["parameters"] == [
        {"name": "n", "type": "int", "description": "", "required": False, "default": 1}
    ]
    index = json.loads(raw.hget(f"{prefix}:artifacts:__index__", "blob"))  # type: ignore[arg-type]
    assert index["metadata"]["_data_type"] == "bytes" and "created_at" in index
    # tools are prefix-wide; a workspace's added deps are its own
    assert await stores["b"].list_deps() == []
    assert await scoped.list_deps() == ["requests>=2"]
    assert list(await stores["legacy"].list_tools()) == ["echo"]
    raw.close()


async def test_library_publish_owns_and_protects(stores: dict[str, RedisStorage]) -> None:
    store = stores["a1"]
    await store.save_workflow(parse_workflow("mine", SRC))
    record = LibraryRecord(revision="abc", digest="d1", count=2, synced_at=1.0)
    await store.apply_library(
        "lib", [parse_workflow("one", SRC), parse_workflow("two", SRC)], [], record
    )
    assert await store.workflow_owners() == {"one": "lib", "two": "lib"}
    assert await store.get_library("lib") == record
    with pytest.raises(ConflictError, match="managed by WorkflowLibrary 'lib'"):
        await store.delete_workflow("one")
    with pytest.raises(ConflictError):
        await store.save_workflow(parse_workflow("two", SRC))

    await store.apply_library("lib", [], ["two"], None)
    assert sorted(w.name for w in await store.list_workflows()) == ["mine", "one"]
    assert await store.workflow_owners() == {"one": "lib"}
    assert await store.get_library("lib") is None
    assert await store.delete_workflow("mine") is True


async def test_unreachable_redis_is_a_readable_error() -> None:
    from codemode_session.errors import StorageUnavailableError

    store = RedisStorage(
        "redis://:hunter2@127.0.0.1:1/0", prefix="p", workspace_id="w", socket_timeout=1
    )
    with pytest.raises(StorageUnavailableError) as info:
        await store.list_workflows()
    assert "127.0.0.1:1" in str(info.value) and "hunter2" not in str(info.value)
    await store.close()


async def test_file_storage_mirrors_the_tree(tmp_path: Path) -> None:
    a = FileStorage(tmp_path, workspace_id="client-a")
    b = FileStorage(tmp_path, workspace_id="client-b")
    legacy = FileStorage(tmp_path)
    await a.save_workflow(parse_workflow("greet", '"""Say hi."""\n' + SRC))
    await a.save_artifact(ArtifactInfo("dir/x.txt", metadata={"_data_type": "text"}), b"hi")
    await legacy.save_artifact(ArtifactInfo("y", metadata={"_data_type": "text"}), b"old")
    await a.add_dep("numpy")

    assert (tmp_path / "workspaces/client-a/workflows/greet.py").read_text().startswith('"""Say')
    assert (tmp_path / "workspaces/client-a/artifacts/dir/x.txt").read_bytes() == b"hi"
    assert (tmp_path / "artifacts/y").read_bytes() == b"old"
    workflow = await a.get_workflow("greet")
    assert workflow is not None and workflow.description == "Say hi."
    assert await b.list_workflows() == [] and await b.list_artifacts() == []
    assert [i.name for i in await legacy.list_artifacts()] == ["y"]
    assert await b.list_deps() == [] and await a.list_deps() == ["numpy"]
    assert (tmp_path / "workspaces/client-a/deps.txt").read_text() == "numpy\n"
    assert await a.delete_artifact("dir/x.txt") is True
    assert await a.load_artifact("dir/x.txt") is None


@pytest.mark.parametrize("name", ["../etc/passwd", "/abs", "a/../b", ".hidden", "__index__", ""])
async def test_artifact_names_cannot_escape(name: str, tmp_path: Path) -> None:
    store = FileStorage(tmp_path, workspace_id="w")
    with pytest.raises(ValidationError):
        await store.save_artifact(ArtifactInfo(name), b"x")
