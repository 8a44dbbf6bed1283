"""`codemode exec` says in one line which part of reaching Kubernetes failed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

from tests.conftest import free_port


def _exec(kubeconfig: Path) -> tuple[int, list[str]]:
    """The CLI in a process of its own, as a user runs it (the Kubernetes client
    reads KUBECONFIG once, at import)."""
    proc = subprocess.run(
        [sys.executable, "-m", "codemode_session", "exec", "agent-1", "1 + 1", "--wait", "5"],
        env={**os.environ, "KUBECONFIG": str(kubeconfig)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.stdout == ""
    return proc.returncode, proc.stderr.splitlines()


def test_a_missing_kubeconfig_is_one_line(tmp_path: Path) -> None:
    code, lines = _exec(tmp_path / "nope")
    assert code == 2
    assert len(lines) == 1 and lines[0].startswith(
        "codemode: error: no usable kubeconfig (set KUBECONFIG)"
    )


def test_an_unreachable_api_server_is_named(tmp_path: Path) -> None:
    server = f"https://127.0.0.1:{free_port()}"
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "c",
                "clusters": [
                    {"name": "k", "cluster": {"server": server, "insecure-skip-tls-verify": True}}
                ],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [{"name": "c", "context": {"cluster": "k", "user": "u"}}],
            }
        )
    )
    code, lines = _exec(kubeconfig)
    assert code == 2
    assert len(lines) == 1 and lines[0].startswith(
        f"codemode: error: cannot reach the Kubernetes API server at {server}: "
    ), lines
