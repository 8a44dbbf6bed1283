"""`codemode mcp` over stdio, driven by the official MCP SDK's own client (issue 15, item 3).

Each test spawns `python -m codemode_session mcp --url ... --token-file ...` with
`mcp.client.stdio` and talks to it with `ClientSession`, against a real `codemode serve`
on a real redis-server: what an agent sees, tool by tool. Runtime deps install from a
local wheel (no network).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
from codemode_session.errors import NotFoundError
from mcp.client import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.types import CallToolResult, TextContent

from tests.conftest import RedisServer
from tests.integration.server_fixture import TOKEN, ServerProcess, base_settings, running_server
from tests.integration.test_execution_deps import MODULE, PACKAGE, build_wheel

pytestmark = pytest.mark.redis

WORKSPACE = "mcp-ws"
CODE_TOOLS = {
    "run_code",
    "list_tools",
    "search_tools",
    "list_workflows",
    "search_workflows",
    "create_workflow",
    "delete_workflow",
    "list_artifacts",
    "list_deps",
    "add_dep",
    "remove_dep",
}
SESSION_TOOLS = {
    "create_session",
    "list_sessions",
    "session_history",
    "fork_session",
    "suspend_session",
    "resume_session",
}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("mcp")


@pytest.fixture(scope="module")
def server(redis_server: RedisServer, workdir: Path) -> Iterator[ServerProcess]:
    settings = base_settings(
        redis_server.url,
        f"mcp{uuid.uuid4().hex[:8]}",
        WORKSPACE_ID=WORKSPACE,
        ALLOW_RUNTIME_DEPS="true",
        DEPS_DIR=str(workdir / "site"),
        PIP_NO_INDEX="1",
        PIP_FIND_LINKS=str(build_wheel(workdir)),
    )
    with running_server(settings) as srv:
        yield srv


@pytest.fixture(scope="module")
def token_file(workdir: Path) -> Path:
    path = workdir / "token"
    path.write_text(TOKEN + "\n")
    return path


class Agent:
    """An MCP client session with helpers that read a tool's answer as an agent does."""

    def __init__(self, session: ClientSession) -> None:
        self.session = session

    async def call(self, tool: str, **arguments: Any) -> CallToolResult:
        result = await self.session.call_tool(tool, arguments)
        assert isinstance(result, CallToolResult)
        return result

    async def text(self, tool: str, **arguments: Any) -> str:
        """The answer's text; the call must not be a tool error."""
        result = await self.call(tool, **arguments)
        assert not result.is_error, _text(result)
        return _text(result)

    async def json(self, tool: str, **arguments: Any) -> Any:
        return json.loads(await self.text(tool, **arguments))

    async def error(self, tool: str, **arguments: Any) -> str:
        """The message of a call that must be a tool error."""
        result = await self.call(tool, **arguments)
        assert result.is_error, _text(result)
        return _text(result)


def _text(result: CallToolResult) -> str:
    assert len(result.content) == 1, result.content
    content = result.content[0]
    assert isinstance(content, TextContent)
    return content.text


@asynccontextmanager
async def agent(url: str, token_file: Path, *extra: str) -> AsyncIterator[Agent]:
    """`codemode mcp` spawned by the SDK's stdio client, initialised; on the way out, its
    stderr must show no traceback (a failing tool is an answer, never a crash)."""
    params = StdioServerParameters(
        command=sys.executable,
        args=[
            *("-m", "codemode_session", "mcp", "--url", url, "--token-file", str(token_file)),
            *extra,
        ],
        env={"NO_PROXY": "127.0.0.1,localhost"},
    )
    with tempfile.TemporaryFile("w+") as errlog:
        async with (
            stdio_client(params, errlog=errlog) as (read, write),
            ClientSession(read, write, read_timeout_seconds=120) as session,
        ):
            await session.initialize()
            yield Agent(session)
        errlog.seek(0)
        stderr = errlog.read()
    assert "Traceback" not in stderr, stderr


Connect = Callable[[], AbstractAsyncContextManager[Agent]]


@pytest.fixture
def connect(server: ServerProcess, token_file: Path) -> Connect:
    """Opens a new `codemode mcp` for the test server. Not an async fixture: the SDK's
    client must be closed by the task that opened it, the test's own."""
    return lambda: agent(server.url, token_file)


async def test_lists_the_tools_with_their_input_schemas(connect: Connect) -> None:
    async with connect() as mcp:
        tools = {tool.name: tool for tool in (await mcp.session.list_tools()).tools}
        assert set(tools) == CODE_TOOLS | SESSION_TOOLS

        run = tools["run_code"].input_schema
        assert run["required"] == ["code"]
        assert run["properties"]["code"]["type"] == "string"
        assert set(run["properties"]) == {"code", "timeout", "session"}
        # py-code-mode's parameters and defaults, and an optional session on each of its tools.
        workflow = tools["create_workflow"].input_schema
        assert workflow["required"] == ["name", "source", "description"]
        assert tools["search_workflows"].input_schema["properties"]["limit"]["default"] == 5
        assert tools["search_tools"].input_schema["properties"]["limit"]["default"] == 10
        assert tools["add_dep"].input_schema["required"] == ["package"]
        for name in CODE_TOOLS:
            schema = tools[name].input_schema
            assert "session" in schema["properties"], name
            assert "session" not in schema.get("required", []), name
            assert tools[name].description, name
        assert tools["fork_session"].input_schema["properties"]["new_name"]["default"] is None
        listing = tools["list_workflows"].annotations
        assert listing is not None and listing.read_only_hint is True
        deleting = tools["delete_workflow"].annotations
        assert deleting is not None and deleting.destructive_hint is True


async def test_run_code_keeps_variables_and_answers_as_py_code_mode(connect: Connect) -> None:
    async with connect() as mcp:
        assert await mcp.text("run_code", code="x = 41") == "(no output)"
        assert await mcp.text("run_code", code="x + 1") == "42"
        assert await mcp.text("run_code", code="print('hello')\nx") == "41\n\nStdout:\nhello\n"
        assert await mcp.text("run_code", code="{'a': [1, None]}") == '{"a": [1, null]}'
        assert await mcp.text("run_code", code="'text'") == "text"
        answer = await mcp.text("run_code", code="import sys\nprint('oops', file=sys.stderr)")
        assert answer == "Stderr:\noops\n"


async def test_a_run_error_is_an_answer_and_the_session_goes_on(connect: Connect) -> None:
    async with connect() as mcp:
        await mcp.text("run_code", code="kept = 'still here'")
        answer = await mcp.text("run_code", code="print('before')\n1 / 0")
        assert answer.startswith("Error: ")
        assert "ZeroDivisionError: division by zero" in answer
        assert answer.endswith("Stdout:\nbefore\n")
        assert await mcp.text("run_code", code="kept") == "still here"
        slow = await mcp.text("run_code", code="import time\ntime.sleep(5)", timeout=0.5)
        assert slow.startswith("Error: TimeoutError: execution exceeded the timeout of 0.5s")


async def test_workflows_create_list_search_run_delete(connect: Connect) -> None:
    async with connect() as mcp:
        name = f"shout_{uuid.uuid4().hex[:6]}"
        source = "async def run(text: str) -> str:\n    return text.upper() + '!'\n"
        created = await mcp.json(
            "create_workflow", name=name, source=source, description="shout a text loudly"
        )
        assert created["name"] == name
        assert name in {w["name"] for w in await mcp.json("list_workflows")}
        found = await mcp.json("search_workflows", query="shout loudly")
        assert found and found[0]["name"] == name
        assert await mcp.text("run_code", code=f"workflows.{name}(text='hey')") == "HEY!"
        assert await mcp.json("delete_workflow", name=name) is True
        assert await mcp.json("delete_workflow", name=name) is False
        assert name not in {w["name"] for w in await mcp.json("list_workflows")}


async def test_artifacts_and_tools_listings(connect: Connect) -> None:
    async with connect() as mcp:
        name = f"report-{uuid.uuid4().hex[:6]}"
        await mcp.text("run_code", code=f"artifacts.save({name!r}, {{'rows': 3}}, 'a report')")
        artifacts = {a["name"]: a for a in await mcp.json("list_artifacts")}
        assert artifacts[name]["description"] == "a report"
        assert isinstance(await mcp.json("list_tools"), list)
        assert isinstance(await mcp.json("search_tools", query="http", limit=3), list)


async def test_deps_add_list_remove(connect: Connect) -> None:
    async with connect() as mcp:
        assert PACKAGE not in await mcp.json("list_deps")
        assert (await mcp.json("add_dep", package=PACKAGE))["installed"] == [PACKAGE]
        assert PACKAGE in await mcp.json("list_deps")
        assert await mcp.text("run_code", code=f"import {MODULE}\n{MODULE}.VALUE") == "42"
        removed = await mcp.json("remove_dep", package=PACKAGE)
        assert removed == {"removed": [PACKAGE], "not_found": []}
        assert PACKAGE not in await mcp.json("list_deps")
        refused = await mcp.error("add_dep", package="pkg; rm -rf /")
        assert "invalid package spec" in refused


async def test_sessions_create_list_history_fork_and_per_call_choice(connect: Connect) -> None:
    async with connect() as mcp:
        await mcp.text("run_code", code="where = 'default'")
        other = (await mcp.json("create_session", agent="mcp-agent"))["session"]
        # Per call: the other session has its own variables; without `session`, the default.
        assert await mcp.text("run_code", code="where = 'other'\nwhere", session=other) == "other"
        assert await mcp.text("run_code", code="where") == "default"
        missing = await mcp.text("run_code", code="y", session=other)
        assert missing.startswith("Error: ") and "NameError" in missing

        listed = await mcp.json("list_sessions", agent="mcp-agent")
        assert other in listed["opened"] and listed["default"] in listed["opened"]
        assert listed["default"] != other
        assert listed["history"]["agent_id"] == "mcp-agent"
        assert listed["history"]["total"] == 1  # the other session, indexed under its agent

        history = await mcp.json("session_history", session=other)
        codes = [m["content"] for m in history["messages"] if m["role"] == "user"]
        assert codes == ["where = 'other'\nwhere", "y"]
        fork = await mcp.json("fork_session", session=other)
        assert fork["session_id"].startswith("h.") and fork["session_id"] != history["session_id"]
        forked = await mcp.json("session_history", session=fork["session_id"])
        assert forked["messages"] == history["messages"]
        own = await mcp.json("session_history", limit=100)
        assert "where = 'default'" in [m["content"] for m in own["messages"]]


async def test_no_session_argument_confines_the_server_to_its_own_session(
    server: ServerProcess, token_file: Path
) -> None:
    async with agent(server.url, token_file, "--no-session-argument") as mcp:
        assert await mcp.text("run_code", code="where = 'own'\nwhere") == "own"
        own = (await mcp.json("list_sessions"))["default"]
        assert await mcp.text("run_code", code="where", session=own) == "own"
        other = (await mcp.json("create_session"))["session"]  # opened, but unreachable
        for tool, arguments in [
            ("run_code", {"code": "1"}),
            ("list_workflows", {}),
            ("session_history", {}),
            ("fork_session", {}),
        ]:
            refused = await mcp.error(tool, session=other, **arguments)
            assert "`session` argument is turned off" in refused, (tool, refused)
            assert repr(own) in refused and "leave `session` out" in refused
        assert await mcp.text("run_code", code="where") == "own"


async def test_tool_errors_are_readable_and_the_server_goes_on(connect: Connect) -> None:
    async with connect() as mcp:
        suspend = await mcp.error("suspend_session")
        assert "only a CodeSession on Kubernetes can be suspended" in suspend
        assert "can be resumed" in await mcp.error("resume_session")
        unknown = await mcp.error("run_code", code="1", session="s.not-a-session")
        assert "is no session of this server" in unknown and "create_session" in unknown
        assert "leave name out" in await mcp.error("create_session", name="mine")
        assert "code" in await mcp.error("run_code", code=5)  # the SDK checks the schema
        assert "1 validation error" in await mcp.error("search_tools", query="x", limit=0)
        assert await mcp.text("run_code", code="'still answering'") == "still answering"


async def test_run_code_output_arrives_as_progress_while_it_runs(
    connect: Connect, tmp_path: Path
) -> None:
    """Each line reaches the client before the next is printed: the run waits for the
    test to acknowledge it (a file), which the test writes on the progress notification."""
    code = (
        "import os, time\n"
        "for i in range(3):\n"
        "    print(f'line {i}', flush=True)\n"
        f"    ack = os.path.join({str(tmp_path)!r}, str(i))\n"
        "    deadline = time.time() + 60\n"
        "    while not os.path.exists(ack) and time.time() < deadline:\n"
        "        time.sleep(0.02)\n"
        "    assert os.path.exists(ack), f'line {i} was not received while running'\n"
        "'done'"
    )
    messages: list[str | None] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        messages.append(message)
        for line in (message or "").splitlines():
            (tmp_path / line.split()[-1]).touch()

    async with connect() as mcp:
        result = await mcp.session.call_tool(
            "run_code", {"code": code}, progress_callback=on_progress
        )
        assert isinstance(result, CallToolResult) and not result.is_error, result
        assert _text(result) == "done\n\nStdout:\nline 0\nline 1\nline 2\n"
    assert "".join(m or "" for m in messages) == "line 0\nline 1\nline 2\n"


async def test_a_cancelled_run_code_call_interrupts_the_run(
    connect: Connect, tmp_path: Path
) -> None:
    """The client cancels the call once the run has started; the run sees the interrupt
    (it writes a file when it does) and the session goes on with its variables."""
    marker = tmp_path / "interrupted"
    code = (
        "import time\n"
        "try:\n"
        "    print('started', flush=True)\n"
        "    while True:\n"
        "        time.sleep(0.05)\n"
        "except KeyboardInterrupt:\n"
        f"    open({str(marker)!r}, 'w').write('interrupted')\n"
        "    raise"
    )
    async with connect() as mcp:
        await mcp.text("run_code", code="kept = 'still here'")
        started = anyio.Event()

        async def on_progress(progress: float, total: float | None, message: str | None) -> None:
            started.set()

        async def run() -> None:
            await mcp.session.call_tool("run_code", {"code": code}, progress_callback=on_progress)

        async with anyio.create_task_group() as group:
            group.start_soon(run)
            await started.wait()
            group.cancel_scope.cancel()  # the SDK's client sends notifications/cancelled
        with anyio.fail_after(60):  # a bound on waiting, not a measurement
            while not marker.exists():
                await anyio.sleep(0.05)
        assert marker.read_text() == "interrupted"
        assert await mcp.text("run_code", code="kept") == "still here"


async def test_an_unreachable_server_is_a_tool_error(token_file: Path) -> None:
    from tests.integration.server_fixture import free_port

    url = f"http://127.0.0.1:{free_port()}"
    async with agent(url, token_file) as down:
        message = await down.error("run_code", code="1")
        assert f"cannot reach the session server ({url}/sessions)" in message
        assert "cannot reach" in await down.error("list_workflows")


def test_bad_command_lines_exit_2_with_one_line(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.write_text("")
    cases = {
        (): "name a session server: --url URL (or CODEMODE_URL)",
        ("--url", "ftp://x"): "--url must be an http:// or https:// URL",
        ("--url", "http://x", "--token-file", str(tmp_path / "no")): "cannot read --token-file",
        ("--url", "http://x", "--token-file", str(empty)): "is empty",
        ("--url", "http://x", "-n", "ns"): "--namespace is for --codesession",
        ("--url", "http://x", "--codesession", "a"): "leave out --url and --token-file",
    }
    env = {"PATH": "/usr/bin:/bin", "NO_PROXY": "*"}
    for args, expected in cases.items():
        proc = subprocess.run(
            [sys.executable, "-m", "codemode_session", "mcp", *args],
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
            stdin=subprocess.DEVNULL,
        )
        assert proc.returncode == 2, (args, proc.stderr)
        assert proc.stdout == ""
        lines = proc.stderr.splitlines()
        assert len(lines) == 1 and expected in lines[0], (args, proc.stderr)


class FakeSessions:
    """The operator's `Sessions` client as `--codesession` uses it, with every CodeSession
    served by the test server: the Kubernetes side of the session tools, without a cluster."""

    def __init__(self, server: ServerProcess) -> None:
        self.server = server
        self.objects: dict[str, dict[str, Any]] = {}
        self.addressed: list[tuple[str, str | None]] = []

    def _object(self, name: str, workspace: str | None, **spec: Any) -> dict[str, Any]:
        found = self.objects.get(name)
        if found is None:
            if workspace is None:
                raise NotFoundError(f"CodeSession {name!r} does not exist in namespace 'ns'")
            found = {
                "metadata": {"name": name, "creationTimestamp": f"t{len(self.objects)}"},
                "spec": {"workspaceRef": workspace, **spec},
                "status": {"phase": "Running", "stateId": f"cs.{name}"},
            }
            self.objects[name] = found
        return found

    def address(self, name: str, workspace: str | None, timeout: float) -> tuple[str, str]:
        self.addressed.append((name, workspace))
        self._object(name, workspace)
        return self.server.url, TOKEN

    def ensure(self, name: str, workspace: str | None, spec: dict[str, Any] | None) -> Any:
        return self._object(name, workspace, **(spec or {}))

    def list(self, agent: str | None, workspace: str | None) -> list[Any]:
        return list(reversed(self.objects.values()))

    def history(self, name: str, offset: int, limit: int) -> dict[str, Any]:
        return {"session_id": self.objects[name]["status"]["stateId"], "messages": []}

    def fork(self, name: str, new_name: str) -> Any:
        workspace = self.objects[name]["spec"]["workspaceRef"]
        return self._object(new_name, workspace, forkFrom={"session": name})

    def suspend(self, name: str, wait: float | None) -> Any:
        self.objects[name]["status"]["phase"] = "Suspended"
        return self.objects[name]

    def resume(self, name: str, wait: float | None) -> Any:
        self.objects[name]["status"]["phase"] = "Running"
        return self.objects[name]

    def close(self) -> None:
        pass


async def test_codesession_tools_map_onto_the_sessions_client(server: ServerProcess) -> None:
    """`--codesession`'s backend, in process through the SDK's in-memory client."""
    from codemode_session.mcp.backends import KubeBackend
    from codemode_session.mcp.server import build
    from mcp.client import Client

    sessions = FakeSessions(server)
    backend = KubeBackend(sessions, "agent-1", WORKSPACE, "planner", 30.0)
    try:
        async with Client(build(backend)) as client:

            async def call(tool: str, **arguments: Any) -> tuple[bool, str]:
                result = await client.call_tool(tool, arguments)
                assert isinstance(result, CallToolResult)
                return bool(result.is_error), _text(result)

            # The default CodeSession is created in -w on first use; others must exist.
            assert await call("run_code", code="n = 1\nn") == (False, "1")
            assert sessions.addressed == [("agent-1", WORKSPACE)]
            error, message = await call("run_code", code="1", session="agent-2")
            assert error and "CodeSession 'agent-2' does not exist" in message
            error, message = await call("create_session", name="agent-2")
            assert not error and json.loads(message)["agent"] == "planner"
            assert await call("run_code", code="'two'", session="agent-2") == (False, "two")
            assert sessions.addressed[-1] == ("agent-2", None)

            error, message = await call("list_sessions")
            assert [row["name"] for row in json.loads(message)] == ["agent-2", "agent-1"]
            error, message = await call("session_history")
            assert json.loads(message)["session_id"] == "cs.agent-1"
            error, message = await call("fork_session")
            assert error and "new_name" in message
            error, message = await call("fork_session", new_name="agent-1b")
            assert json.loads(message)["name"] == "agent-1b"

            # Suspend forgets the pod's address; the next call looks it up again.
            error, message = await call("suspend_session")
            assert json.loads(message)["phase"] == "Suspended"
            assert json.loads((await call("resume_session", session="agent-1"))[1])["phase"] == (
                "Running"
            )
            before = len(sessions.addressed)
            assert await call("run_code", code="'back'") == (False, "back")
            assert sessions.addressed[before:] == [("agent-1", WORKSPACE)]

            # --no-session-argument: agent-1 only, even though agent-2 exists.
            backend.allow_session_argument = False
            error, message = await call("run_code", code="'two'", session="agent-2")
            assert error and "turned off" in message and "'agent-1'" in message
            assert await call("run_code", code="'one'", session="agent-1") == (False, "one")
            error, message = await call("resume_session", session="agent-2")
            assert error and "turned off" in message
    finally:
        backend.close()


def test_without_the_sdk_it_says_what_to_install_in_one_line() -> None:
    code = "import sys\nsys.modules['mcp'] = None\nfrom codemode_session.cli.main import main\n"
    proc = subprocess.run(
        [sys.executable, "-c", code + "sys.exit(main())", "mcp", "--url", "http://x"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [
        "codemode: error: codemode mcp needs the mcp extra (the MCP SDK): "
        "pip install 'codemode[mcp]'"
    ]
