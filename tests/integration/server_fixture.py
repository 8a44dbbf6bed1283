"""A real `codemode serve` subprocess for tests and benchmarks.

`start_server(env)` runs `python -m codemode_session serve` on 127.0.0.1 and a
free port with exactly the given settings (plus PATH and friends), waits for
`/health`, and returns a handle whose `stop()` ends it and its workers.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

# Settings of the host that a server under test must not inherit.
SERVER_VARS = (
    "REDIS_URL",
    "STORAGE_PREFIX",
    "STORAGE_DIR",
    "WORKSPACE_ID",
    "CONTAINER_AUTH_TOKEN",
    "CONTAINER_AUTH_DISABLED",
    "DEFAULT_TIMEOUT",
    "MAX_EXECUTION_TIME",
    "ALLOW_RUNTIME_DEPS",
    "TOOLS_PATH",
    "DEPS_DIR",
    "WORKER_MEMORY_MB",
    "WORKER_MAX_PROCESSES",
    "SESSION_IDLE_TIMEOUT",
    "WORKER_IDLE_TIMEOUT",
    "MAX_SESSIONS",
    "WORKER_SPARES",
    "ACCEPT_CLIENT_SESSION_IDS",
    "OUTPUT_LIMIT_BYTES",
    "MAX_REQUEST_BYTES",
    "AGENT_ID",
    "HISTORY_ENABLED",
    "HISTORY_MAX_MESSAGES",
    "HISTORY_MAX_OUTPUT_BYTES",
    "SNAPSHOTS_ENABLED",
    "SNAPSHOT_MAX_BYTES",
    "SESSION_STATE_ID",
    "SESSION_FORK_FROM",
    "SESSION_POOL",
    "SESSION_BINDING_DIR",
    "HOST",
    "PORT",
)
TOKEN = "test-token-0123456789abcdef"


def _refuse_5xx(response: httpx.Response) -> None:
    if response.status_code >= 500:
        response.read()
        raise AssertionError(
            f"{response.request.method} {response.request.url.path} answered "
            f"{response.status_code}: {response.text[:2000]}"
        )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def server_env(settings: Mapping[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in SERVER_VARS}
    env["PYTHONUNBUFFERED"] = "1"
    env["NO_PROXY"] = "127.0.0.1,localhost"
    env.update(settings)
    return env


class ServerProcess:
    """A running `codemode serve`; `client()` gives an httpx client with its token."""

    def __init__(
        self, proc: subprocess.Popen[bytes], port: int, log: Path, token: str | None
    ) -> None:
        self.proc = proc
        self.port = port
        self.log = log
        self.token = token
        self.url = f"http://127.0.0.1:{port}"

    def headers(self, session_id: str | None = None) -> dict[str, str]:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        if session_id:
            headers["X-Session-ID"] = session_id
        return headers

    def client(
        self, timeout: float = 60.0, *, allow_5xx: bool = False, **kwargs: Any
    ) -> httpx.Client:
        """A client for this server; unless `allow_5xx`, any 5xx answer fails the test."""
        hooks = {} if allow_5xx else {"response": [_refuse_5xx]}
        return httpx.Client(
            base_url=self.url,
            headers=self.headers(),
            timeout=timeout,
            trust_env=False,
            event_hooks=hooks,
            **kwargs,
        )

    def output(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        # Anything the server left behind in its process group goes too.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.log.unlink(missing_ok=True)


def launch(
    settings: Mapping[str, str],
    port: int | None = None,
) -> tuple[subprocess.Popen[bytes], int, Path]:
    """Start `codemode serve` without waiting; output goes to a temp log file."""
    port = port or free_port()
    fd, log_name = tempfile.mkstemp(prefix="codemode-serve-", suffix=".log")
    log = Path(log_name)
    with os.fdopen(fd, "wb") as log_file:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "codemode_session",
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--log-level",
                "warning",
            ],
            env=server_env(settings),
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return proc, port, log


def start_server(settings: Mapping[str, str], timeout: float = 30.0) -> ServerProcess:
    """Start a server with `settings` as its environment and wait until /health answers."""
    proc, port, log = launch(settings)
    server = ServerProcess(proc, port, log, settings.get("CONTAINER_AUTH_TOKEN"))
    deadline = time.monotonic() + timeout
    with httpx.Client(trust_env=False, timeout=2.0) as http:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                output = server.output()
                server.stop()
                raise RuntimeError(f"codemode serve exited with {proc.returncode}:\n{output}")
            try:
                if http.get(f"{server.url}/health").status_code == 200:
                    return server
            except httpx.TransportError:
                pass
            time.sleep(0.05)
    output = server.output()
    server.stop()
    raise TimeoutError(f"codemode serve did not answer /health in {timeout}s:\n{output}")


@contextmanager
def running_server(settings: Mapping[str, str], timeout: float = 30.0) -> Iterator[ServerProcess]:
    server = start_server(settings, timeout)
    try:
        yield server
    finally:
        server.stop()


def base_settings(redis_url: str, prefix: str, **extra: str) -> dict[str, str]:
    """The usual test server: Redis storage under `prefix`, token auth, fast timeouts."""
    settings = {
        "REDIS_URL": redis_url,
        "STORAGE_PREFIX": prefix,
        "CONTAINER_AUTH_TOKEN": TOKEN,
        "DEFAULT_TIMEOUT": "30",
        "MAX_EXECUTION_TIME": "60",
        "WORKER_SPARES": "1",
    }
    settings.update(extra)
    return settings


class Api:
    """Small helpers around a server's client, for readable tests."""

    def __init__(self, server: ServerProcess, client: httpx.Client) -> None:
        self.server = server
        self.http = client

    def session(self, workspace_id: str | None = None) -> str:
        body = {} if workspace_id is None else {"workspace_id": workspace_id}
        response = self.http.post("/sessions", json=body)
        assert response.status_code == 200, response.text
        session_id: str = response.json()["session_id"]
        return session_id

    def execute(self, session_id: str, code: str, timeout: float | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"code": code}
        if timeout is not None:
            body["timeout"] = timeout
        response = self.http.post("/execute", json=body, headers={"X-Session-ID": session_id})
        assert response.status_code == 200, response.text
        result: dict[str, Any] = response.json()
        return result

    def value(self, session_id: str, code: str, timeout: float | None = None) -> Any:
        """The value of `code`, failing the test with the traceback on error."""
        result = self.execute(session_id, code, timeout)
        assert result["error"] is None, result["error"]
        return result["value"]


def serve_refusals(settings: Mapping[str, Mapping[str, str]]) -> dict[str, tuple[int, str]]:
    """Start `codemode serve` once per entry of settings it must refuse, all at once
    (each waits for nothing but its own check); (exit code, stderr) by key."""
    procs = {
        key: subprocess.Popen(
            [
                sys.executable,
                "-m",
                "codemode_session",
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                str(free_port()),
            ],
            env=server_env(env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for key, env in settings.items()
    }
    results = {}
    for key, proc in procs.items():
        try:
            _, stderr = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, stderr = proc.communicate()
        results[key] = (proc.returncode, stderr)
    return results
