"""The server's side of the worker template (codemode_session.template): start it, ask
it for workers, learn when they exit.

A worker forked by the template is the template's child, not the server's, so its exit
status comes from the template (`exit PID STATUS` on the control socket). `ForkedProcess`
gives a Worker the parts of asyncio's Process it uses (pid, returncode, wait, kill). If
the template dies (agent code may SIGKILL it: same uid), the next spawn starts another.
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Mapping

from codemode_session import children

MESSAGE = 64


class TemplateUnavailable(Exception):
    """The template is not running and could not be started."""


class ForkedProcess:
    """What Worker needs of a process it did not start itself."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None
        self._exited = asyncio.get_running_loop().create_future()

    def exited(self, status: int) -> None:
        if self.returncode is None:
            self.returncode = status
        if not self._exited.done():
            self._exited.set_result(status)

    async def wait(self) -> int:
        return await asyncio.shield(self._exited)

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(self.pid, signal.SIGKILL)


class WorkerTemplate:
    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = dict(env)
        self._proc: asyncio.subprocess.Process | None = None
        self._control: socket.socket | None = None
        self._pids: asyncio.Queue[int] = asyncio.Queue()
        self._procs: dict[int, ForkedProcess] = {}
        self._early: dict[int, int] = {}  # exits reported before their pid was taken
        self._lock = asyncio.Lock()

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.returncode is None

    async def _start(self) -> None:
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-I",
                "-m",
                "codemode_session.template",
                str(child.fileno()),
                pass_fds=(child.fileno(),),
                env=self.env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=None if self.env.get("WORKER_STDERR") == "inherit" else subprocess.DEVNULL,
                start_new_session=True,
            )
        except OSError as exc:
            parent.close()
            raise TemplateUnavailable(f"the worker template did not start: {exc}") from None
        finally:
            child.close()
        children.manage(proc.pid)
        parent.setblocking(False)
        self._proc, self._control = proc, parent
        self._pids = asyncio.Queue()
        asyncio.get_running_loop().add_reader(parent.fileno(), self._read)

    def _read(self) -> None:
        control = self._control
        if control is None:
            return
        while True:
            try:
                data = control.recv(MESSAGE)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            if not data:
                self._lost()
                return
            words = data.decode(errors="replace").split()
            if words[:1] == ["pid"] and len(words) == 2:
                self._pids.put_nowait(int(words[1]))
            elif words[:1] == ["exit"] and len(words) == 3:
                pid, status = int(words[1]), int(words[2])
                found = self._procs.pop(pid, None)
                if found is not None:
                    found.exited(status)
                else:
                    self._early[pid] = status

    def _lost(self) -> None:
        """The template went away: its workers' exits will never be reported, so each is
        watched directly from now on (they are orphans of the container's init)."""
        control, self._control = self._control, None
        if control is not None:
            with contextlib.suppress(ValueError, OSError):
                asyncio.get_running_loop().remove_reader(control.fileno())
            control.close()
        procs, self._procs = self._procs, {}
        for proc in procs.values():
            asyncio.get_running_loop().create_task(_watch_orphan(proc))

    async def spawn(
        self, worker_end: socket.socket, storage_end: socket.socket, timeout: float = 10.0
    ) -> ForkedProcess:
        """A worker forked from the template, talking on `worker_end` and making storage
        calls on `storage_end` (both sent to it)."""
        async with self._lock:
            if not self.running or self._control is None:
                await self.close()
                await self._start()
            control = self._control
            assert control is not None
            fds = array.array("i", [worker_end.fileno(), storage_end.fileno()])
            try:
                control.sendmsg([b"spawn"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, fds)])
                pid = await asyncio.wait_for(self._pids.get(), timeout)
            except (OSError, TimeoutError) as exc:
                await self.close()
                raise TemplateUnavailable(f"the worker template did not answer: {exc}") from None
            proc = ForkedProcess(pid)
            if pid in self._early:
                proc.exited(self._early.pop(pid))
            else:
                self._procs[pid] = proc
            return proc

    async def close(self) -> None:
        control, self._control = self._control, None
        if control is not None:
            with contextlib.suppress(ValueError, OSError):
                asyncio.get_running_loop().remove_reader(control.fileno())
            control.close()
        proc, self._proc = self._proc, None
        if proc is not None and proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(proc.wait(), 5.0)
            children.release(proc.pid)
        for pending in list(self._procs.values()):
            asyncio.get_running_loop().create_task(_watch_orphan(pending))
        self._procs = {}


async def _watch_orphan(proc: ForkedProcess) -> None:
    """A forked worker whose template is gone: poll until it is gone too."""
    while proc.returncode is None:
        try:
            os.kill(proc.pid, 0)
        except ProcessLookupError:
            proc.exited(-signal.SIGKILL)
            return
        except PermissionError:
            pass
        await asyncio.sleep(0.05)
