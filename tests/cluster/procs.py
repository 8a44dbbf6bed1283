"""Start and stop background processes that must never outlive ``down``.

Each process gets a PID file holding its PID and kernel start time, so ``down``
only ever signals the exact process it started, never a recycled PID.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path


def _start_time(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Field 22 (starttime); the command name in field 2 may contain spaces.
    return stat.rsplit(")", 1)[1].split()[19]


def pid_file(run: Path, name: str) -> Path:
    return run / "pids" / f"{name}.pid"


def log_file(run: Path, name: str) -> Path:
    return run / "logs" / f"{name}.log"


def start(run: Path, name: str, argv: list[str], env: dict[str, str] | None = None) -> int:
    """Start ``argv`` detached in its own session, logging to ``logs/<name>.log``."""
    pid_file(run, name).parent.mkdir(parents=True, exist_ok=True)
    log = log_file(run, name)
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        out.write(f"\n=== {time.strftime('%F %T')} {' '.join(argv)}\n".encode())
        out.flush()
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, **(env or {})},
        )
    pid_file(run, name).write_text(f"{proc.pid} {_start_time(proc.pid)}\n")
    return proc.pid


def running_pid(run: Path, name: str) -> int | None:
    """PID of the process we started as ``name`` if it is still that process."""
    path = pid_file(run, name)
    try:
        pid_s, started = path.read_text().split()
    except (OSError, ValueError):
        return None
    pid = int(pid_s)
    state = _state(pid)
    if _start_time(pid) != started or state in (None, "Z"):
        if state == "Z":
            _reap(pid)
        return None
    return pid


def _state(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return None


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def names(run: Path) -> list[str]:
    d = run / "pids"
    return sorted(p.stem for p in d.glob("*.pid")) if d.exists() else []


def stop(run: Path, name: str, timeout: float = 15.0) -> None:
    """SIGTERM the process group we started, then SIGKILL after ``timeout``."""
    pid = running_pid(run, name)
    if pid is not None:
        _signal_group(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and running_pid(run, name) is not None:
            _reap(pid)
            time.sleep(0.1)
        if running_pid(run, name) is not None:
            _signal_group(pid, signal.SIGKILL)
            while running_pid(run, name) is not None:
                _reap(pid)
                time.sleep(0.05)
    pid_file(run, name).unlink(missing_ok=True)


def _signal_group(pid: int, sig: signal.Signals) -> None:
    """Each process leads its own session; signal the group so helpers die too."""
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        pass
    except PermissionError:
        os.kill(pid, sig)
