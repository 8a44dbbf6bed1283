"""tools, workflows, artifacts and deps inside executed code, across sessions and workspaces.

One server with no pinned workspace: sessions are created for workspace `alpha`
(two of them), `beta`, and with no workspace (py-code-mode's legacy layout).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.conftest import RedisServer
from tests.integration.server_fixture import Api, ServerProcess, base_settings, running_server

pytestmark = pytest.mark.redis

TOOLS = {
    "say.yaml": """
name: say
description: Echo words back
command: echo
schema:
  options:
    no_newline:
      type: boolean
      short: n
      description: no trailing newline
  positional:
    - name: words
      description: what to say
recipes:
  quietly:
    description: say without a newline
    preset:
      no_newline: true
""",
    "numbers.yaml": """
name: numbers
description: Print a sequence of numbers with seq
command: seq
schema:
  options:
    separator:
      type: string
      short: s
    equal_width:
      type: boolean
      short: w
  positional:
    - name: first
    - name: last
recipes:
  csv:
    description: comma-separated
    preset:
      separator: ","
""",
    "fmt.yaml": """
name: fmt
description: Format text with printf
command: printf
schema:
  positional:
    - name: format
    - name: values
      required: false
""",
}

DOUBLE = '''"""Double a number."""


async def run(x: int, times: int = 2) -> int:
    """Multiply x.

    Args:
        x: the number
        times: the factor
    """
    return x * times
'''

COMBINE = '''"""Use another workflow, a tool and an artifact."""


async def run(n: int) -> dict:
    doubled = workflows.double(x=n)
    invoked = workflows.invoke("double", x=n, times=3)
    said = tools.say(words=f"n={n}")
    artifacts.save("combine/last", {"n": n, "doubled": doubled})
    return {"doubled": doubled, "invoked": invoked, "said": said,
            "stored": artifacts.load("combine/last")}
'''


@pytest.fixture(scope="module")
def prefix() -> str:
    return f"ns{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def server(
    redis_server: RedisServer, prefix: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    tools_dir = tmp_path_factory.mktemp("tools")
    for name, text in TOOLS.items():
        (tools_dir / name).write_text(text)
    settings = base_settings(redis_server.url, prefix, TOOLS_PATH=str(tools_dir))
    with running_server(settings) as srv:
        yield srv


@pytest.fixture(scope="module")
def api(server: ServerProcess) -> Iterator[Api]:
    with server.client() as client:
        yield Api(server, client)


@pytest.fixture(scope="module")
def alpha(api: Api) -> str:
    return api.session("alpha")


@pytest.fixture(scope="module")
def alpha2(api: Api) -> str:
    return api.session("alpha")


@pytest.fixture(scope="module")
def beta(api: Api) -> str:
    return api.session("beta")


@pytest.fixture(scope="module")
def legacy(api: Api) -> str:
    return api.session()


def error_of(api: Api, session: str, code: str) -> dict[str, Any]:
    result = api.execute(session, code)
    assert result["error"], f"expected an error from {code!r}"
    return result


# ---- artifacts ----------------------------------------------------------------------------


def test_artifacts_roundtrip_all_types_across_sessions(api: Api, alpha: str, alpha2: str) -> None:
    api.value(alpha, "artifacts.save('raw.bin', b'\\x00\\x01\\xff', description='some bytes')")
    api.value(
        alpha,
        "artifacts.save('notes/today.txt', 'hello\\nworld', metadata={'author': 'agent', 'n': 1})",
    )
    info = api.value(
        alpha,
        "artifacts.save('result.json', {'rows': [1, 2], 'ok': True}, "
        "description='a result', metadata={'source': 'test'})",
    )
    assert info["name"] == "result.json" and info["data_type"] == "json"
    assert info["description"] == "a result"
    assert info["metadata"] == {"source": "test", "_data_type": "json"}

    # Another session of the same workspace sees everything, with its type.
    assert api.value(alpha2, "artifacts.load('raw.bin')") == "b'\\x00\\x01\\xff'"
    assert api.value(alpha2, "type(artifacts.load('raw.bin')).__name__") == "bytes"
    assert api.value(alpha2, "artifacts.load('notes/today.txt')") == "hello\nworld"
    assert api.value(alpha2, "artifacts.load('result.json')") == {"rows": [1, 2], "ok": True}
    listed = api.value(alpha2, "artifacts.list()")
    assert [a["name"] for a in listed] == ["notes/today.txt", "raw.bin", "result.json"]
    by_name = {a["name"]: a for a in listed}
    assert by_name["raw.bin"]["description"] == "some bytes"
    assert by_name["raw.bin"]["data_type"] == "bytes"
    assert by_name["notes/today.txt"]["metadata"]["author"] == "agent"
    assert api.value(alpha2, "artifacts.exists('result.json')") is True
    assert api.value(alpha2, "artifacts.exists('nope')") is False
    got = api.value(alpha2, "artifacts.get('result.json')")
    assert got["description"] == "a result" and got["created_at"] > 0
    assert api.value(alpha2, "artifacts.get('nope')") is None

    # Delete in one session, gone in the other.
    assert api.value(alpha2, "artifacts.delete('raw.bin')") is True
    assert api.value(alpha, "artifacts.exists('raw.bin')") is False
    assert api.value(alpha, "artifacts.delete('raw.bin')") is False
    missing = error_of(api, alpha, "artifacts.load('raw.bin')")
    assert missing["error_type"] == "NotFoundError"
    assert "no artifact named 'raw.bin'" in missing["error"]


def test_artifacts_are_invisible_to_other_workspaces(
    api: Api, alpha: str, beta: str, legacy: str
) -> None:
    api.value(alpha, "artifacts.save('secret.txt', 'alpha only')")
    for other in (beta, legacy):
        assert api.value(other, "artifacts.exists('secret.txt')") is False
        assert "secret.txt" not in [a["name"] for a in api.value(other, "artifacts.list()")]
        assert error_of(api, other, "artifacts.load('secret.txt')")["error_type"] == "NotFoundError"
    api.value(beta, "artifacts.save('secret.txt', 'beta own')")
    assert api.value(alpha, "artifacts.load('secret.txt')") == "alpha only"
    assert api.value(beta, "artifacts.load('secret.txt')") == "beta own"


def test_artifact_redis_layout(
    api: Api, alpha: str, legacy: str, rdb: redis.Redis, prefix: str
) -> None:
    api.value(
        alpha, "artifacts.save('layout.txt', 'in redis', description='d', metadata={'k': 'v'})"
    )
    assert rdb.get(f"{prefix}:ws:alpha:artifacts:layout.txt") == b"in redis"
    entry = json.loads(rdb.hget(f"{prefix}:ws:alpha:artifacts:__index__", "layout.txt"))
    assert entry["description"] == "d"
    assert entry["metadata"] == {"k": "v", "_data_type": "text"}
    # ISO 8601, as py-code-mode writes and reads it (its list_artifacts parses it).
    assert datetime.fromisoformat(entry["created_at"]).tzinfo is not None
    assert rdb.get(f"{prefix}:artifacts:layout.txt") is None

    # Legacy (no workspace): py-code-mode's unscoped keys.
    api.value(legacy, "artifacts.save('old.json', [1, 2])")
    assert json.loads(rdb.get(f"{prefix}:artifacts:old.json")) == [1, 2]
    assert rdb.hexists(f"{prefix}:artifacts:__index__", "old.json")


def test_artifact_written_by_another_client_is_readable(
    api: Api, beta: str, rdb: redis.Redis, prefix: str
) -> None:
    rdb.set(f"{prefix}:ws:beta:artifacts:from-pcm.json", b'{"x": 1}')
    rdb.hset(
        f"{prefix}:ws:beta:artifacts:__index__",
        "from-pcm.json",
        json.dumps(
            {
                "description": "by py-code-mode",
                "created_at": "2024-05-01T12:00:00",
                "metadata": {"_data_type": "json"},
            }
        ),
    )
    assert api.value(beta, "artifacts.load('from-pcm.json')") == {"x": 1}
    assert api.value(beta, "artifacts.get('from-pcm.json')['description']") == "by py-code-mode"


@pytest.mark.parametrize("name", ["../escape", ".hidden", "a b", "/abs", "__index__", "a:b"])
def test_invalid_artifact_names_in_code(api: Api, alpha: str, name: str) -> None:
    result = error_of(api, alpha, f"artifacts.save({name!r}, 'x')")
    assert result["error_type"] == "ValidationError"
    assert "invalid artifact name" in result["error"]


def test_unserializable_artifact(api: Api, alpha: str) -> None:
    result = error_of(api, alpha, "artifacts.save('obj', object())")
    assert result["error_type"] == "ValidationError"
    assert "bytes, str or JSON-serializable" in result["error"]


# ---- workflows ----------------------------------------------------------------------------


def test_workflow_lifecycle(api: Api, alpha: str, alpha2: str) -> None:
    created = api.value(alpha, f"workflows.create('double', {DOUBLE!r})")
    assert created["name"] == "double" and created["description"] == "Double a number."
    assert created["parameters"] == [
        {
            "name": "x",
            "type": "int",
            "description": "the number",
            "required": True,
            "default": None,
        },
        {
            "name": "times",
            "type": "int",
            "description": "the factor",
            "required": False,
            "default": 2,
        },
    ]
    assert api.value(alpha2, "workflows.double(x=21)") == 42
    assert api.value(alpha2, "workflows.invoke('double', x=2, times=5)") == 10
    assert api.value(alpha2, "'double' in [w['name'] for w in workflows.list()]") is True
    assert api.value(alpha2, "[w['name'] for w in workflows.search('double number')]") == ["double"]
    assert api.value(alpha2, "workflows.search('zebra')") == []
    got = api.value(alpha2, "workflows.get('double')")
    assert got["source"] == DOUBLE and got["name"] == "double"
    assert api.value(alpha2, "workflows.get('missing_one')") is None

    # Updating the source takes effect in a session that already ran the old one.
    api.value(
        alpha,
        "workflows.create('double', 'async def run(x: int) -> int:\\n"
        "    return x + x + 1\\n', description='changed')",
    )
    assert api.value(alpha2, "workflows.double(x=1)") == 3
    assert api.value(alpha2, "workflows.delete('double')") is True
    assert api.value(alpha, "workflows.get('double')") is None
    assert api.value(alpha, "workflows.delete('double')") is False
    gone = error_of(api, alpha, "workflows.double(x=1)")
    assert gone["error_type"] == "NotFoundError" and "no workflow named 'double'" in gone["error"]


def test_workflow_calls_workflow_tool_and_artifact(api: Api, alpha: str, alpha2: str) -> None:
    api.value(alpha, f"workflows.create('double', {DOUBLE!r})")
    api.value(alpha, f"workflows.create('combine', {COMBINE!r})")
    result = api.value(alpha2, "workflows.combine(n=4)")
    assert result == {
        "doubled": 8,
        "invoked": 12,
        "said": "n=4\n",
        "stored": {"n": 4, "doubled": 8},
    }
    # Awaited from top-level code too, and from a workflow's own await.
    assert api.value(alpha2, "artifacts.load('combine/last')") == {"n": 4, "doubled": 8}


def test_workflow_errors_reach_the_agent(api: Api, alpha: str) -> None:
    api.value(
        alpha,
        "workflows.create('fails', 'async def run():\\n"
        '    raise RuntimeError("inside workflow")\\n\')',
    )
    result = error_of(api, alpha, "workflows.fails()")
    assert result["error_type"] == "RuntimeError"
    assert "inside workflow" in result["error"] and "<workflow fails>" in result["error"]
    wrong = error_of(api, alpha, f"workflows.create('double', {DOUBLE!r})\nworkflows.double(y=1)")
    assert wrong["error_type"] == "TypeError"


@pytest.mark.parametrize("name", ["list", "search", "get", "invoke", "create", "delete"])
def test_reserved_workflow_names(api: Api, alpha: str, name: str) -> None:
    result = error_of(api, alpha, f"workflows.create({name!r}, 'async def run():\\n    pass\\n')")
    assert result["error_type"] == "ValidationError"
    assert "reserved" in result["error"]


@pytest.mark.parametrize("name", ["my-flow", "2fast", "a b", "../x", ""])
def test_non_identifier_workflow_names(api: Api, alpha: str, name: str) -> None:
    result = error_of(api, alpha, f"workflows.create({name!r}, 'async def run():\\n    pass\\n')")
    assert result["error_type"] == "ValidationError"
    assert "must be a Python identifier" in result["error"]


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("def run():\n    pass\n", "must be `async def run"),
        ("async def other():\n    pass\n", "must define `async def run"),
        ("async def run(:\n", "syntax error at line 1"),
        ("", "source is empty"),
    ],
)
def test_invalid_workflow_sources(api: Api, alpha: str, source: str, message: str) -> None:
    result = error_of(api, alpha, f"workflows.create('bad_one', {source!r})")
    assert result["error_type"] == "ValidationError"
    assert message in result["error"]


def test_workflows_are_scoped_to_the_workspace(
    api: Api, alpha: str, beta: str, legacy: str, rdb: redis.Redis, prefix: str
) -> None:
    api.value(alpha, "workflows.create('alpha_only', 'async def run():\\n    return \"a\"\\n')")
    for other in (beta, legacy):
        assert api.value(other, "workflows.get('alpha_only')") is None
        assert error_of(api, other, "workflows.alpha_only()")["error_type"] == "NotFoundError"
    stored = json.loads(rdb.hget(f"{prefix}:ws:alpha:workflows:__workflows__", "alpha_only"))
    assert stored["name"] == "alpha_only" and "source" in stored and stored["parameters"] == []


def test_legacy_unscoped_workflows(
    api: Api, legacy: str, alpha: str, rdb: redis.Redis, prefix: str
) -> None:
    api.value(
        legacy,
        "workflows.create('legacy_flow', 'async def run(a: str = \"x\"):\\n    return a * 2\\n')",
    )
    raw = rdb.hget(f"{prefix}:workflows:__workflows__", "legacy_flow")
    assert raw is not None
    stored = json.loads(raw)
    assert stored["parameters"][0]["name"] == "a" and stored["parameters"][0]["default"] == "x"
    assert not any(
        key.startswith(f"{prefix}:ws:".encode())
        and b"legacy_flow" in (rdb.hkeys(key) if rdb.type(key) == b"hash" else [])
        for key in rdb.keys(f"{prefix}:ws:*")
    )
    assert api.value(alpha, "workflows.get('legacy_flow')") is None

    # A workflow written by py-code-mode (same layout) runs here.
    rdb.hset(
        f"{prefix}:workflows:__workflows__",
        "from_pcm",
        json.dumps(
            {
                "name": "from_pcm",
                "description": "written by py-code-mode",
                "source": "async def run(n: int) -> int:\n    return n + 100\n",
                "parameters": [
                    {
                        "name": "n",
                        "type": "int",
                        "description": "",
                        "required": True,
                        "default": None,
                    }
                ],
            }
        ),
    )
    assert api.value(legacy, "workflows.from_pcm(n=1)") == 101
    assert api.value(legacy, "workflows.legacy_flow()") == "xx"


def test_library_owned_workflow_cannot_be_changed(
    api: Api, beta: str, rdb: redis.Redis, prefix: str
) -> None:
    api.value(beta, "workflows.create('managed', 'async def run():\\n    return 1\\n')")
    rdb.hset(f"{prefix}:ws:beta:workflows:__owners__", "managed", "team-lib")
    result = error_of(api, beta, "workflows.delete('managed')")
    assert result["error_type"] == "ConflictError"
    assert "team-lib" in result["error"]
    assert api.value(beta, "workflows.managed()") == 1


# ---- tools ---------------------------------------------------------------------------------


def test_tools_list_and_search(api: Api, alpha: str) -> None:
    names = api.value(alpha, "[t['name'] for t in tools.list()]")
    assert sorted(names) == ["fmt", "numbers", "say"]
    hits = api.value(alpha, "[t['name'] for t in tools.search('sequence numbers')]")
    assert hits[0] == "numbers"
    # Gibberish: no word in common and nothing alike ("nothing like this" is English,
    # and the search model finds `say` close to it).
    assert api.value(alpha, "tools.search('zzzz-qqqq')") == []
    say = api.value(alpha, "[t for t in tools.list() if t['name'] == 'say'][0]")
    assert say["recipes"] == [
        {"name": "quietly", "description": "say without a newline", "params": None}
    ]


def test_tools_run_with_options_positionals_and_recipes(api: Api, alpha: str) -> None:
    assert api.value(alpha, "tools.say(words='hello')") == "hello\n"
    assert api.value(alpha, "tools.say(words='hello', no_newline=True)") == "hello"
    assert api.value(alpha, "tools.say.quietly(words='shh')") == "shh"
    assert api.value(alpha, "tools.numbers(first=1, last=3)") == "1\n2\n3\n"
    assert api.value(alpha, "tools.numbers.csv(first=1, last=4)") == "1,2,3,4\n"
    assert (
        api.value(alpha, "tools.numbers(first=9, last=10, equal_width=True, separator=' ')")
        == "09 10\n"
    )
    assert api.value(alpha, "tools.fmt(format='%s|%s', values=['a', 'b'])") == "a|b"


@pytest.mark.parametrize(
    "text",
    [
        "$(touch /tmp/codemode-pwned)",
        "`id`",
        "a; echo pwned",
        "x | cat",
        "$HOME",
        "a && b",
        "> /tmp/codemode-pwned",
        "*",
    ],
)
def test_tool_arguments_are_not_shell(api: Api, alpha: str, text: str) -> None:
    assert api.value(alpha, f"tools.fmt(format='[%s]', values={text!r})") == f"[{text}]"
    assert not Path("/tmp/codemode-pwned").exists()


def test_tool_errors(api: Api, alpha: str) -> None:
    missing = error_of(api, alpha, "tools.curl(url='x')")
    assert missing["error_type"] == "AttributeError" and "no tool named 'curl'" in missing["error"]
    bad_arg = error_of(api, alpha, "tools.say(volume=3, words='x')")
    assert bad_arg["error_type"] == "ValidationError"
    assert "has no argument volume" in bad_arg["error"]
    no_recipe = error_of(api, alpha, "tools.say.shout(words='x')")
    assert "has no recipe 'shout'" in no_recipe["error"]
    failed = error_of(api, alpha, "tools.numbers(first='a', last='b')")
    assert failed["error_type"] == "ToolError" and "exited with" in failed["error"]


def test_tools_from_redis(api: Api, beta: str, rdb: redis.Redis, prefix: str) -> None:
    rdb.hset(
        f"{prefix}:tools:__tools__",
        "greet",
        "name: greet\ndescription: greet someone\ncommand: echo\nschema:\n"
        "  positional:\n    - name: who\n",
    )
    fresh = api.session("beta")
    assert api.value(fresh, "tools.greet(who='you')") == "you\n"


# ---- deps (off on this server) ----------------------------------------------------------------


def test_deps_disabled(api: Api, alpha: str) -> None:
    assert api.value(alpha, "deps.list()") == []
    for call in ("deps.add('requests')", "deps.remove('requests')", "deps.sync()"):
        result = error_of(api, alpha, call)
        assert result["error_type"] == "ForbiddenError"
        assert "ALLOW_RUNTIME_DEPS" in result["error"] and "disabled" in result["error"]
    refused = api.http.post("/api/deps/add", json={"package": "requests"})
    assert refused.status_code == 403 and "ALLOW_RUNTIME_DEPS" in refused.json()["detail"]


def test_namespace_reprs(api: Api, alpha: str) -> None:
    assert "save, load" in api.value(alpha, "repr(artifacts)")
    assert "fmt" in api.value(alpha, "repr(tools)")
    assert "invoke" in api.value(alpha, "repr(workflows)")
    assert "add" in api.value(alpha, "repr(deps)")


# ---- the same through FileStorage (STORAGE_DIR instead of REDIS_URL) --------------------------


def test_file_storage_server(tmp_path: Path) -> None:
    settings = {
        "STORAGE_DIR": str(tmp_path),
        "CONTAINER_AUTH_TOKEN": "file-token-0123456789",
        "WORKER_SPARES": "0",
    }
    with running_server(settings) as server, server.client() as client:
        api = Api(server, client)
        first, second, other = api.session("ws1"), api.session("ws1"), api.session("ws2")
        api.value(
            first,
            "artifacts.save('notes.txt', 'on disk')\n"
            "workflows.create('inc', 'async def run(x: int):\\n    return x + 1\\n')",
        )
        assert api.value(second, "artifacts.load('notes.txt')") == "on disk"
        assert api.value(second, "workflows.inc(x=1)") == 2
        assert api.value(other, "artifacts.exists('notes.txt')") is False
        assert api.value(other, "workflows.get('inc')") is None
        assert (tmp_path / "workspaces/ws1/artifacts/notes.txt").read_text() == "on disk"
        assert (tmp_path / "workspaces/ws1/workflows/inc.py").exists()
        assert not (tmp_path / "workspaces/ws2/artifacts/notes.txt").exists()
        assert client.get("/ready").json() == {"ready": True}
