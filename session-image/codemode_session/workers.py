"""Server side of worker processes: spawn, talk to, time out, kill, pre-warm.

A worker runs agent code, so the server treats it as hostile: it lives in its
own process group (and pids cgroup where possible), every request has a
deadline, and any failure ends in SIGKILL of the whole tree and a fresh worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import subprocess
import sys
from collections.abc import Mapping
from typing import Any

from codemode_session import protocol
from codemode_session.limits import kill_worker_tree

STRIPPED_ENV = ("CONTAINER_AUTH_TOKEN",)


class WorkerTimeout(Exception):
    """The worker did not answer within the deadline."""


class WorkerCrashed(Exception):
    """The worker process went away (crash, os._exit, OOM kill)."""


class Worker:
    def __init__(self, proc: asyncio.subprocess.Process, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter) -> None:
        self.proc = proc
        self.reader = reader
        self.writer = writer
        self.workspace_id: str | None = None
        self.initialized = False
        self._seq = 0

    @property
    def alive(self) -> bool:
        return self.proc.returncode is None and not self.writer.is_closing()

    @classmethod
    async def spawn(cls, env: Mapping[str, str], startup_timeout: float = 30.0) -> Worker:
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "codemode_session.worker", str(child.fileno()),
                pass_fds=(child.fileno(),),
                env=dict(env),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=None if env.get("WORKER_STDERR") == "inherit" else subprocess.DEVNULL,
                start_new_session=True,
            )
        finally:
            child.close()
        reader, writer = await asyncio.open_unix_connection(sock=parent, limit=protocol.MAX_FRAME)
        worker = cls(proc, reader, writer)
        try:
            hello = await asyncio.wait_for(protocol.recv_async(reader), startup_timeout)
        except (TimeoutError, protocol.ProtocolError) as exc:
            await worker.kill()
            raise WorkerCrashed(f"worker failed to start: {exc or 'timeout'}") from None
        except asyncio.CancelledError:  # the server is shutting down: leave nothing behind
            await worker.kill()
            raise
        if not hello.get("ok"):
            await worker.kill()
            raise WorkerCrashed(f"worker failed to start: {hello}")
        return worker

    async def request(self, message: dict[str, Any], timeout: float | None) -> dict[str, Any]:
        if not self.alive:
            raise WorkerCrashed(self._exit_reason())
        self._seq += 1
        try:
            self.writer.write(protocol.encode({**message, "seq": self._seq}))
            await self.writer.drain()
            reply = await asyncio.wait_for(protocol.recv_async(self.reader), timeout)
        except TimeoutError:
            raise WorkerTimeout() from None
        except (protocol.ProtocolError, ConnectionError, OSError) as exc:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.proc.wait(), 1.0)
            if self.proc.returncode is None and isinstance(exc, protocol.ProtocolError):
                raise WorkerCrashed(f"the worker's channel broke ({exc})") from None
            raise WorkerCrashed(self._exit_reason()) from None
        if reply.pop("seq", None) != self._seq:
            # Agent code wrote to the worker's channel: nothing on it can be trusted now.
            raise WorkerCrashed("the worker's channel was tampered with")
        return reply

    async def init(self, workspace_id: str | None, timeout: float = 30.0) -> None:
        reply = await self.request({"op": "init", "workspace_id": workspace_id}, timeout)
        if not reply.get("ok"):
            await self.kill()
            raise WorkerCrashed(str(reply.get("error", "worker init failed")))
        self.workspace_id = workspace_id
        self.initialized = True

    def _exit_reason(self) -> str:
        code = self.proc.returncode
        if code is None:
            return "the worker stopped answering"
        if code < 0:
            return f"the worker was killed by signal {-code}"
        return f"the worker exited with status {code}"

    async def kill(self) -> None:
        await asyncio.to_thread(kill_worker_tree, self.proc.pid)
        with contextlib.suppress(ProcessLookupError):
            self.proc.kill()
        self.writer.close()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.proc.wait(), 5.0)


def worker_env(base: Mapping[str, str], extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in base.items() if k not in STRIPPED_ENV}
    env.setdefault("MALLOC_ARENA_MAX", "2")
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


class WorkerPool:
    """Keeps `spares` started-but-uninitialized workers so a session starts at once."""

    def __init__(self, env: Mapping[str, str], spares: int = 1) -> None:
        self.env = dict(env)
        self.spares = spares
        self._ready: list[Worker] = []
        self._filling: asyncio.Task[None] | None = None
        self.spawned = 0

    async def _spawn(self) -> Worker:
        self.spawned += 1
        return await Worker.spawn(self.env)

    def refill(self) -> None:
        if self._filling is None or self._filling.done():
            self._filling = asyncio.create_task(self._fill())

    async def _fill(self) -> None:
        while len(self._ready) < self.spares:
            try:
                self._ready.append(await self._spawn())
            except WorkerCrashed:
                await asyncio.sleep(1.0)

    async def acquire(self, workspace_id: str | None) -> Worker:
        worker = None
        while self._ready and worker is None:
            candidate = self._ready.pop()
            if candidate.alive:
                worker = candidate
            else:
                await candidate.kill()
        if worker is None:
            worker = await self._spawn()
        self.refill()
        await worker.init(workspace_id)
        return worker

    async def close(self) -> None:
        if self._filling is not None:
            self._filling.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._filling
        for worker in self._ready:
            await worker.kill()
        self._ready.clear()

