"""MCP and HTTP tools called from agent code in a real `codemode serve`: a real MCP
server (the SDK's MCPServer, over stdio and streamable HTTP) and a real HTTP server on
loopback, with their error paths."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from codemode_session.errors import ValidationError
from codemode_session.tools import parse_tool_yaml

from tests.conftest import RedisServer, free_port, wait_for_port
from tests.integration.server_fixture import Api, ServerProcess, base_settings, running_server

pytestmark = pytest.mark.redis

FIXTURE = Path(__file__).with_name("mcp_tool_server.py")
TOKEN_VALUE = "s3cr3t-from-a-mounted-secret"


class _Api(BaseHTTPRequestHandler):
    """A small JSON API: what the HTTP tool tests call."""

    def log_message(self, *_: Any) -> None:
        pass

    def _send(self, status: int, body: Any, kind: str = "application/json") -> None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        if self.headers.get("Authorization") != f"Bearer {TOKEN_VALUE}":
            self._send(401, {"error": "no token"})
        elif self.path.startswith("/items/"):
            item, _, query = self.path[len("/items/") :].partition("?")
            self._send(200, {"item": item, "query": query})
        elif self.path == "/big":
            self._send(200, b"x" * (2 * 1024 * 1024), "text/plain")
        elif self.path == "/slow":
            time.sleep(3)
            self._send(200, {"late": True})
        else:
            self._send(404, {"error": f"nothing at {self.path}"})

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self._send(201, {"got": json.loads(self.rfile.read(length) or b"null")})


@pytest.fixture(scope="module")
def api_server() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Api)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()


@pytest.fixture(scope="module")
def mcp_http_port() -> Iterator[int]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, str(FIXTURE), "streamable-http", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port)
        yield port
    finally:
        proc.kill()
        proc.wait()


def _tools_dir(root: Path, api_port: int, mcp_port: int) -> Path:
    tools = root / "tools"
    tools.mkdir()
    secret = root / "secret-token"
    secret.write_text(f"Bearer {TOKEN_VALUE}\n")  # a key of a mounted Secret
    (tools / "fixture.yaml").write_text(
        textwrap.dedent(
            f"""\
            name: fixture
            type: mcp
            transport: stdio
            command: {sys.executable}
            args: [{str(FIXTURE)!r}]
            env:
              FIXTURE_WORD: "${{WORD_FOR_TOOLS}}"
            description: Arithmetic and text helpers over MCP
            tags: [math, text]
            timeout: 2
            """
        )
    )
    (tools / "remote.yaml").write_text(
        textwrap.dedent(
            f"""\
            name: remote
            type: mcp
            transport: streamable-http
            url: http://127.0.0.1:{mcp_port}/mcp
            description: The same helpers, served over streamable HTTP
            """
        )
    )
    (tools / "broken.yaml").write_text(
        "name: broken\ntype: mcp\ncommand: /nonexistent/mcp-server\ndescription: never starts\n"
    )
    (tools / "inventory.yaml").write_text(
        textwrap.dedent(
            f"""\
            name: inventory
            type: http
            description: Items of the warehouse
            tags: [stock]
            base_url: http://127.0.0.1:{api_port}
            timeout: 1
            max_response_bytes: 100000
            secret_headers:
              Authorization: {secret}
            endpoints:
              item:
                path: /items/{{item_id}}
                description: One item by its id
                params:
                  item_id: {{in: path}}
                  detail: {{in: query, default: short}}
              create:
                method: post
                path: /items
                description: Store a new item
                params:
                  name: {{in: body}}
                  count: {{in: body, default: 1}}
              big: {{path: /big}}
              slow: {{path: /slow}}
              missing: {{path: /nowhere}}
            """
        )
    )
    return tools


@pytest.fixture(scope="module")
def server(
    redis_server: RedisServer,
    tmp_path_factory: pytest.TempPathFactory,
    api_server: int,
    mcp_http_port: int,
) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("remote-tools")
    tools = _tools_dir(root, api_server, mcp_http_port)
    env = base_settings(
        redis_server.url,
        f"rt{uuid.uuid4().hex[:8]}",
        WORKSPACE_ID="wstools",
        TOOLS_PATH=str(tools),
        WORD_FOR_TOOLS="from-the-pod-env",
    )
    with running_server(env) as srv:
        yield srv


@pytest.fixture
def api(server: ServerProcess) -> Iterator[Api]:
    with server.client() as client:
        yield Api(server, client)


def test_an_mcp_servers_tools_are_listed_and_called(api: Api) -> None:
    session = api.session()
    listed = api.value(session, "{t['name']: t for t in tools.list()}['fixture']")
    assert listed["type"] == "mcp" and listed["tags"] == ["math", "text"]
    names = {t["name"]: t for t in listed["tools"]}
    assert {"add", "shout", "secret_word", "fail", "slow"} <= set(names)
    assert names["add"]["input_schema"]["properties"].keys() == {"a", "b"}
    assert api.value(session, "tools.fixture.add(a=2, b=40)") == 42
    assert api.value(session, "tools.fixture.shout(text='quiet')") == "QUIET"
    assert api.value(session, "tools.fixture.secret_word()") == "from-the-pod-env"


def test_mcp_errors_are_clear(api: Api) -> None:
    session = api.session()
    failed = api.execute(session, "tools.fixture.fail(reason='the disk is on fire')")
    assert failed["error_type"] == "ToolError" and "the disk is on fire" in failed["error"]
    slow = api.execute(session, "tools.fixture.slow(seconds=5)")
    assert slow["error_type"] == "ToolError" and "no answer within 2s" in slow["error"]
    missing = api.execute(session, "tools.fixture.divide(a=1, b=0)")
    assert missing["error_type"] == "AttributeError" and "shout" in missing["error"]
    broken = api.execute(session, "tools.broken.anything()")
    assert broken["error_type"] == "ToolError" and "did not start" in broken["error"]
    # The list still answers, with the broken server's reason beside it.
    listed = api.value(session, "{t['name']: t for t in tools.list()}['broken']")
    assert "did not start" in listed["error"]


def test_a_stdio_server_is_the_workers_and_stops_with_it(api: Api) -> None:
    session = api.session()
    code = (
        "import os\ntools.fixture.add(a=1, b=1)\n"
        "def parent(p):\n"
        "    return int(open(f'/proc/{p}/stat').read().rsplit(')', 1)[1].split()[1])\n"
        "[p for p in os.listdir('/proc') if p.isdigit() and parent(p) == os.getpid()\n"
        " and 'mcp_tool_server' in open(f'/proc/{p}/cmdline').read()]"
    )
    pids = api.value(session, code)
    assert len(pids) == 1
    assert api.http.delete("/sessions", headers={"X-Session-ID": session}).status_code == 200
    deadline = time.monotonic() + 10
    while Path(f"/proc/{pids[0]}").exists():
        assert time.monotonic() < deadline, "the MCP server outlived its worker"
        time.sleep(0.1)


def test_a_streamable_http_server_is_called_too(api: Api) -> None:
    session = api.session()
    assert api.value(session, "tools.remote.add(a=20, b=22)") == 42


def test_search_finds_an_mcp_servers_tool(api: Api) -> None:
    session = api.session()
    found = api.value(session, "[t['name'] for t in tools.search('capital letters', limit=3)]")
    assert found[0] in ("fixture.shout", "remote.shout")


def test_http_endpoints_are_called_with_their_parameters(api: Api) -> None:
    session = api.session()
    got = api.value(session, "tools.inventory.item(item_id='a b/c', detail='full')")
    assert got == {"item": "a%20b%2Fc", "query": "detail=full"}
    assert api.value(session, "tools.inventory.item(item_id='7')")["query"] == "detail=short"
    created = api.value(session, "tools.inventory.create(name='bolt')")
    assert created == {"got": {"name": "bolt", "count": 1}}
    listed = api.value(session, "{t['name']: t for t in tools.list()}['inventory']")
    assert [e["name"] for e in listed["endpoints"]] == ["item", "create", "big", "slow", "missing"]


def test_http_errors_are_clear(api: Api) -> None:
    session = api.session()
    cases = {
        "tools.inventory.missing()": "answered 404",
        "tools.inventory.big()": "larger than max_response_bytes",
        "tools.inventory.slow()": "no answer within 1s",
        "tools.inventory.item()": "parameter 'item_id' is required",
        "tools.inventory.item(item_id=1, colour='red')": "no parameter 'colour'",
    }
    for code, expected in cases.items():
        result = api.execute(session, code)
        assert result["error"] is not None and expected in result["error"], (code, result)


@pytest.mark.parametrize(
    ("yaml_text", "expected"),
    [
        ("name: m\ntype: mcp\ntransport: stdio\n", "needs 'command'"),
        ("name: m\ntype: mcp\ntransport: streamable-http\n", "needs 'url'"),
        ("name: m\ntype: mcp\ncommand: x\ntransport: carrier-pigeon\n", "transport"),
        ("name: h\ntype: http\nbase_url: ftp://x\nendpoints: {a: {}}\n", "base_url"),
        ("name: h\ntype: http\nbase_url: http://x\nendpoints: {}\n", "endpoints"),
        (
            "name: h\ntype: http\nbase_url: http://x\nendpoints: {a: {path: '/i/{id}'}}\n",
            "placeholders id",
        ),
        ("name: t\ntype: telepathy\n", "is not cli, mcp or http"),
    ],
)
def test_bad_yaml_names_the_field(yaml_text: str, expected: str) -> None:
    with pytest.raises(ValidationError, match=expected):
        parse_tool_yaml(yaml_text)


def test_py_code_modes_mcp_yaml_form_loads() -> None:
    """py-code-mode's own form: transport, command, args, env, tags as a list."""
    spec = parse_tool_yaml(
        'name: time\ntype: mcp\ntransport: stdio\ncommand: uvx\nargs: ["mcp-server-time"]\n'
        "description: Get current time in any timezone\ntags: [util, mcp]\n"
    )
    assert spec.summary()["type"] == "mcp" and spec.tags == ("util", "mcp")
