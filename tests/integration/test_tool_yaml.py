"""Tool YAML as py-code-mode writes it: tags found by search, recipe params shown and
enforced, and its curl tool run against a real HTTP server on loopback."""

from __future__ import annotations

import http.server
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import RedisServer
from tests.integration.server_fixture import Api, ServerProcess, base_settings, running_server

pytestmark = pytest.mark.redis

# py-code-mode's curl tool, field for field (schema options with short flags, the url
# positional, get/post/download recipes whose params name what the caller gives).
CURL = """
name: curl
description: Make HTTP requests
command: curl
timeout: 60
tags: [http, network]
schema:
  options:
    silent: {type: boolean, short: s, description: No progress meter}
    location: {type: boolean, short: L, description: Follow redirects}
    output: {type: string, short: o, description: Write the body to this file}
    header: {type: array, short: H, description: Extra request headers}
    data: {type: string, short: d, description: Request body}
    request: {type: string, short: X, description: HTTP method}
  positional:
    - {name: url, type: string, required: true, description: Address to request}
recipes:
  get:
    description: GET a URL quietly, following redirects
    preset: {silent: true, location: true}
    params: {url: {}}
  post:
    description: POST data to a URL
    preset: {silent: true, location: true, request: POST}
    params: {url: {}, data: {}}
  download:
    description: Save a URL to a file
    preset: {silent: true, location: true}
    params: {url: {}, output: {}}
"""
COUNT = """
name: count
description: Print a run of numbers
command: seq
tags: sequence
schema:
  positional:
    - {name: last, type: integer}
recipes:
  upto:
    description: one to last
    params:
      last: {default: 3, description: where to stop}
"""


class _Echo(http.server.BaseHTTPRequestHandler):
    """Answers with the method, path and body it got; /old redirects to /new."""

    def _answer(self, body: bytes) -> None:
        if self.path == "/old":
            self.send_response(302)
            self.send_header("Location", "/new")
            self.end_headers()
            return
        text = f"{self.command} {self.path} {body.decode()}".strip().encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(text)))
        self.end_headers()
        self.wfile.write(text)

    def do_GET(self) -> None:
        self._answer(b"")

    def do_POST(self) -> None:
        self._answer(self.rfile.read(int(self.headers.get("Content-Length", 0))))

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def web() -> Iterator[str]:
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Echo)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(scope="module")
def server(
    redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    tools = tmp_path_factory.mktemp("tools")
    (tools / "curl.yaml").write_text(CURL)
    (tools / "count.yaml").write_text(COUNT)
    prefix = f"ty{uuid.uuid4().hex[:8]}"
    settings = base_settings(redis_server.url, prefix, WORKSPACE_ID="tools", TOOLS_PATH=str(tools))
    with running_server(settings) as srv:
        yield srv


@pytest.fixture(scope="module")
def api(server: ServerProcess) -> Iterator[Api]:
    with server.client() as client:
        yield Api(server, client)


@pytest.fixture(scope="module")
def session(api: Api) -> str:
    return api.session()


def test_curl_recipes_run(api: Api, session: str, web: str) -> None:
    assert api.value(session, f"tools.curl.get(url='{web}/old')") == "GET /new"
    posted = api.value(session, f"tools.curl.post(url='{web}/form', data='a=1')")
    assert posted == "POST /form a=1"
    # The escape hatch: the tool itself, with any of its options.
    raw = api.value(session, f"tools.curl(url='{web}/x', silent=True, header=['A: b'])")
    assert raw == "GET /x"


def test_download_writes_the_file(api: Api, session: str, web: str) -> None:
    code = (
        "import tempfile, pathlib\n"
        "path = pathlib.Path(tempfile.mkdtemp()) / 'page.txt'\n"
        f"tools.curl.download(url='{web}/file', output=str(path))\n"
        "path.read_text()"
    )
    assert api.value(session, code) == "GET /file"


def test_missing_and_unknown_params_are_named(api: Api, session: str, web: str) -> None:
    missing = api.execute(session, "tools.curl.post(url='http://127.0.0.1:1/')")
    assert missing["error_type"] == "ValidationError"
    assert "recipe curl.post: parameter 'data' is required" in missing["error"]
    unknown = api.execute(session, f"tools.curl.get(url='{web}/', verbose=True)")
    assert unknown["error_type"] == "ValidationError"
    assert "recipe curl.get has no parameter 'verbose'; parameters: url" in unknown["error"]


def test_param_defaults_apply(api: Api, session: str) -> None:
    assert api.value(session, "tools.count.upto()") == "1\n2\n3\n"
    assert api.value(session, "tools.count.upto(last=2)") == "1\n2\n"


def test_params_are_listed_everywhere(api: Api, session: str) -> None:
    url = {
        "name": "url",
        "type": "string",
        "description": "Address to request",
        "required": True,
        "default": None,
    }
    listed = {t["name"]: t for t in api.value(session, "tools.list()")}
    assert listed["curl"]["tags"] == ["http", "network"]
    assert listed["curl"]["recipes"][0] == {
        "name": "get",
        "description": "GET a URL quietly, following redirects",
        "params": [url],
    }
    assert [p["name"] for p in listed["curl"]["recipes"][2]["params"]] == ["url", "output"]
    assert listed["count"]["recipes"][0]["params"] == [
        {
            "name": "last",
            "type": "integer",
            "description": "where to stop",
            "required": False,
            "default": 3,
        }
    ]
    over_http = {t["name"]: t for t in api.http.get("/api/tools").json()}
    assert over_http["curl"] == listed["curl"]
    found = api.http.get("/api/tools/search", params={"query": "network"}).json()
    assert found[0]["recipes"][0]["params"] == [url]


def test_tags_are_searchable(api: Api, session: str) -> None:
    # Neither "network" nor "sequence" is in a name or description: only the tags have them.
    assert api.value(session, "[t['name'] for t in tools.search('network')]")[0] == "curl"
    assert api.value(session, "[t['name'] for t in tools.search('sequence')]")[0] == "count"
    hits = api.http.get("/api/tools/search", params={"query": "network"}).json()
    assert hits[0]["name"] == "curl"
