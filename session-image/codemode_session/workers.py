"""Server side of worker processes: spawn, talk to, time out, kill, pre-warm.

A worker runs agent code, so the server treats it as hostile: it starts in
Python's isolated mode (no user site, no PYTHON* variables, nothing from the
current folder) with no credentials in its environment, lives in its own
process group (and pids cgroup where possible), reaches storage only through
the server's broker, every request has a deadline, and any failure ends in
SIGKILL of the whole tree and a fresh worker. In a one-session pod whose PID 1
is the server, "the whole tree" is every process but the server and its spare.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from codemode_session import children, protocol
from codemode_session.forkserver import ForkedProcess, TemplateUnavailable, WorkerTemplate
from codemode_session.limits import kill_all_but, kill_worker_tree
from codemode_session.server.storage_broker import StorageBroker
from codemode_session.server.storage_thread import StorageThread

# Credentials of the server: agent code reaches storage through the server only.
# (stream, text): a streamed run's output as the worker sends it
OutputSink = Callable[[str, str], None]
STRIPPED_ENV = ("CONTAINER_AUTH_TOKEN", "REDIS_URL", "STORAGE_DIR")


class WorkerTimeout(Exception):
    """The worker did not answer within the deadline."""


class WorkerCrashed(Exception):
    """The worker process went away (crash, os._exit, OOM kill)."""


class Worker:
    def __init__(
        self,
        proc: asyncio.subprocess.Process | ForkedProcess,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        broker: StorageBroker | None = None,
        sole: bool = False,
    ) -> None:
        self.proc = proc
        self.reader = reader
        self.writer = writer
        self.broker = broker
        self.sole = sole
        self.workspace_id: str | None = None
        self.initialized = False
        self._seq = 0
        self._pending: asyncio.Future[dict[str, Any]] | None = None
        self._on_output: OutputSink | None = None
        self._broken: str | None = None
        self._reading: asyncio.Task[None] | None = None
        # Set by the pool: drops its idle spares before a sole-session kill (agent code
        # may have traced or tampered with them, so they must not serve anyone later).
        self.drop_spares: Callable[[], Awaitable[None]] | None = None
        self.storage: StorageThread | None = None  # serves the worker's storage calls

    def storage_line_broke(self, reason: str) -> None:
        """Agent code garbled its storage line: the worker is replaced at its next request."""
        if self._broken is None:
            self._broken = reason

    @property
    def alive(self) -> bool:
        return (
            self.proc.returncode is None and not self.writer.is_closing() and self._broken is None
        )

    @classmethod
    async def spawn(
        cls,
        env: Mapping[str, str],
        startup_timeout: float = 30.0,
        broker: StorageBroker | None = None,
        sole: bool = False,
        template: WorkerTemplate | None = None,
    ) -> Worker:
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        line, line_child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        for end in (parent, child, line, line_child):
            protocol.widen_buffers(end)
        proc: Any = None
        try:
            if template is not None:
                with contextlib.suppress(TemplateUnavailable):  # then a process of its own
                    proc = await template.spawn(child, line_child)
            if proc is None:
                proc = await asyncio.create_subprocess_exec(
                    sys.executable,
                    "-I",
                    "-m",
                    "codemode_session.worker",
                    str(child.fileno()),
                    str(line_child.fileno()),
                    pass_fds=(child.fileno(), line_child.fileno()),
                    env=dict(env),
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=asyncio.subprocess.DEVNULL,
                    stderr=None if env.get("WORKER_STDERR") == "inherit" else subprocess.DEVNULL,
                    start_new_session=True,
                )
                children.manage(proc.pid)
        except BaseException:
            line.close()
            raise
        finally:
            child.close()
            line_child.close()
        reader, writer = await asyncio.open_unix_connection(sock=parent, limit=protocol.MAX_FRAME)
        worker = cls(proc, reader, writer, broker, sole)
        worker.storage = StorageThread(
            line, broker, asyncio.get_running_loop(), worker.storage_line_broke
        )
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
        worker._reading = asyncio.create_task(worker._read_forever())
        worker.storage.start()
        return worker

    async def _send(self, message: dict[str, Any], blob: bytes | None = None) -> None:
        self.writer.writelines(protocol.encode_parts(message, blob))
        await self.writer.drain()

    async def _read_forever(self) -> None:
        """Every frame the worker sends on its channel: output of a streamed run, else the
        reply to the one request in flight (storage calls come on its storage line)."""
        try:
            while True:
                message = await protocol.recv_async(self.reader)
                if message.get("op") == protocol.OUTPUT_OP:  # a streamed run's output, as printed
                    if self._on_output is not None:
                        self._on_output(str(message.get("stream")), str(message.get("text")))
                    continue
                pending = self._pending
                if pending is None or pending.done():
                    self._broken = "the worker's channel was tampered with"
                    break
                pending.set_result(message)
        except protocol.ProtocolError as exc:
            self._broken = f"the worker's channel broke ({exc})"
        except (ConnectionError, OSError) as exc:
            self._broken = f"the worker's channel broke ({exc})"
        finally:
            if self._broken is None:
                self._broken = "the worker's channel closed"
            if self._pending is not None and not self._pending.done():
                self._pending.set_exception(_ChannelBroken(self._broken))

    async def request(
        self,
        message: dict[str, Any],
        timeout: float | None,
        blob: bytes | None = None,
        on_output: OutputSink | None = None,
    ) -> dict[str, Any]:
        """Send a request and wait for its reply; `on_output(stream, text)` gets the
        output a streamed run (`"stream": true`) sends before it."""
        if not self.alive:
            raise WorkerCrashed(self._exit_reason())
        self._seq += 1
        pending: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending = pending
        self._on_output = on_output
        try:
            await self._send({**message, "seq": self._seq}, blob)
            reply = await asyncio.wait_for(pending, timeout)
        except TimeoutError:
            raise WorkerTimeout() from None
        except (_ChannelBroken, ConnectionError, OSError) as exc:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.proc.wait(), 1.0)
            if self.proc.returncode is None:
                raise WorkerCrashed(str(exc)) from None
            raise WorkerCrashed(self._exit_reason()) from None
        finally:
            self._pending = None
            self._on_output = None
        if reply.pop("seq", None) != self._seq:
            # Agent code wrote to the worker's channel: nothing on it can be trusted now.
            self._broken = "the worker's channel was tampered with"
            raise WorkerCrashed(self._broken)
        return reply

    async def init(
        self, workspace_id: str | None, timeout: float = 30.0, snapshots: bool = False
    ) -> None:
        self.workspace_id = workspace_id
        reply = await self.request(
            {"op": "init", "workspace_id": workspace_id, "snapshots": snapshots}, timeout
        )
        if not reply.get("ok"):
            await self.kill()
            raise WorkerCrashed(str(reply.get("error", "worker init failed")))
        self.initialized = True
        if self.storage is not None:
            self.storage.bind(workspace_id)

    def _exit_reason(self) -> str:
        code = self.proc.returncode
        if code is None:
            return self._broken or "the worker stopped answering"
        if code < 0:
            return f"the worker was killed by signal {-code}"
        return f"the worker exited with status {code}"

    def interrupt(self) -> None:
        """SIGINT: KeyboardInterrupt in the running cell (a cancelled streamed run)."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(self.proc.pid, signal.SIGINT)

    async def kill(self) -> None:
        if self.sole and self.initialized:
            # Agent code ran here: end everything it may have started, wherever it went
            # (setsid, double fork), and every spare it could have reached.
            if self.drop_spares is not None:
                await self.drop_spares()
            await asyncio.to_thread(kill_all_but, frozenset())
        else:
            await asyncio.to_thread(kill_worker_tree, self.proc.pid)
        with contextlib.suppress(ProcessLookupError):
            self.proc.kill()
        self.writer.close()
        if self.storage is not None:
            self.storage.stop()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.proc.wait(), 5.0)
        children.release(self.proc.pid)
        if self._reading is not None:
            self._reading.cancel()


class _ChannelBroken(Exception):
    """The reader saw the channel close or break while a request was in flight."""


def worker_env(base: Mapping[str, str], extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in base.items() if k not in STRIPPED_ENV}
    env.setdefault("MALLOC_ARENA_MAX", "2")
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


class WorkerPool:
    """Keeps `spares` started-but-uninitialized workers so a session starts at once."""

    def __init__(
        self,
        env: Mapping[str, str],
        spares: int = 1,
        broker: StorageBroker | None = None,
        sole: bool = False,
        before_handout: Callable[[], Awaitable[None]] | None = None,
        use_template: bool = True,
    ) -> None:
        self.env = dict(env)
        self.spares = spares
        self.broker = broker
        self.sole = sole
        self.before_handout = before_handout
        # Workers fork from a template (fast, memory shared) unless the pod is one
        # session's: there every kill ends all but the server, the template included.
        self.template = None if sole or not use_template else WorkerTemplate(self.env)
        self._ready: list[Worker] = []
        self._filling: asyncio.Task[None] | None = None
        self.spawned = 0

    async def _spawn(self) -> Worker:
        self.spawned += 1
        return await Worker.spawn(
            self.env, broker=self.broker, sole=self.sole, template=self.template
        )

    async def drop_spares(self) -> None:
        spares, self._ready = self._ready, []
        for worker in spares:
            await worker.kill()

    def refill(self) -> None:
        if self._filling is None or self._filling.done():
            self._filling = asyncio.create_task(self._fill())

    async def _fill(self) -> None:
        while len(self._ready) < self.spares:
            try:
                self._ready.append(await self._spawn())
            except WorkerCrashed:
                await asyncio.sleep(1.0)

    async def acquire(self, workspace_id: str | None, snapshots: bool = False) -> Worker:
        worker = None
        while self._ready and worker is None:
            candidate = self._ready.pop()
            if candidate.alive:
                worker = candidate
            else:
                await candidate.kill()
        if worker is None:
            worker = await self._spawn()
        if self.before_handout is not None:
            await self.before_handout()
        self.refill()
        await worker.init(workspace_id, snapshots=snapshots)
        worker.drop_spares = self.drop_spares
        return worker

    async def close(self) -> None:
        if self._filling is not None:
            self._filling.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._filling
        for worker in self._ready:
            await worker.kill()
        self._ready.clear()
        if self.template is not None:
            await self.template.close()
