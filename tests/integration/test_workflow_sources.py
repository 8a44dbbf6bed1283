"""Workflow sources that are valid Python or nearly so (issue 10, cases 12 and 15).

Deeply nested defaults used to answer 500 (RecursionError in `ast.unparse`, the
parser's own RecursionError, ValueError for an integer too long to print) and made
`codemode store` print `RecursionError ... (unexpected)` without naming the file.
A UTF-8 byte-order mark, which Python itself ignores, made a valid file invalid.
Now: a 400 whose `detail` names the workflow, parameter and problem; exit 2 and one
line naming the file; the BOM is dropped.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.conftest import RedisServer
from tests.integration.server_fixture import Api, ServerProcess, base_settings, running_server
from tests.integration.test_store_hostile_inputs import Cli, wf_key

pytestmark = [pytest.mark.redis, pytest.mark.usefixtures("clean_store_env")]

BOM = "\ufeff"
PLUS_400 = "+".join(["1"] * 400)  # 799 characters: parses, but nests 400 levels
PLUS_100K = "+".join(["1"] * 50_000)  # a 100,000-character default: the parser gives up
LONG_HEX = "0x" + "f" * 5000  # a literal int with more digits than Python prints
PLAIN_SUM = "+".join(["1"] * 50)  # not a literal: described by its source text

# (default expression, what the one-line error must say)
DEEP_DEFAULTS = [
    (PLUS_400, "the default of parameter 'x' is nested 400 levels deep (at most 100)"),
    (PLUS_100K, "source is nested too deeply to parse"),
    ("-" * 3000 + "1", "source is nested too deeply to parse"),
    (LONG_HEX, "the default of parameter 'x' cannot be described: Exceeds the limit"),
]


def deep_source(default: str) -> str:
    return f"async def run(x={default}):\n    return 1\n"


VALID = '"""Double it."""\n\n\nasync def run(x: int = 2) -> int:\n    return 2 * x\n'


@pytest.fixture(scope="module")
def server(redis_server: RedisServer) -> Iterator[ServerProcess]:
    with running_server(base_settings(redis_server.url, f"src{uuid.uuid4().hex[:8]}")) as srv:
        yield srv


@pytest.fixture(scope="module")
def api(server: ServerProcess) -> Iterator[Api]:
    with server.client() as client:  # any 5xx answer fails the test
        yield Api(server, client)


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str], redis_url: str, prefix: str) -> Cli:
    return Cli(capsys, redis_url, prefix)


# ---- the API ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("default", "message"),
    DEEP_DEFAULTS,
    ids=["400-terms", "100k-chars", "3000-signs", "5000-digit-int"],
)
def test_deeply_nested_defaults_are_a_400_that_says_why(
    api: Api, default: str, message: str
) -> None:
    response = api.http.post(
        "/api/workflows", json={"name": "deep", "source": deep_source(default)}
    )
    assert response.status_code == 400, response.text
    detail = response.json()["detail"]
    assert detail.startswith("workflow 'deep': ") and message in detail, detail
    assert api.http.get("/api/workflows/deep").json() is None  # nothing was stored


def test_a_deep_annotation_names_the_parameter(api: Api) -> None:
    source = "async def run(y: " + "list[" * 150 + "int" + "]" * 150 + " = None):\n    pass\n"
    response = api.http.post("/api/workflows", json={"name": "annotated", "source": source})
    assert response.status_code == 400, response.text
    assert "the annotation of parameter 'y' is nested" in response.json()["detail"]


def test_large_but_shallow_defaults_still_work(api: Api) -> None:
    text = "a" * 100_000
    response = api.http.post(
        "/api/workflows",
        json={
            "name": "wide",
            "source": f"async def run(x={text!r}, y={PLAIN_SUM}):\n    return x\n",
        },
    )
    assert response.status_code == 200, response.text
    defaults = [p["default"] for p in response.json()["parameters"]]
    assert defaults == [text, " + ".join(["1"] * 50)]


def test_a_workflow_with_a_bom_is_accepted_and_runs(api: Api) -> None:
    response = api.http.post("/api/workflows", json={"name": "bom_api", "source": BOM + VALID})
    assert response.status_code == 200, response.text
    assert response.json()["description"] == "Double it."
    stored = api.http.get("/api/workflows/bom_api").json()
    assert stored["source"] == VALID
    assert api.value(api.session(), "workflows.bom_api(x=21)") == 42


# ---- the store CLI ---------------------------------------------------------------------------


@pytest.mark.parametrize(("default", "message"), DEEP_DEFAULTS[:2], ids=["400-terms", "100k-chars"])
def test_store_names_the_file_of_a_deeply_nested_workflow(
    cli: Cli, tmp_path: Path, default: str, message: str
) -> None:
    source = tmp_path / "lib"
    source.mkdir()
    (source / "fine.py").write_text(VALID)
    (source / "deep.py").write_text(deep_source(default))
    line = cli.fails("bootstrap", "--library", "lib", "--folder", str(source))
    assert line.startswith("codemode: error: deep.py: workflow 'deep': "), line
    assert message in line and "unexpected" not in line


def test_store_in_a_real_process_names_the_file(
    redis_url: str, prefix: str, tmp_path: Path
) -> None:
    (tmp_path / "deep.py").write_text(deep_source(PLUS_400))
    env = {k: v for k, v in os.environ.items() if k != "CODEMODE_DEBUG"}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "codemode_session",
            "store",
            "bootstrap",
            "--library",
            "lib",
            "--folder",
            str(tmp_path),
            "--redis-url",
            redis_url,
            "--prefix",
            prefix,
            "--workspace-id",
            "ws",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout == ""
    assert proc.stderr.splitlines() == [
        "codemode: error: deep.py: workflow 'deep': the default of parameter 'x' is nested 400 "
        "levels deep (at most 100); compute it inside run() instead"
    ]


def test_store_accepts_files_with_a_bom(
    cli: Cli, r: redis.Redis, prefix: str, tmp_path: Path
) -> None:
    source = tmp_path / "lib"
    source.mkdir()
    (source / "bom_flow.py").write_bytes((BOM + VALID).encode())
    result = cli.ok("bootstrap", "--library", "lib", "--folder", str(source))
    assert result["added"] == 1
    stored = json.loads(r.hget(wf_key(prefix), "bom_flow") or "")
    assert stored["source"] == VALID and stored["description"] == "Double it."
    # The same file again is unchanged; so is the file without its BOM.
    assert cli.ok("bootstrap", "--library", "lib", "--folder", str(source))["unchanged"] == 1
    (source / "bom_flow.py").write_text(VALID)
    assert cli.ok("bootstrap", "--library", "lib", "--folder", str(source))["unchanged"] == 1

    tools = tmp_path / "tools"
    tools.mkdir()
    (tools / "curl.yaml").write_bytes((BOM + "name: curl\ncommand: curl\n").encode())
    (tools / "requirements.txt").write_bytes((BOM + "requests>=2\n").encode())
    assert cli.ok("bootstrap", "--type", "tools", "--folder", str(tools))["added"] == 1
    assert cli.ok("bootstrap", "--type", "deps", "--folder", str(tools))["added"] == 1
    code, out, err = cli("list", "--type", "deps", "--json")
    assert code == 0, err
    assert [entry["name"] for entry in json.loads(out)] == ["requests>=2"]


def test_bom_only_workflow_is_still_empty(api: Api) -> None:
    response = api.http.post("/api/workflows", json={"name": "bom_only", "source": BOM + "\n"})
    assert response.status_code == 400
    assert response.json()["detail"] == "workflow 'bom_only': source is empty"
