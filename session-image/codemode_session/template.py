"""The worker template: one process that has imported what a worker needs and forks a
worker for each request, so a new session's worker is ready in a couple of milliseconds
and shares the imported code's memory (copy-on-write) instead of loading its own.

Run as `python -I -m codemode_session.template FD` with the environment of a worker
(no credentials). On its control socket (SOCK_SEQPACKET) it takes `spawn` with the
worker's two sockets attached (SCM_RIGHTS: its channel and its storage line) and
answers `pid N`; it reaps its children and reports `exit N STATUS` (a negative
status: killed by that signal). The copy starts its own session (its process group is
its pid, as a spawned worker's is), becomes dumpable again, and runs the worker on the
sockets. The template itself is not dumpable: agent
code in a worker (same uid) cannot trace it or read its memory, so it cannot taint the
workers of sessions that come later.
"""

from __future__ import annotations

import array
import contextlib
import ctypes
import gc
import os
import select
import signal
import socket
import sys

import codemode_session.worker as worker_module

PR_SET_DUMPABLE = 4
MESSAGE = 64


def _dumpable(value: int) -> None:
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_DUMPABLE, value, 0, 0, 0)


def _received_fds(control: socket.socket) -> tuple[bytes, list[int]]:
    fds = array.array("i")
    data, ancillary, _, _ = control.recvmsg(MESSAGE, socket.CMSG_SPACE(2 * fds.itemsize))
    for level, kind, payload in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(payload[: len(payload) - (len(payload) % fds.itemsize)])
    return data, list(fds)


def _status(waitstatus: int) -> int:
    return -os.WTERMSIG(waitstatus) if os.WIFSIGNALED(waitstatus) else os.WEXITSTATUS(waitstatus)


def _child(control: socket.socket, wake: int, fd: int, storage_fd: int) -> None:
    """In the copy: leave the template's world, then be a worker."""
    try:
        control.close()
        os.close(wake)
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        os.setsid()
        _dumpable(1)
        gc.unfreeze()
        sys.argv[1:] = [str(fd), str(storage_fd)]  # as a spawned worker has them
        worker_module.run(socket.socket(fileno=fd), socket.socket(fileno=storage_fd))
    finally:
        os._exit(0)


def serve(control: socket.socket) -> None:
    read_wake, write_wake = os.pipe()
    os.set_blocking(write_wake, False)
    signal.set_wakeup_fd(write_wake)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    gc.freeze()  # what is imported now stays shared with every copy
    while True:
        ready, _, _ = select.select([control.fileno(), read_wake], [], [])
        if read_wake in ready:
            with contextlib.suppress(BlockingIOError):
                os.read(read_wake, 4096)
            _reap(control)
        if control.fileno() in ready:
            data, fds = _received_fds(control)
            if not data:
                return  # the server went away
            if data != b"spawn" or len(fds) != 2:
                for fd in fds:
                    os.close(fd)
                continue
            pid = os.fork()
            if pid == 0:
                _child(control, read_wake, *fds)
            for fd in fds:
                os.close(fd)
            control.send(f"pid {pid}".encode())


def _reap(control: socket.socket) -> None:
    while True:
        try:
            pid, waitstatus = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        with contextlib.suppress(OSError):
            control.send(f"exit {pid} {_status(waitstatus)}".encode())


def main() -> None:
    control = socket.socket(fileno=int(sys.argv[1]))
    _dumpable(0)
    # Import what a worker imports at its start, so each copy starts with it loaded.
    import codemode_session.namespaces
    import codemode_session.runner
    import codemode_session.snapshot  # noqa: F401  (namespaces and runner import it not)

    with contextlib.suppress(OSError, KeyboardInterrupt):
        serve(control)


if __name__ == "__main__":
    main()
