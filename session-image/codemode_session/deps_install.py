"""Install package specs with pip, never through a shell, and guard what it installed.

DEPS_DIR is on every worker's import path and agent code shares its uid, so a
worker could drop a `requests.py` there for the next session to import. The
server records the folder (path, size, inode and change time of every entry:
ctime cannot be set back by a user) after each of its own installs, and before
a worker is handed to a session it compares: anything else in there wipes the
folder and reinstalls what the server had installed.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

from codemode_session import children
from codemode_session.errors import ValidationError
from codemode_session.names import validate_package_spec

# Never handed to pip: a package's build scripts are as untrusted as agent code.
SECRET_ENV = ("CONTAINER_AUTH_TOKEN", "REDIS_URL", "STORAGE_DIR")
Manifest = dict[str, tuple[int, int, int, int]]
_lock = threading.Lock()
_manifests: dict[str, Manifest] = {}
_installed: dict[str, list[str]] = {}


def snapshot(folder: str) -> Manifest:
    found: Manifest = {}
    for root, dirs, files in os.walk(folder):
        for name in (*dirs, *files):
            path = os.path.join(root, name)
            with contextlib.suppress(OSError):
                st = os.lstat(path)
                found[path] = (st.st_size, st.st_ino, st.st_mtime_ns, st.st_ctime_ns)
    with contextlib.suppress(OSError):
        st = os.lstat(folder)
        found[folder] = (0, st.st_ino, st.st_mtime_ns, st.st_ctime_ns)
    return found


def reset_folder(folder: str) -> None:
    """Empty the folder (at server start: what a previous container left is not ours)."""
    with _lock:
        shutil.rmtree(folder, ignore_errors=True)
        Path(folder).mkdir(parents=True, exist_ok=True)
        _manifests[folder] = snapshot(folder)
        _installed[folder] = []


def verify_folder(folder: str | None) -> bool:
    """True when the folder is as the server left it; else it is wiped and the server's
    packages are reinstalled (a failed reinstall leaves it empty, never tampered)."""
    if not folder:
        return True
    with _lock:
        expected = _manifests.get(folder)
        if expected is None or snapshot(folder) == expected:
            return True
        specs = list(_installed.get(folder, []))
    reset_folder(folder)
    with contextlib.suppress(Exception):
        pip_install(specs, folder)
    return False


def pip_install(specs: list[str], target: str | None, timeout: float = 600) -> None:
    """pip install the validated specs, into `target` when set (a writable dir on sys.path).

    pip reads index settings (PIP_INDEX_URL, PIP_FIND_LINKS, PIP_NO_INDEX) from the
    environment, so an air-gapped cluster points it at its own mirror.
    """
    if not specs:
        return
    checked = [validate_package_spec(s) for s in specs]
    argv = [
        sys.executable,
        "-I",
        "-m",
        "pip",
        "install",
        *checked,
        "--disable-pip-version-check",
        "--no-input",
        "--quiet",
    ]
    if target:
        argv += ["--target", target, "--upgrade"]
    env = {k: v for k, v in os.environ.items() if k not in SECRET_ENV}
    with _lock:
        proc = _run(argv, env, timeout)
        if target and proc.returncode == 0:
            _installed.setdefault(target, [])
            _installed[target] += [s for s in checked if s not in _installed[target]]
            _manifests[target] = snapshot(target)
    if proc.returncode != 0:
        lines = [ln for ln in (proc.stderr or proc.stdout).splitlines() if ln.strip()]
        errors = [ln for ln in lines if "ERROR" in ln] or lines[-1:] or ["pip failed"]
        raise ValidationError(f"pip install {' '.join(checked)} failed: {errors[0].strip()}")
    # The server never puts the folder on its own import path: only workers import it.


def _run(argv: list[str], env: dict[str, str], timeout: float) -> subprocess.CompletedProcess[str]:
    proc = subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    children.manage(proc.pid)  # a PID-1 server's orphan reaper must leave it to us
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise ValidationError(f"pip install timed out after {timeout:g}s") from None
    finally:
        children.release(proc.pid)
    return subprocess.CompletedProcess(argv, proc.returncode, out, err)
