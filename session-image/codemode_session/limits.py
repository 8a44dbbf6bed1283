"""Resource limits for a worker running untrusted code.

The worker limits itself before it runs any user code: address space (memory),
process count, no core dumps. Hard limits equal soft ones, so non-root code
cannot lift them. Where the process count limit cannot hold (root ignores
RLIMIT_NPROC), a cgroup pids controller is used if one is writable; the server
kills every process in it when the worker is recycled.
"""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import time
from pathlib import Path

from codemode_session.children import reap_orphans

CGROUP_PARENT = "codemode-workers"


def _set(limit: int, value: int) -> None:
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(limit, (value, value))


def pids_cgroup_dir(worker_pid: int) -> Path | None:
    """Where this worker's pids cgroup lives (v1 or v2), if the host lets us make one."""
    for root in (Path("/sys/fs/cgroup/pids"), Path("/sys/fs/cgroup")):
        if (root / "cgroup.procs").exists() and os.access(root, os.W_OK):
            if root.name != "pids" and not (root / "cgroup.controllers").exists():
                continue
            return root / CGROUP_PARENT / str(worker_pid)
    return None


def apply_worker_limits(memory_mb: int, max_processes: int) -> None:
    """Called by the worker on itself, before any user code runs."""
    _set(resource.RLIMIT_CORE, 0)
    if memory_mb > 0:
        _set(resource.RLIMIT_AS, memory_mb * 1024 * 1024)
    if max_processes > 0:
        if os.geteuid() != 0:
            _set(resource.RLIMIT_NPROC, max_processes)
        else:
            _join_pids_cgroup(max_processes)


def _join_pids_cgroup(max_processes: int) -> None:
    directory = pids_cgroup_dir(os.getpid())
    if directory is None:
        return
    with contextlib.suppress(OSError):
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "pids.max").write_text(str(max_processes))
        (directory / "cgroup.procs").write_text(str(os.getpid()))


def leave_pids_cgroup() -> None:
    """On a worker's own exit: move to the parent cgroup and remove ours.

    The server removes the cgroup of a worker it kills; a worker that ends by
    itself (its server went away) cleans up here instead of leaving an empty one.
    """
    directory = pids_cgroup_dir(os.getpid())
    if directory is None or not directory.exists():
        return
    with contextlib.suppress(OSError):
        (directory.parent / "cgroup.procs").write_text(str(os.getpid()))
        directory.rmdir()


def kill_worker_tree(pid: int) -> None:
    """SIGKILL the worker's process group and its cgroup members, then drop the cgroup.

    The caller still reaps the worker itself; members of the group that called
    setsid() are caught by the cgroup where there is one.
    """
    directory = pids_cgroup_dir(pid)
    for attempt in range(100):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
        if directory is None or not directory.exists():
            if attempt >= 2:
                return
        else:
            try:
                members = (directory / "cgroup.procs").read_text().split()
            except OSError:
                members = []
            for member in members:
                with contextlib.suppress(ProcessLookupError, PermissionError, ValueError):
                    os.kill(int(member), signal.SIGKILL)
            if not members:
                try:
                    directory.rmdir()
                    return
                except FileNotFoundError:
                    return
                except OSError:
                    pass  # members not yet released (zombies): try again
        time.sleep(0.005)


def kill_all_but(keep: frozenset[int]) -> int:
    """SIGKILL every process we may signal except ourselves and `keep`, until none is left.

    For a server that is PID 1 of a one-session pod: whatever runs besides the server
    and its spare worker came from agent code, whichever session or process group it
    escaped to (setsid, double fork), so a recycled worker leaves nothing behind.
    """
    me = os.getpid()
    killed = 0
    for _ in range(200):
        found = 0
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            pid = int(entry)
            if pid in (me, 1) or pid in keep or _is_zombie(entry):
                continue
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                continue
            found += 1
        killed += found
        reap_orphans()
        if not found:
            break
        time.sleep(0.002)
    return killed


def _is_zombie(pid: str) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # gone already
    return stat[stat.rfind(")") + 2 :][:1] in ("Z", "X")
