"""Readiness probes with deadlines, failing with the component and its log."""

from __future__ import annotations

import json
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from . import procs


class ComponentFailed(RuntimeError):
    """A component did not become ready; the message names it and its log file."""

    def __init__(self, component: str, log: Path, reason: str, tail: bool = True) -> None:
        message = f"{component} failed: {reason}\n  log: {log}"
        if tail and log.exists():
            lines = log.read_text(errors="replace").splitlines()[-15:]
            message += "\n  last lines:\n    " + "\n    ".join(lines)
        super().__init__(message)
        self.component = component
        self.log = log


def https_get(
    url: str, ca: Path | None = None, cert: tuple[Path, Path] | None = None
) -> tuple[int, str]:
    """GET over TLS; without ``ca`` the server certificate is not verified
    (component health ports serve self-signed certificates)."""
    if ca is None:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    else:
        ctx = ssl.create_default_context(cafile=str(ca))
    if cert is not None:
        ctx.load_cert_chain(str(cert[0]), str(cert[1]))
    try:
        with urllib.request.urlopen(url, context=ctx, timeout=3) as resp:
            return resp.status, resp.read().decode(errors="replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")


def http_get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=3) as resp:
            return resp.status, resp.read().decode(errors="replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")


def until(
    run: Path,
    component: str,
    probe: Callable[[], bool],
    timeout: float,
    process: str | None = None,
) -> float:
    """Poll ``probe`` until true; fail early if the component's process died.

    Returns the seconds waited.
    """
    start = time.monotonic()
    proc_name = process if process is not None else component
    last_error = "timed out"
    while True:
        try:
            if probe():
                return time.monotonic() - start
        except (OSError, ValueError, json.JSONDecodeError) as e:
            last_error = f"timed out; last probe error: {e}"
        if proc_name and procs.running_pid(run, proc_name) is None:
            raise ComponentFailed(component, procs.log_file(run, proc_name), "process exited")
        if time.monotonic() - start > timeout:
            raise ComponentFailed(
                component,
                procs.log_file(run, proc_name or component),
                f"{last_error} after {timeout:.0f}s",
            )
        time.sleep(0.2)
