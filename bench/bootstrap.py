"""Benchmark `codemode store bootstrap` from a local git repository into Redis.

Builds a repository of N workflows (default 5,000) in a temp dir, starts its own
redis-server on a free loopback port, and times: a cold bootstrap, a no-op
re-sync, a re-sync after a one-file change, and the same no-op as a real
subprocess (what a WorkflowLibrary Job pays, interpreter start included).
A local repository is read in place; the `*_shallow_fetch_s` figures force the
path remote repositories take (depth-1 fetch into a temporary repository).
Targets: cold <= 10 s, no-op <= 1 s. Prints one JSON object on its last line.

    python bench/bootstrap.py [--workflows 5000]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import redis
from codemode_session.cli import store_cmd
from codemode_session.store import gitfetch
from local_redis import redis_server

WORKFLOW = '''"""Workflow number {i}: adds {i} to a value."""


async def run(value: int, scale: float = 1.0, label: str = "w{i}") -> dict:
    """Add a constant.

    Args:
        value: the input
        scale: multiplier
    """
    return {{"label": label, "result": (value + {i}) * scale}}
'''


def git(repo: Path, *args: str) -> str:
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "bench",
        "GIT_AUTHOR_EMAIL": "b@example.com",
        "GIT_COMMITTER_NAME": "bench",
        "GIT_COMMITTER_EMAIL": "b@example.com",
    }
    out = subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, env=env)
    return out.stdout.decode().strip()


def make_repo(root: Path, count: int) -> Path:
    repo = root / "library"
    (repo / "workflows").mkdir(parents=True)
    git(repo, "init", "-q", "-b", "main")
    for i in range(count):
        (repo / "workflows" / f"w{i:05d}.py").write_text(WORKFLOW.format(i=i))
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "library")
    return repo


def bootstrap(argv: list[str]) -> tuple[float, dict[str, object]]:
    parser = argparse.ArgumentParser(prog="codemode")
    store_cmd.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    out = io.StringIO()
    start = time.perf_counter()
    with contextlib.redirect_stdout(out):
        code = args.func(args)
    elapsed = time.perf_counter() - start
    if code != 0:
        raise SystemExit(f"bootstrap exited {code}")
    return elapsed, json.loads(out.getvalue().strip().splitlines()[-1])


def main() -> None:
    cli = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    cli.add_argument("--workflows", type=int, default=5000)
    opts = cli.parse_args()
    with tempfile.TemporaryDirectory(prefix="codemode-bench-") as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        repo = make_repo(root, opts.workflows)
        build_s = time.perf_counter() - t0
        (root / "redis").mkdir()
        with redis_server(root / "redis") as (url, _pid):
            argv = [
                "store",
                "bootstrap",
                "--library",
                "bench",
                "--git",
                f"file://{repo}",
                "--ref",
                "main",
                "--path",
                "workflows",
                "--redis-url",
                url,
                "--prefix",
                "bench",
                "--workspace-id",
                "ws1",
            ]
            cold_s, cold = bootstrap(argv)
            noop_s, noop = bootstrap(argv)
            (repo / "workflows" / "w00000.py").write_text(WORKFLOW.format(i=123456))
            git(repo, "commit", "-q", "-am", "change one")
            change_s, change = bootstrap(argv)
            start = time.perf_counter()
            proc = subprocess.run(
                [sys.executable, "-m", "codemode_session", *argv],
                capture_output=True,
                text=True,
                check=False,
            )
            sub_s = time.perf_counter() - start
            stored = redis.Redis.from_url(url).hlen("bench:ws:ws1:workflows:__workflows__")
            local_repo = gitfetch._local_repo
            gitfetch._local_repo = lambda url: None
            try:
                fetch_argv = [*argv[:-1], "ws2"]
                fetch_cold_s, _ = bootstrap(fetch_argv)
                fetch_noop_s, fetch_noop = bootstrap(fetch_argv)
            finally:
                gitfetch._local_repo = local_repo
        result = {
            "workflows": opts.workflows,
            "repo_build_s": round(build_s, 3),
            "cold_bootstrap_s": round(cold_s, 3),
            "noop_resync_s": round(noop_s, 3),
            "one_change_resync_s": round(change_s, 3),
            "noop_resync_subprocess_s": round(sub_s, 3) if proc.returncode == 0 else None,
            "cold_bootstrap_shallow_fetch_s": round(fetch_cold_s, 3),
            "noop_resync_shallow_fetch_s": round(fetch_noop_s, 3),
            "subprocess_error": None if proc.returncode == 0 else proc.stderr.strip()[-300:],
            "stored": stored,
            "cold": {k: cold[k] for k in ("added", "updated", "removed", "unchanged")},
            "noop": {k: noop[k] for k in ("added", "updated", "removed", "unchanged")},
            "one_change": {k: change[k] for k in ("added", "updated", "removed", "unchanged")},
            "targets": {"cold_bootstrap_s": 10.0, "noop_resync_s": 1.0},
            "ok": (
                cold_s <= 10.0
                and noop_s <= 1.0
                and stored == opts.workflows
                and fetch_noop["unchanged"] == opts.workflows
            ),
        }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
