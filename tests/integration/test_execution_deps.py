"""Runtime deps with ALLOW_RUNTIME_DEPS=true, installed from a local wheel (no network)."""

from __future__ import annotations

import base64
import hashlib
import subprocess
import sys
import uuid
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.conftest import RedisServer
from tests.integration.server_fixture import Api, ServerProcess, base_settings, running_server

pytestmark = pytest.mark.redis

PACKAGE = "cm-tiny-pkg"
MODULE = "cm_tiny_pkg"


def build_wheel(workdir: Path) -> Path:
    """A one-module project built into a wheelhouse, offline.

    `pip wheel` of a local project needs the `wheel` package with older setuptools,
    which an offline machine may lack; a wheel is a zip with three metadata files,
    so write it directly (PEP 427).
    """
    wheelhouse = workdir / "wheelhouse"
    wheelhouse.mkdir()
    dist_info = f"{MODULE}-0.1.0.dist-info"
    files = {
        f"{MODULE}.py": b"VALUE = 42\n\n\ndef greet(name):\n    return f'hello {name}'\n",
        f"{dist_info}/METADATA": (
            f"Metadata-Version: 2.1\nName: {PACKAGE}\nVersion: 0.1.0\n"
        ).encode(),
        f"{dist_info}/WHEEL": (
            b"Wheel-Version: 1.0\nGenerator: codemode-tests\n"
            b"Root-Is-Purelib: true\nTag: py3-none-any\n"
        ),
    }
    records = []
    for name, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        records.append(f"{name},sha256={digest},{len(data)}")
    records.append(f"{dist_info}/RECORD,,")
    wheel = wheelhouse / f"{MODULE}-0.1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
        archive.writestr(f"{dist_info}/RECORD", "\n".join(records) + "\n")
    # pip itself accepts it (offline), as the server's pip will.
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--dry-run",
            "--no-index",
            "--no-deps",
            "--disable-pip-version-check",
            "-q",
            str(wheel),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    return wheelhouse


@pytest.fixture(scope="module")
def prefix() -> str:
    return f"deps{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def server(
    redis_server: RedisServer, prefix: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    workdir = tmp_path_factory.mktemp("deps")
    wheelhouse = build_wheel(workdir)
    settings = base_settings(
        redis_server.url,
        prefix,
        ALLOW_RUNTIME_DEPS="true",
        DEPS_DIR=str(workdir / "site"),
        PIP_NO_INDEX="1",
        PIP_FIND_LINKS=str(wheelhouse),
        WORKER_SPARES="1",
    )
    with running_server(settings) as srv:
        yield srv


@pytest.fixture(scope="module")
def api(server: ServerProcess) -> Iterator[Api]:
    with server.client(timeout=180) as client:
        yield Api(server, client)


@pytest.fixture(scope="module")
def shared(api: Api) -> str:
    """One session for the tests that only need some session (a worker start each is slow)."""
    return api.session()


def test_add_installs_and_imports(api: Api, redis_server: RedisServer, prefix: str) -> None:
    session = api.session("deps-ws")
    assert api.value(session, "deps.list()") == []
    assert api.value(session, f"deps.add({PACKAGE!r})") == {"installed": [PACKAGE]}
    assert api.value(session, f"import {MODULE}\n{MODULE}.VALUE") == 42
    assert api.value(session, "deps.list()") == [PACKAGE]
    # An agent's package is its workspace's: the prefix-wide set, which every workspace
    # installs, is the store's to change.
    with redis.Redis.from_url(redis_server.url) as rdb:
        assert rdb.smembers(f"{prefix}:ws:deps-ws:deps:deps") == {PACKAGE.encode()}
        assert rdb.smembers(f"{prefix}:deps:deps") == set()
    # A new session (a new worker) of the workspace finds the package installed and listed;
    # another workspace does not see it listed.
    fresh = api.session("deps-ws")
    assert api.value(fresh, f"from {MODULE} import greet\ngreet('you')") == "hello you"
    assert api.value(fresh, "deps.list()") == [PACKAGE]
    assert api.value(api.session("other-ws"), "deps.list()") == []


def test_deps_api(api: Api) -> None:
    added = api.http.post("/api/deps/add", json={"package": f"{PACKAGE}==0.1.0"})
    assert added.status_code == 200, added.text
    assert added.json()["installed"] == [f"{PACKAGE}==0.1.0"]
    synced = api.http.post("/api/deps/sync")
    assert synced.status_code == 200, synced.text
    assert f"{PACKAGE}==0.1.0" in synced.json()["installed"]
    removed = api.http.post("/api/deps/remove", json={"package": f"{PACKAGE}==0.1.0"})
    assert removed.json() == {"removed": [f"{PACKAGE}==0.1.0"], "not_found": []}
    again = api.http.post("/api/deps/remove", json={"package": f"{PACKAGE}==0.1.0"})
    assert again.json() == {"removed": [], "not_found": [f"{PACKAGE}==0.1.0"]}


def test_sync_and_remove_in_code(api: Api) -> None:
    session = api.session("deps-ws")
    assert PACKAGE in api.value(session, "deps.sync()")["installed"]
    assert api.value(session, "deps.remove('never-added')") is False


def test_unavailable_package_fails_clearly(api: Api, shared: str) -> None:
    session = shared
    result = api.execute(session, "deps.add('cm-package-that-does-not-exist')")
    assert result["error_type"] == "ValidationError"
    assert "pip install cm-package-that-does-not-exist failed" in result["error"]
    assert "cm-package-that-does-not-exist" not in api.value(session, "deps.list()")
    response = api.http.post("/api/deps/add", json={"package": "cm-package-that-does-not-exist"})
    assert response.status_code == 400
    assert "failed" in response.json()["detail"]


@pytest.mark.parametrize(
    "spec",
    [
        "https://evil.example/x.whl",
        "pkg @ file:///tmp/x",
        "git+https://h/x",
        "../local",
        "/abs/dir",
        "-e .",
        "--index-url=http://evil",
        "pkg; rm -rf /",
        "pkg && id",
        "pkg | sh",
        "$(id)",
        "`id`",
        "pkg --pre",
    ],
)
def test_bad_package_specs_are_refused(api: Api, shared: str, spec: str) -> None:
    result = api.execute(shared, f"deps.add({spec!r})")
    assert result["error_type"] == "ValidationError"
    assert "invalid package spec" in result["error"]
    response = api.http.post("/api/deps/add", json={"package": spec})
    assert response.status_code == 400
    assert "invalid package spec" in response.json()["detail"]
    assert api.http.post("/api/deps/remove", json={"package": spec}).status_code == 400
