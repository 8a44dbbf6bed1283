"""CodeSession apply -> Ready -> first /execute answered, on the node cluster.

Starts (or reuses) the node cluster, builds and imports our images if stale,
runs redis-server on the node's host address and the operator on this host,
then creates sessions one after another and times each from `create` to the
first result of `1 + 1`. Prints one JSON object on its last line.

    python bench/session_start.py [--sessions 20]
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
from pathlib import Path

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


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sessions", type=int, default=20)
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
        [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            f"127.0.0.1 {NODE_HOST_IP}",
            "--requirepass",
            "bench-admin",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            workdir,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    wait_for_port(port)
    samples: list[float] = []
    ready_samples: list[float] = []
    try:
        with temp_namespace(api, "bench-start") as namespace:
            kinds = Kinds(api, namespace)
            op = OperatorProcess(
                lay.kubeconfig, [namespace], env={"CODEMODE_SESSION_IMAGE": images.SESSION}
            )
            with op:
                kinds.create(
                    "workspaces",
                    "bench",
                    {
                        "redis": {"url": f"redis://:bench-admin@{NODE_HOST_IP}:{port}/0"},
                        "limits": {"maxSessions": args.sessions + 5},
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
                    for i in range(args.sessions):
                        name = f"s{i}"
                        started = time.perf_counter()
                        sessions.ensure(name, "bench")
                        session = sessions.wait_ready(name, timeout=120)
                        ready_samples.append(time.perf_counter() - started)
                        with sessions.connect(name) as client:
                            result = client.execute("1 + 1")
                        elapsed = time.perf_counter() - started
                        if result.value != 2:
                            raise SystemExit(f"session {name} answered {result}")
                        samples.append(elapsed)
                        kinds.delete("codesessions", session["metadata"]["name"])
                finally:
                    sessions.close()
    finally:
        redis_proc.terminate()
        redis_proc.wait(10)
        shutil.rmtree(workdir, ignore_errors=True)
    result = {
        "benchmark": "session_start",
        "sessions": len(samples),
        "apply_to_first_result_p50_s": round(statistics.median(samples), 3),
        "apply_to_first_result_p95_s": round(percentile(samples, 0.95), 3),
        "apply_to_first_result_max_s": round(max(samples), 3),
        "apply_to_ready_p50_s": round(statistics.median(ready_samples), 3),
        "target_p50_s": 3.0,
        "load_avg_1m": os.getloadavg()[0],
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
