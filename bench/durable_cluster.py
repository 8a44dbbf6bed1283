"""Durable CodeSessions on the node cluster: how long until a session's variables are
back after its pod is deleted, after a resume (cold pod: no warm pool yet), and in a
fork (its first result).

Starts (or reuses) the node cluster, builds and imports our images if stale, runs
redis-server on the node's host address and the operator on this host; each round
makes a session, sets `x`, then times from the action to the first result that shows
`x`. Prints one JSON object on its last line.

    python bench/durable_cluster.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from codemode_operator.sessions import Sessions  # noqa: E402

from tests.cluster import images, lifecycle  # noqa: E402
from tests.cluster.layout import NODE_HOST_IP, layout  # noqa: E402
from tests.conftest import free_port, wait_for_port  # noqa: E402
from tests.k8s.operator_fixture import (  # noqa: E402
    Kinds,
    OperatorProcess,
    install_crds,
    temp_namespace,
    wait_for,
)

STATE = "x = list(range(100_000))\nlen(x)"


def value_of(sessions: Sessions, name: str, code: str) -> Any:
    with sessions.connect(name, timeout=180) as client:
        result = client.execute(code)
    if result.error:
        raise SystemExit(f"{name}: {result.error}")
    return result.value


def timed(action: Callable[[], None], sessions: Sessions, name: str) -> float:
    """Seconds from `action` to the first result that shows `x`."""
    started = time.perf_counter()
    action()
    if value_of(sessions, name, "len(x)") != 100_000:
        raise SystemExit(f"{name}: x did not come back")
    return time.perf_counter() - started


def _pod_exists(kinds: Kinds, name: str) -> bool:
    try:
        kinds.core.read_namespaced_pod(name, kinds.namespace)
    except Exception:
        return False
    return True


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    lay = layout("node")
    if not lifecycle.is_up(lay):
        lifecycle.up("node")
    images.build_project_images()
    lifecycle.import_images_if_up()

    from kubernetes import config

    api = config.new_client_from_config(config_file=str(lay.kubeconfig))  # type: ignore[no-untyped-call]
    install_crds(lay.kubeconfig, api)
    port = free_port()
    workdir = tempfile.mkdtemp(prefix="codemode-bench-redis-")
    redis_proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", f"127.0.0.1 {NODE_HOST_IP}",
         "--requirepass", "bench-admin", "--save", "", "--appendonly", "no", "--dir", workdir],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    wait_for_port(port)
    samples: dict[str, list[float]] = {"pod_deleted": [], "resume": [], "fork": []}
    try:
        with temp_namespace(api, "bench-durable") as namespace:
            kinds = Kinds(api, namespace)
            op = OperatorProcess(
                lay.kubeconfig,
                [namespace],
                env={"CODEMODE_SESSION_IMAGE": images.SESSION, "SESSION_POLL_SECONDS": "1"},
            )
            with op:
                kinds.create(
                    "workspaces",
                    "bench",
                    {
                        "redis": {"url": f"redis://:bench-admin@{NODE_HOST_IP}:{port}/0"},
                        "limits": {"maxSessions": 3 * args.rounds + 5},
                    },
                )
                wait_for(
                    lambda: (kinds.status("workspaces", "bench") or {}).get("credentialsSecret"),
                    60,
                    "workspace ready",
                    op=op,
                )
                sessions = Sessions(namespace=namespace, api=api)
                try:
                    for i in range(args.rounds):
                        name = f"d{i}"
                        sessions.ensure(name, "bench")
                        sessions.wait_ready(name, timeout=180)
                        value_of(sessions, name, STATE)
                        pod = f"{name}-session"

                        def delete_pod(pod: str = pod) -> None:
                            kinds.core.delete_namespaced_pod(pod, namespace, grace_period_seconds=0)

                        samples["pod_deleted"].append(timed(delete_pod, sessions, name))

                        kinds.patch("codesessions", name, {"spec": {"suspend": True}})
                        wait_for(
                            lambda n=name: (
                                kinds.status("codesessions", n).get("phase")  # type: ignore[misc]
                                == "Suspended"
                            ),
                            120,
                            "suspended",
                            op=op,
                        )

                        wait_for(
                            lambda p=pod: not _pod_exists(kinds, p) or None,  # type: ignore[misc]
                            120,
                            "the suspended pod gone",
                            op=op,
                        )

                        def resume(name: str = name) -> None:
                            kinds.patch("codesessions", name, {"spec": {"suspend": False}})

                        samples["resume"].append(timed(resume, sessions, name))

                        fork = f"f{i}"

                        def make_fork(fork: str = fork, name: str = name) -> None:
                            kinds.create(
                                "codesessions",
                                fork,
                                {"workspaceRef": "bench", "forkFrom": {"session": name}},
                            )

                        samples["fork"].append(timed(make_fork, sessions, fork))
                        for gone in (name, fork):
                            kinds.delete("codesessions", gone)
                finally:
                    sessions.close()
    finally:
        redis_proc.terminate()
        redis_proc.wait(10)
        shutil.rmtree(workdir, ignore_errors=True)
    result = {
        "benchmark": "durable_cluster",
        "rounds": args.rounds,
        **{
            f"{what}_to_first_result_p50_s": round(statistics.median(values), 3)
            for what, values in samples.items()
        },
        **{f"{what}_s": [round(v, 3) for v in values] for what, values in samples.items()},
        "target_resume_p50_s": 2.0,
        "load_avg_1m": os.getloadavg()[0],
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
