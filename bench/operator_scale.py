"""1,000 CodeSessions to Ready on the control-plane cluster (kwok node): time and operator RSS.

    python bench/operator_scale.py [--sessions 1000] [--threads 32]

Starts the control-plane cluster if it is not up (tests.cluster.lifecycle), a real
redis-server on loopback, and the real operator (`python -m codemode_operator`) watching
one fresh namespace. Creates a Workspace (maxSessions 2000), then the CodeSessions from
a thread pool, and waits until every one is phase Ready. The operator's peak RSS is its
VmHWM from /proc. The namespace is deleted at the end. The last line is one JSON object.
Targets: all Ready within 120 s, operator peak RSS at most 300 MB.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from kubernetes import client, config, watch  # noqa: E402

from tests.cluster import lifecycle  # noqa: E402
from tests.cluster.layout import layout  # noqa: E402
from tests.conftest import RedisServer  # noqa: E402
from tests.k8s.operator_fixture import (  # noqa: E402
    GROUP,
    VERSION,
    Kinds,
    OperatorProcess,
    install_crds,
    wait_for,
)

TARGET_SECONDS = 120.0
TARGET_RSS_MB = 300.0


def _status_kb(pid: int, field: str) -> int:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    match = re.search(rf"^{field}:\s+(\d+) kB", text, re.M)
    return int(match.group(1)) if match else 0


class RssSampler(threading.Thread):
    """Peak RSS of a process: max of VmHWM (kernel's high-water mark) and sampled VmRSS."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.peak_kb = 0
        self.stop_event = threading.Event()

    def run(self) -> None:
        while not self.stop_event.is_set():
            self.sample()
            self.stop_event.wait(0.2)

    def sample(self) -> None:
        self.peak_kb = max(
            self.peak_kb, _status_kb(self.pid, "VmHWM"), _status_kb(self.pid, "VmRSS")
        )


class ReadyWatcher(threading.Thread):
    """Names of the namespace's Ready CodeSessions, kept by a watch.

    Listing a thousand sessions every second would cost the machine more than the
    operator under test; a watch only carries the changes.
    """

    def __init__(self, api: Any, namespace: str) -> None:
        super().__init__(daemon=True)
        self.custom = client.CustomObjectsApi(api)
        self.namespace = namespace
        self.ready: set[str] = set()
        self.changed = threading.Event()

    def _see(self, obj: dict[str, Any], deleted: bool = False) -> None:
        name = obj["metadata"]["name"]
        if not deleted and (obj.get("status") or {}).get("phase") == "Ready":
            self.ready.add(name)
        else:
            self.ready.discard(name)
        self.changed.set()

    def run(self) -> None:
        while True:
            listing = self.custom.list_namespaced_custom_object(
                GROUP, VERSION, self.namespace, "codesessions"
            )
            for obj in listing["items"]:
                self._see(obj)
            version = listing["metadata"]["resourceVersion"]
            try:
                for event in watch.Watch().stream(  # type: ignore[no-untyped-call]
                    self.custom.list_namespaced_custom_object,
                    GROUP,
                    VERSION,
                    self.namespace,
                    "codesessions",
                    resource_version=version,
                    timeout_seconds=300,
                ):
                    self._see(event["object"], deleted=event["type"] == "DELETED")
            except client.ApiException as exc:
                if exc.status != 410:  # 410: the version expired; list again
                    raise


def _apiserver_requests(api: Any) -> Counter[str] | None:
    """Requests the API server has served (all clients) by "VERB resource", from /metrics."""
    try:
        # the client's own connection pool carries its credentials; call_api's signature
        # differs between client versions
        response = api.rest_client.pool_manager.request(
            "GET", api.configuration.host + "/metrics", preload_content=True
        )
        if response.status != 200:
            return None
        text = response.data.decode()
    except Exception:
        return None
    total: Counter[str] = Counter()
    for line in text.splitlines():
        if line.startswith("apiserver_request_total{"):
            labels = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}", 1)[0]))
            key = f"{labels.get('verb', '?')} {labels.get('resource', '?')}"
            if labels.get("subresource"):
                key += "/" + labels["subresource"]
            total[key] += int(float(line.rsplit(" ", 1)[1]))
    return total


def _per_session(
    before: Counter[str] | None, after: Counter[str] | None, sessions: int
) -> tuple[float | None, dict[str, float]]:
    """Requests per session in total and for the busiest kinds of request."""
    if before is None or after is None:
        return None, {}
    diff = after - before
    top = {key: round(n / sessions, 2) for key, n in diff.most_common() if n / sessions >= 0.02}
    return round(sum(diff.values()) / sessions, 1), top


def _cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    import os

    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def run(
    sessions: int, threads: int, deadline_s: float = 600, keep: bool = False, settle_s: float = 5.0
) -> dict[str, Any]:
    lay = layout("control-plane")
    if not lifecycle.is_up(lay):
        lifecycle.up("control-plane")
    kubeconfig = lay.kubeconfig
    api = config.new_client_from_config(config_file=str(kubeconfig))  # type: ignore[no-untyped-call]
    install_crds(kubeconfig, api)
    core = client.CoreV1Api(api)
    ns = f"bench-scale-{uuid.uuid4().hex[:6]}"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=ns)))
    workdir = Path(tempfile.mkdtemp(prefix="codemode-bench-"))
    redis_server = RedisServer(workdir)
    op = OperatorProcess(
        kubeconfig,
        [ns],
        log_dir=workdir,
        env={k: os.environ[k] for k in ("OPERATOR_WORKERS", "MALLOC_ARENA_MAX") if k in os.environ},
    )
    result: dict[str, Any] = {"sessions": sessions}
    try:
        wait_for(lambda: core.read_namespaced_service_account("default", ns), 30, "namespace")
        op.start().wait_started()
        sampler = RssSampler(op.pid)
        sampler.start()
        kinds = Kinds(api, ns)
        kinds.create(
            "workspaces",
            "bench",
            {
                "redis": {"url": redis_server.url},
                "prefix": f"bench{uuid.uuid4().hex[:6]}",
                "limits": {"maxSessions": 2000},
                "deletionPolicy": "Cascade",
                "dataPolicy": "Delete",
            },
        )
        wait_for(
            lambda: kinds.condition("workspaces", "bench", "Ready").get("status") == "True",
            60,
            "workspace Ready",
            op=op,
        )
        rss_idle_kb = _status_kb(op.pid, "VmRSS")
        cpu_before = _cpu_seconds(op.pid)
        requests_before = _apiserver_requests(api)

        local = threading.local()

        def create(i: int) -> None:
            if not hasattr(local, "custom"):
                local.custom = client.CustomObjectsApi(
                    config.new_client_from_config(config_file=str(kubeconfig))
                )  # type: ignore[no-untyped-call]
            body = {
                "apiVersion": f"{GROUP}/{VERSION}",
                "kind": "CodeSession",
                "metadata": {"name": f"s{i:04d}"},
                "spec": {"workspaceRef": "bench"},
            }
            for attempt in range(5):
                try:
                    local.custom.create_namespaced_custom_object(
                        GROUP, VERSION, ns, "codesessions", body
                    )
                    return
                except client.ApiException as exc:
                    if exc.status == 409:
                        return
                    if attempt == 4:
                        raise
                    time.sleep(0.5)

        watcher = ReadyWatcher(api, ns)
        watcher.start()
        start = time.monotonic()
        wall_start = time.time()
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(create, range(sessions)))
        created_s = time.monotonic() - start

        ready = 0
        progress: list[tuple[float, int]] = []
        deadline = start + deadline_s
        while time.monotonic() < deadline:
            ready = len(watcher.ready)
            progress.append((round(time.monotonic() - start, 1), ready))
            if ready >= sessions:
                break
            watcher.changed.wait(1.0)
            watcher.changed.clear()
        ready = len(watcher.ready)
        elapsed = time.monotonic() - start
        sampler.sample()
        requests_after = _apiserver_requests(api)
        per_session, by_kind = _per_session(requests_before, requests_after, sessions)
        pod_items = core.list_namespaced_pod(ns, label_selector="codemode.dev/session").items
        pods = len(pod_items)
        stages = _pod_stages(pod_items, wall_start)
        # a settle: what the operator's periodic work costs at this size, all sessions Ready
        cpu_ready = _cpu_seconds(op.pid)
        time.sleep(settle_s)
        sampler.sample()
        settled = _apiserver_requests(api)
        settle = {
            "seconds": settle_s,
            "operator_cpu_percent": round(100 * (_cpu_seconds(op.pid) - cpu_ready) / settle_s, 1),
            "operator_rss_mb": round(_status_kb(op.pid, "VmRSS") / 1024, 1),
            "apiserver_requests_per_second": (
                round(sum((settled - requests_after).values()) / settle_s, 1)
                if settled is not None and requests_after is not None
                else None
            ),
        }
        sampler.stop_event.set()
        result.update(
            seconds_to_all_ready=round(elapsed, 1) if ready >= sessions else None,
            ready=ready,
            seconds_to_create=round(created_s, 1),
            pods=pods,
            pod_stages_s=stages,
            operator_peak_rss_mb=round(sampler.peak_kb / 1024, 1),
            operator_idle_rss_mb=round(rss_idle_kb / 1024, 1),
            operator_cpu_seconds=round(_cpu_seconds(op.pid) - cpu_before, 1),
            apiserver_requests_per_session=per_session,
            apiserver_requests_per_session_by_kind=by_kind,
            ready_progress=progress[:: max(1, len(progress) // 12)],
            settled=settle,
            targets={"seconds": TARGET_SECONDS, "rss_mb": TARGET_RSS_MB},
            met=bool(
                ready >= sessions
                and elapsed <= TARGET_SECONDS
                and sampler.peak_kb / 1024 <= TARGET_RSS_MB
            ),
            operator_log=str(op.log_path),
        )
    finally:
        # Delete while the operator runs, so it can release its finalizers.
        try:
            if keep:
                raise AssertionError(f"--keep: namespace {ns} left in place")
            core.delete_namespace(ns)
            wait_for(
                lambda: _namespace_gone(core, ns), 240, f"namespace {ns} deleted", interval=1.0
            )
        except AssertionError as exc:
            print(f"warning: {exc}", file=sys.stderr)
        finally:
            op.stop()
            redis_server.stop()
    return result


def _pod_stages(pods: list[Any], wall_start: float) -> dict[str, Any]:
    """When pods were created, scheduled and Ready, in seconds after the first create
    (p50 and max; 1 s resolution): shows whether the operator or the cluster lags."""
    created, scheduled, ready = [], [], []
    for pod in pods:
        created.append(pod.metadata.creation_timestamp.timestamp() - wall_start)
        for cond in (pod.status.conditions if pod.status else None) or []:
            if cond.status != "True" or cond.last_transition_time is None:
                continue
            at = cond.last_transition_time.timestamp() - wall_start
            if cond.type == "PodScheduled":
                scheduled.append(at)
            elif cond.type == "Ready":
                ready.append(at)

    def summary(values: list[float]) -> list[float] | None:
        if not values:
            return None
        values.sort()
        return [round(values[len(values) // 2], 1), round(values[-1], 1)]

    return {
        "pod_created": summary(created),
        "pod_scheduled": summary(scheduled),
        "pod_ready": summary(ready),
    }


def _namespace_gone(core: Any, ns: str) -> bool:
    try:
        core.read_namespace(ns)
    except client.ApiException as exc:
        return bool(exc.status == 404)
    return False


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sessions", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=32)
    parser.add_argument(
        "--deadline",
        type=float,
        default=600,
        help="give up waiting for Ready after this many seconds",
    )
    parser.add_argument(
        "--settle",
        type=float,
        default=5.0,
        help="seconds to watch the operator after all are Ready (its "
        "periodic checks run every 30 s)",
    )
    parser.add_argument(
        "--keep", action="store_true", help="leave the namespace and operator log for inspection"
    )
    args = parser.parse_args()
    result = run(args.sessions, args.threads, args.deadline, args.keep, args.settle)
    print(json.dumps(result))
    return 0 if result.get("met") else 1


if __name__ == "__main__":
    sys.exit(main())
