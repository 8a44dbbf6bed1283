"""Shared fixtures: a real redis-server on a free loopback port. And how a run is spread
over processes: plain `pytest` runs the unit and integration tiers on one pytest-xdist
worker per CPU (`-n auto` in pyproject's addopts); a run that may include a cluster tier
runs in one process (pytest_xdist_auto_num_workers)."""

from __future__ import annotations

import itertools
import os
import re
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest
from _pytest.mark.expression import Expression

pytest_plugins = ["tests.cluster.pytest_plugin"]


# The tiers that share one local cluster: their tests never run in parallel.
CLUSTER_TIERS = ("k8s", "e2e")


def may_select_cluster_tests(markexpr: str) -> bool:
    """Whether `-m markexpr` selects any test marked with a cluster tier, whatever other
    markers that test has (every combination of the expression's other names is tried)."""
    if not markexpr.strip():
        return True
    expression = Expression.compile(markexpr)
    names = set(re.findall(r"[\w:+\-.\[\]\\/]+", markexpr)) - {"and", "or", "not", "True", "False"}
    others = sorted(names - set(CLUSTER_TIERS))
    return any(
        expression.evaluate(_marked({tier, *itertools.compress(others, present)}))
        for tier in CLUSTER_TIERS
        for present in itertools.product((False, True), repeat=len(others))
    )


def _marked(marks: set[str]) -> Callable[..., bool]:
    """An `Expression` matcher for a test that carries exactly `marks`."""

    def matcher(name: str, /, **kwargs: object) -> bool:
        return name in marks

    return matcher


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int | None:
    """`-n auto`: no workers (one process, as without xdist) when the run may include a
    cluster tier, e.g. `tests/run` (`-m ""`): those tests share one local cluster and an
    order (tests/e2e/test_zz_cluster_down.py last). None either when the arguments name
    files, not folders: a module or a test alone runs sooner than workers start, each of
    which imports and collects. Otherwise xdist's default, one worker per CPU. The unit
    and integration tiers are safe in parallel: every fixture takes a free port, a temp
    dir and a Redis key prefix of its own, and each worker starts its own redis-server."""
    if may_select_cluster_tests(config.getoption("markexpr") or ""):
        return 0
    if any(Path(arg.partition("::")[0]).is_file() for arg in config.args):
        return 0
    return None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


class RedisServer:
    """A real redis-server process owned by the test session."""

    def __init__(
        self, workdir: Path, password: str | None = None, extra_args: Sequence[str] = ()
    ) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
        self.port = free_port()
        self.password = password
        args = [
            binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(workdir),
            "--protected-mode",
            "yes",
        ]
        if password:
            args += ["--requirepass", password]
        args += extra_args
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        wait_for_port(self.port)

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    return redis_server.url


@pytest.fixture
def prefix() -> str:
    """A prefix no other test uses, so tests share one server without interfering."""
    return f"t{uuid.uuid4().hex[:12]}"


@pytest.fixture(autouse=True)
def _no_proxy_for_loopback() -> None:
    os.environ.setdefault("NO_PROXY", "127.0.0.1,localhost")
