"""`/files`: a session's working folder over HTTP, against a real server and Redis.

Agent code owns the folder, so the hostile cases matter as much as the plain ones:
symlinks to the server's own environment or to another session's folder, a FIFO that
would block a reader, names that climb out, uploads past the limits.
"""

from __future__ import annotations

import hashlib
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import RedisServer
from tests.integration.server_fixture import Api, ServerProcess, base_settings, running_server

pytestmark = pytest.mark.redis

MIB = 1024 * 1024


@pytest.fixture(scope="module")
def server(
    redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    files = tmp_path_factory.mktemp("files")
    env = base_settings(
        redis_server.url,
        f"files{uuid.uuid4().hex[:8]}",
        WORKSPACE_ID="wsfiles",
        FILES_DIR=str(files),
        MAX_FILE_BYTES=str(60 * MIB),
        MAX_FOLDER_BYTES=str(100 * MIB),
    )
    with running_server(env) as srv:
        yield srv


@pytest.fixture(scope="module")
def api(server: ServerProcess) -> Iterator[Api]:
    with server.client(timeout=120) as client:
        yield Api(server, client)


def _chunks(total: int, seed: bytes) -> Iterator[bytes]:
    """`total` pseudo-random bytes in 1 MiB pieces (sent chunked: no Content-Length)."""
    block, sent = hashlib.sha256(seed).digest() * (MIB // 32), 0
    while sent < total:
        piece = block[: min(MIB, total - sent)]
        sent += len(piece)
        yield piece


def test_a_50_mb_file_goes_up_streamed_and_comes_back_identical(api: Api) -> None:
    session = api.session()
    headers = {"X-Session-ID": session}
    sent = hashlib.sha256()
    for piece in _chunks(50 * MIB, b"fifty"):
        sent.update(piece)
    up = api.http.put("/files/in/data.bin", content=_chunks(50 * MIB, b"fifty"), headers=headers)
    assert up.status_code == 201, up.text
    assert up.json()["bytes"] == 50 * MIB
    got = hashlib.sha256()
    size = 0
    with api.http.stream("GET", "/files/in/data.bin", headers=headers) as down:
        assert down.status_code == 200
        assert down.headers["content-length"] == str(50 * MIB)
        for piece in down.iter_bytes():
            got.update(piece)
            size += len(piece)
    assert size == 50 * MIB and got.hexdigest() == sent.hexdigest()
    listing = api.http.get("/files", headers=headers).json()
    assert [f["path"] for f in listing["files"]] == ["in/data.bin"]
    # Agent code runs in the folder: the upload is there by its name, and what the code
    # writes can be downloaded.
    code = "import hashlib, os\nh = hashlib.sha256(open('in/data.bin','rb').read()).hexdigest()\n"
    code += "open('out.txt', 'w').write('from the code')\n(os.getcwd() != '/', h)"
    assert api.value(session, code) == [True, sent.hexdigest()]
    assert api.http.get("/files/out.txt", headers=headers).content == b"from the code"
    assert api.http.delete("/files/in/data.bin", headers=headers).status_code == 200
    assert api.http.get("/files/in/data.bin", headers=headers).status_code == 404


def test_another_session_has_its_own_folder(api: Api) -> None:
    first, second = api.session(), api.session()
    put = api.http.put("/files/mine.txt", content=b"first's", headers={"X-Session-ID": first})
    assert put.status_code == 201
    assert api.http.get("/files/mine.txt", headers={"X-Session-ID": second}).status_code == 404
    assert api.value(second, "import os\nos.path.exists('mine.txt')") is False
    assert api.http.get("/files", headers={"X-Session-ID": second}).json()["files"] == []


@pytest.mark.parametrize(
    "path",
    # Dots percent-encoded: a client normalises literal dot segments away before sending.
    [
        "%2E%2E/escape.txt",
        "a/%2E%2E/%2E%2E/b",
        "a//b",
        "%2E",
        "a/%2E/b",
        "with%5Cbackslash",
        "%2Fetc%2Fpasswd",
        ".codemode-upload-x",
    ],
)
def test_names_that_climb_out_or_are_odd_are_refused(api: Api, path: str) -> None:
    session = api.session()
    answer = api.http.put(f"/files/{path}", content=b"x", headers={"X-Session-ID": session})
    assert answer.status_code == 400, answer.text
    assert "file path" in answer.json()["detail"]
    assert api.http.get("/files", headers={"X-Session-ID": session}).json()["files"] == []


def test_symlinks_left_by_agent_code_are_never_followed(api: Api) -> None:
    victim, attacker = api.session(), api.session()
    api.http.put("/files/secret.txt", content=b"victim's", headers={"X-Session-ID": victim})
    victim_folder = api.value(victim, "import os\nos.getcwd()")
    setup = (
        "import os\n"
        "os.symlink('/proc/1/environ', 'environ')\n"
        "os.symlink('/proc/self/environ', 'self-environ')\n"
        f"os.symlink({victim_folder!r}, 'victim')\n"
        "os.symlink('/', 'root')\n"
        "'ok'"
    )
    assert api.value(attacker, setup) == "ok"
    headers = {"X-Session-ID": attacker}
    for path in ("environ", "self-environ", "victim/secret.txt", "root/etc/hostname"):
        got = api.http.get(f"/files/{path}", headers=headers)
        assert got.status_code in (404, 409), (path, got.status_code, got.text[:200])
        assert b"CONTAINER_AUTH_TOKEN" not in got.content and b"victim's" not in got.content
    for path in ("victim/planted.txt", "root/tmp/planted.txt"):
        put = api.http.put(f"/files/{path}", content=b"planted", headers=headers)
        assert put.status_code == 409, (path, put.text)
    assert not Path(victim_folder, "planted.txt").exists()
    # Replacing the symlink itself is fine: the new file takes its name, nothing behind it.
    put = api.http.put("/files/environ", content=b"a plain file", headers=headers)
    assert put.status_code == 201
    assert api.http.get("/files/environ", headers=headers).content == b"a plain file"
    names = {f["path"] for f in api.http.get("/files", headers=headers).json()["files"]}
    assert names == {"environ"}  # symlinks are not listed


def test_a_fifo_is_not_served_and_the_server_keeps_answering(api: Api) -> None:
    session = api.session()
    assert api.value(session, "import os\nos.mkfifo('pipe')\n'made'") == "made"
    started = time.monotonic()
    got = api.http.get("/files/pipe", headers={"X-Session-ID": session})
    assert got.status_code == 404 and "not a regular file" in got.json()["detail"]
    assert time.monotonic() - started < 5
    assert api.http.get("/health").status_code == 200


def test_uploads_past_the_limits_are_refused_and_leave_nothing(api: Api) -> None:
    session = api.session()
    headers = {"X-Session-ID": session}
    declared = api.http.put("/files/big.bin", content=b"x" * (61 * MIB), headers=headers)
    assert declared.status_code == 413 and "MAX_FILE_BYTES" in declared.json()["detail"]
    streamed = api.http.put("/files/big.bin", content=_chunks(61 * MIB, b"big"), headers=headers)
    assert streamed.status_code == 413 and "MAX_FILE_BYTES" in streamed.json()["detail"]
    for name in ("a.bin", "b.bin"):
        ok = api.http.put(f"/files/{name}", content=_chunks(45 * MIB, b"ok"), headers=headers)
        assert ok.status_code == 201
    full = api.http.put("/files/c.bin", content=_chunks(20 * MIB, b"c"), headers=headers)
    assert full.status_code == 413 and "MAX_FOLDER_BYTES" in full.json()["detail"]
    listing = api.http.get("/files", headers=headers)
    assert listing.status_code == 200, (listing.status_code, listing.text)
    assert sorted(f["path"] for f in listing.json()["files"]) == ["a.bin", "b.bin"]
    folder = api.value(session, "import os\nos.getcwd()")
    assert sorted(os.listdir(folder)) == ["a.bin", "b.bin"]  # no partial upload left


def test_files_need_a_session_of_the_caller(api: Api, server: ServerProcess) -> None:
    unknown = api.http.get("/files", headers={"X-Session-ID": "s.nosuchsession00000000"})
    assert unknown.status_code == 400
    missing = api.http.get("/files")
    assert missing.status_code == 422
    anonymous = httpx.get(f"{server.url}/files", headers={"X-Session-ID": api.session()})
    assert anonymous.status_code == 401


def test_ending_a_session_removes_its_folder(api: Api) -> None:
    session = api.session()
    folder = api.value(session, "import os\nopen('f', 'w').write('x')\nos.getcwd()")
    assert Path(folder, "f").exists()
    assert api.http.delete("/sessions", headers={"X-Session-ID": session}).status_code == 200
    assert not Path(folder).exists()


def test_the_python_clients_stream_files_both_ways(server: ServerProcess, tmp_path: Path) -> None:
    import asyncio

    from codemode_session.client import AsyncSessionClient, SessionClient

    source = tmp_path / "source.bin"
    with source.open("wb") as f:
        for piece in _chunks(5 * MIB + 123, b"client"):
            f.write(piece)
    with SessionClient(server.url, token=server.token) as client:
        client.create_session()
        with source.open("rb") as f:
            assert client.upload_file("sub dir/source.bin", f)["bytes"] == 5 * MIB + 123
        with (tmp_path / "back.bin").open("wb") as out:
            assert client.download_file("sub dir/source.bin", into=out) == 5 * MIB + 123
        assert (tmp_path / "back.bin").read_bytes() == source.read_bytes()
        assert client.execute("len(open('sub dir/source.bin','rb').read())").value == 5 * MIB + 123
        assert [f["path"] for f in client.list_files()] == ["sub dir/source.bin"]
        client.delete_file("sub dir/source.bin")
        assert client.list_files() == []

    async def round_trip() -> bytes:
        async with AsyncSessionClient(server.url, token=server.token) as client:
            await client.create_session()
            with source.open("rb") as f:
                await client.upload_file("a.bin", f)
            got = await client.download_file("a.bin")
            assert isinstance(got, bytes)
            return got

    assert asyncio.run(round_trip()) == source.read_bytes()
