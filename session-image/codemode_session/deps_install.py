"""Install package specs with pip, never through a shell."""

from __future__ import annotations

import importlib
import subprocess
import sys

from codemode_session.errors import ValidationError
from codemode_session.names import validate_package_spec


def pip_install(specs: list[str], target: str | None, timeout: float = 600) -> None:
    """pip install the validated specs, into `target` when set (a writable dir on sys.path).

    pip reads index settings (PIP_INDEX_URL, PIP_FIND_LINKS, PIP_NO_INDEX) from the
    environment, so an air-gapped cluster points it at its own mirror.
    """
    if not specs:
        return
    checked = [validate_package_spec(s) for s in specs]
    argv = [sys.executable, "-m", "pip", "install", *checked, "--disable-pip-version-check",
            "--no-input", "--quiet"]
    if target:
        argv += ["--target", target, "--upgrade"]
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL, check=False)
    except subprocess.TimeoutExpired:
        raise ValidationError(f"pip install timed out after {timeout:g}s") from None
    if proc.returncode != 0:
        lines = [ln for ln in (proc.stderr or proc.stdout).splitlines() if ln.strip()]
        errors = [ln for ln in lines if "ERROR" in ln] or lines[-1:] or ["pip failed"]
        raise ValidationError(f"pip install {' '.join(checked)} failed: {errors[0].strip()}")
    if target and target not in sys.path:
        sys.path.insert(0, target)
    importlib.invalidate_caches()
