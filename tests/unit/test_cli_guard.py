"""`codemode exec` exists only where the operator extra (the Kubernetes client) is installed.

The session image installs `codemode[session]`: codemode_operator is there (one
distribution), the Kubernetes client is not. Each case runs the CLI in a process of its
own; "not installed" is simulated by a None in sys.modules, which makes both an import
and importlib's spec lookup of `kubernetes` fail, as they do where it is missing.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

RUN_CLI = "import sys\n{hide}from codemode_session.cli.main import main\nsys.exit(main())\n"
HIDE_KUBERNETES = "sys.modules['kubernetes'] = None\n"


def _codemode(*args: str, extra: bool) -> subprocess.CompletedProcess[str]:
    code = RUN_CLI.format(hide="" if extra else HIDE_KUBERNETES)
    return subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=60, check=False
    )


def _commands(help_text: str) -> list[str]:
    """The subcommand names `codemode --help` lists."""
    usage = help_text.split("positional arguments:", 1)[1].split("options:", 1)[0]
    lines = usage.splitlines()[2:]  # after the COMMAND line
    return [
        line.split()[0]
        for line in lines
        if line.startswith("    ") and not line.startswith("      ")
    ]


def test_exec_is_listed_with_the_operator_extra() -> None:
    pytest.importorskip("kubernetes")
    proc = _codemode("--help", extra=True)
    assert proc.returncode == 0, proc.stderr
    assert _commands(proc.stdout) == ["serve", "store", "dev", "mcp", "exec", "sessions"]
    assert "operator extra" not in proc.stdout


def test_without_the_extra_exec_is_not_offered() -> None:
    proc = _codemode("--help", extra=False)
    assert proc.returncode == 0, proc.stderr
    assert _commands(proc.stdout) == ["serve", "store", "dev", "mcp"]
    assert "need the operator extra: pip install 'codemode[operator]'" in " ".join(
        proc.stdout.split()
    )  # argparse wraps the epilog


def test_without_the_extra_exec_says_what_to_install_in_one_line() -> None:
    proc = _codemode("exec", "agent-1", "1 + 1", extra=False)
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr.splitlines() == [
        "codemode: error: codemode exec and codemode sessions (CodeSessions on Kubernetes) "
        "need the operator "
        "extra: pip install 'codemode[operator]'"
    ]


def test_without_the_extra_the_other_commands_still_work() -> None:
    proc = _codemode("store", "--help", extra=False)
    assert proc.returncode == 0, proc.stderr
    assert "bootstrap" in proc.stdout
