"""Durable CodeSessions on the node cluster: how long until a session's variables are
back after its pod is deleted, after a resume, and in a fork (its first result).

Without `--warm` every new pod starts cold. With `--warm N` the workspace keeps a warm
pool of N pods (spec.warmPool) and each action waits first until a pool pod is ready, so
the resume and the fork bind a warm pod (the JSON counts those that did).

Starts (or reuses) the node cluster, builds and imports our images if stale, runs
redis-server on the node's host address and the operator on this host; each round
makes a session, sets `x`, then times from the action to the first result that shows
`x`. Prints one JSON object on its last line.

    python bench/durable_cluster.py [--rounds 5] [--warm 2]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

from cluster_setup import Bench, cluster_workspace
from codemode_operator.sessions import Sessions

from tests.k8s.operator_fixture import Kinds, wait_for

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


def _warm_pod_ready(bench: Bench) -> bool:
    """A pool pod is Ready and unclaimed now (the workspace's status may lag behind)."""
    pods = bench.kinds.core.list_namespaced_pod(
        bench.namespace, label_selector="codemode.dev/warm=bench,!codemode.dev/session"
    ).items
    return any(
        p.metadata.deletion_timestamp is None
        and any(c.type == "Ready" and c.status == "True" for c in p.status.conditions or [])
        for p in pods
    )


def _bound_warm(bench: Bench, name: str) -> bool:
    """The session's current pod came from the pool (a cold pod is named NAME-session)."""
    pod = str(bench.kinds.status("codesessions", name).get("podName", ""))
    return not pod.endswith(f"{name}-session")


def rounds(bench: Bench, count: int, warm: bool) -> dict[str, list[float]]:
    kinds, sessions, op, namespace = bench.kinds, bench.sessions, bench.operator, bench.namespace
    samples: dict[str, list[float]] = {"pod_deleted": [], "resume": [], "fork": []}
    bound: dict[str, int] = {"resume": 0, "fork": 0}

    def pool_ready() -> None:
        if warm:
            wait_for(lambda: _warm_pod_ready(bench) or None, 180, "a ready pool pod", op=op)

    for i in range(count):
        name = f"d{i}"
        sessions.ensure(name, "bench")
        sessions.wait_ready(name, timeout=180)
        value_of(sessions, name, STATE)

        def delete_pod(name: str = name) -> None:
            pod = str(kinds.status("codesessions", name)["podName"])
            kinds.core.delete_namespaced_pod(pod, namespace, grace_period_seconds=0)

        pool_ready()
        samples["pod_deleted"].append(timed(delete_pod, sessions, name))
        # The pod the suspend stops: a replacement may have come from the pool, so it is
        # not always NAME-session. The resume is timed from once it is gone (its last
        # snapshot taken), not from while it is still stopping.
        pod = str(kinds.status("codesessions", name)["podName"])
        kinds.patch("codesessions", name, {"spec": {"suspend": True}})
        wait_for(
            lambda n=name: kinds.status("codesessions", n).get("phase") == "Suspended",  # type: ignore[misc]
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

        pool_ready()
        samples["resume"].append(timed(resume, sessions, name))
        bound["resume"] += _bound_warm(bench, name)
        fork = f"f{i}"

        def make_fork(fork: str = fork, name: str = name) -> None:
            kinds.create(
                "codesessions", fork, {"workspaceRef": "bench", "forkFrom": {"session": name}}
            )

        pool_ready()
        samples["fork"].append(timed(make_fork, sessions, fork))
        bound["fork"] += _bound_warm(bench, fork)
        for gone in (name, fork):
            kinds.delete("codesessions", gone)
    samples["bound_warm"] = [float(bound["resume"]), float(bound["fork"])]
    return samples


def cluster_figures(count: int, warm: int = 0) -> dict[str, Any]:
    """The p50s (and every sample) of `count` rounds on the node cluster."""
    spec: dict[str, Any] = {"warmPool": {"size": warm}} if warm else {}
    with cluster_workspace(
        "bench", 3 * count + warm + 5, {"SESSION_POLL_SECONDS": "1"}, workspace_spec=spec
    ) as bench:
        samples = rounds(bench, count, warm > 0)
    resumed_warm, forked_warm = samples.pop("bound_warm")
    return {
        "rounds": count,
        "warm_pool_size": warm,
        "resumes_bound_warm": int(resumed_warm),
        "forks_bound_warm": int(forked_warm),
        **{
            f"{what}_to_first_result_p50_s": round(statistics.median(values), 3)
            for what, values in samples.items()
        },
        **{f"{what}_s": [round(v, 3) for v in values] for what, values in samples.items()},
        "target_resume_p50_s": 0.3 if warm else 2.0,
        "load_avg_1m": os.getloadavg()[0],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--warm", type=int, default=0, help="warm pool size (0: cold pods)")
    args = parser.parse_args()
    figures = cluster_figures(args.rounds, args.warm)
    print(json.dumps({"benchmark": "durable_cluster", **figures}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
