"""Redis on the host for e2e tests: a password-protected ``redis-server`` where session
pods reach it (the node's host address), and a raw RESP2/RESP3 connection for checks
that need exact replies and server pushes (client tracking), which a client library hides.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from tests.cluster.layout import NODE_HOST_IP
from tests.conftest import free_port, wait_for_port


@dataclass(frozen=True)
class HostRedis:
    port: int
    password: str

    @property
    def url(self) -> str:
        """The admin URL as pods see it."""
        return f"redis://:{self.password}@{NODE_HOST_IP}:{self.port}/0"


@contextlib.contextmanager
def host_redis(password: str) -> Iterator[HostRedis]:
    """A redis-server bound to loopback and the node's host address, stopped on exit."""
    port = free_port()
    workdir = tempfile.mkdtemp(prefix="codemode-e2e-redis-")
    proc = subprocess.Popen(
        [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            f"127.0.0.1 {NODE_HOST_IP}",
            "--requirepass",
            password,
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            workdir,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for_port(port)
        yield HostRedis(port, password)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        shutil.rmtree(workdir, ignore_errors=True)


class RespError(str):
    """An error reply (``-NOPERM ...``), kept as a value so callers can report it."""


class Push(list[Any]):
    """A RESP3 out-of-band push (``>``): invalidations, pub/sub messages."""


class Resp:
    """One raw connection: ``call()`` sends a command and returns its reply; pushes that
    arrive meanwhile are collected in ``pushes``; ``read_pushes()`` waits for more."""

    def __init__(self, host: str, port: int, timeout: float = 5.0) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.timeout = timeout
        self._buf = b""
        self.pushes: list[Push] = []

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Resp:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def send(self, *args: str | bytes) -> None:
        parts = [f"*{len(args)}\r\n".encode()]
        for arg in args:
            data = arg.encode() if isinstance(arg, str) else arg
            parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
        self.sock.sendall(b"".join(parts))

    def call(self, *args: str | bytes) -> Any:
        self.send(*args)
        while True:
            reply = self._read()
            if not isinstance(reply, Push):
                return reply
            self.pushes.append(reply)

    def read_pushes(self, wait: float) -> list[Push]:
        """Every push that arrives within `wait` seconds of quiet."""
        self.sock.settimeout(wait)
        try:
            while True:
                frame = self._read()
                if isinstance(frame, Push):
                    self.pushes.append(frame)
        except TimeoutError:
            pass
        finally:
            self.sock.settimeout(self.timeout)
        return self.pushes

    def _line(self) -> bytes:
        while b"\r\n" not in self._buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("Redis closed the connection")
            self._buf += chunk
        line, self._buf = self._buf.split(b"\r\n", 1)
        return line

    def _exact(self, size: int) -> bytes:
        while len(self._buf) < size + 2:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("Redis closed the connection")
            self._buf += chunk
        data, self._buf = self._buf[:size], self._buf[size + 2 :]
        return data

    def _read(self) -> Any:
        line = self._line()
        kind, rest = line[:1], line[1:].decode(errors="replace")
        if kind == b"+":
            return rest
        if kind == b"-":
            return RespError(rest)
        if kind in (b":", b"("):
            return int(rest)
        if kind == b",":
            return float(rest)
        if kind == b"#":
            return rest == "t"
        if kind == b"_":
            return None
        if kind in (b"$", b"=", b"!"):
            if rest == "-1":
                return None
            data = self._exact(int(rest)).decode(errors="replace")
            return RespError(data) if kind == b"!" else data
        if kind in (b"*", b"~", b">"):
            if rest == "-1":
                return None
            items = [self._read() for _ in range(int(rest))]
            return Push(items) if kind == b">" else items
        if kind == b"%":
            return {str(self._read()): self._read() for _ in range(int(rest))}
        if kind == b"|":  # attributes precede the reply they describe
            for _ in range(2 * int(rest)):
                self._read()
            return self._read()
        raise ConnectionError(f"unexpected RESP frame {line[:40]!r}")
