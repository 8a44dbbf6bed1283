"""py-code-mode's `Session(storage=..., executor=...)` shape against a real `codemode serve`
(real redis-server): run, state between runs, reset, the storage-side methods with their
skills-era names, the workspace pin, and the executor line that replaces py-code-mode's."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from codemode_operator.sessions import Sessions
from codemode_session.errors import ValidationError
from codemode_session.session_api import CodeSessionExecutor, RemoteExecutor, Session
from codemode_session.storage import RedisStorage

from tests.conftest import RedisServer
from tests.integration.server_fixture import TOKEN, ServerProcess, base_settings, running_server

pytestmark = pytest.mark.redis

WORKSPACE = "api-ws"


@pytest.fixture(scope="module")
def prefix() -> str:
    return f"sessapi{uuid.uuid4().hex[:6]}"


@pytest.fixture(scope="module")
def server(redis_server: RedisServer, prefix: str) -> Iterator[ServerProcess]:
    settings = base_settings(redis_server.url, prefix, WORKSPACE_ID=WORKSPACE)
    with running_server(settings) as srv:
        yield srv


def storage(redis_server: RedisServer, prefix: str, workspace: str = WORKSPACE) -> RedisStorage:
    return RedisStorage(redis_server.url, prefix=prefix, workspace_id=workspace)


async def test_run_keeps_state_and_reset_clears_it(
    server: ServerProcess, redis_server: RedisServer, prefix: str
) -> None:
    executor = RemoteExecutor(server.url, token=TOKEN)
    async with Session(storage=storage(redis_server, prefix), executor=executor) as session:
        first = await session.run("x = 20\nprint('hi')\nx + 1")
        assert (first.value, first.stdout, first.error) == (21, "hi\n", None)
        assert (await session.run("x * 2")).value == 40
        await session.reset()
        after = await session.run("x")
        assert after.error is not None and "NameError" in after.error
    closed = await session.run("1")
    assert closed.error == "Session is closed"


async def test_storage_side_methods_and_skills_names(
    server: ServerProcess, redis_server: RedisServer, prefix: str
) -> None:
    source = "async def run(a: int) -> int:\n    return a * 3\n"
    executor = RemoteExecutor(server.url, token=TOKEN)
    async with Session(storage=storage(redis_server, prefix), executor=executor) as session:
        await session.add_skill("triple", source, "three times a")
        assert [w["name"] for w in await session.list_workflows()] == ["triple"]
        assert (await session.get_skill("triple") or {})["name"] == "triple"
        assert [w["name"] for w in await session.search_skills("three")] == ["triple"]
        assert (await session.run("workflows.triple(a=4)")).value == 12
        await session.save_artifact("notes", {"k": [1, 2]}, "some notes")
        assert await session.load_artifact("notes") == {"k": [1, 2]}
        assert [a["name"] for a in await session.list_artifacts()] == ["notes"]
        await session.delete_artifact("notes")
        assert await session.remove_skill("triple") is True
        assert await session.get_workflow("triple") is None
        assert isinstance(await session.list_deps(), list)
        assert isinstance(await session.list_tools(), list)
    # What the session wrote went to the workspace the storage names.
    keys = storage(redis_server, prefix).keys
    assert keys.workflows.startswith(f"{prefix}:ws:{WORKSPACE}:")


async def test_a_storage_naming_another_workspace_is_refused(
    server: ServerProcess, redis_server: RedisServer, prefix: str
) -> None:
    executor = RemoteExecutor(server.url, token=TOKEN)
    session = Session(storage=storage(redis_server, prefix, "someone-else"), executor=executor)
    with pytest.raises(Exception, match="403") as refused:
        await session.start()
    assert "someone-else" in str(refused.value) or "workspace" in str(refused.value)
    await session.close()


def test_an_executor_is_required_and_typed() -> None:
    with pytest.raises(ValidationError, match="CodeSessionExecutor"):
        Session(storage=None)
    with pytest.raises(ValidationError, match="RemoteExecutor"):
        Session(executor="container")  # type: ignore[arg-type]


async def test_code_session_executor_reaches_the_session_the_operator_names(
    server: ServerProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The executor asks the operator's Sessions helper for the CodeSession's address
    and token (the k8s tier proves that helper against a real API server)."""
    asked: list[Any] = []

    def address(self: Sessions, name: str, workspace: str | None, timeout: float) -> Any:
        asked.append((self.namespace, name, workspace, timeout))
        return server.url, TOKEN

    def no_kubeconfig(self: Sessions, namespace: str = "default", api: Any = None) -> None:
        self.namespace = namespace
        self._forwards = []

    monkeypatch.setattr(Sessions, "__init__", no_kubeconfig)
    monkeypatch.setattr(Sessions, "address", address)
    executor = CodeSessionExecutor("agent-7", namespace="team", workspace=WORKSPACE)
    async with Session(executor=executor) as session:
        assert (await session.run("6 * 7")).value == 42
    assert asked == [("team", "agent-7", WORKSPACE, 120.0)]
