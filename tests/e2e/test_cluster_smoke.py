"""The node cluster runs real pods: a server answers through its pod IP, its
Service ClusterIP and its DNS name from another pod; a Job completes; logs are
readable through the API."""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes import client

from tests.cluster.images import BASE
from tests.cluster.pytest_plugin import Cluster
from tests.k8s.operator_fixture import wait_for

pytestmark = pytest.mark.e2e

SERVER = """
import http.server, socket
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = ("ok " + socket.gethostname()).encode() if self.path == "/health" else b"nope"
        self.send_response(200 if self.path == "/health" else 404)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
print("serving", flush=True)
http.server.HTTPServer(("", 8080), H).serve_forever()
"""

# kube-proxy programs a new Service a moment after its endpoints appear (longer on a
# node that just started), so each URL gets a short grace period, as a client would.
CLIENT = """
import sys, time, urllib.request
for url in sys.argv[1:]:
    deadline = time.monotonic() + 45
    while True:
        try:
            body = urllib.request.urlopen(url, timeout=10).read().decode()
            break
        except OSError as exc:
            if time.monotonic() > deadline:
                raise
            print("retry", url, exc, flush=True)
            time.sleep(1)
    print(url, "->", body, flush=True)
"""


def _python_container(name: str, script: str, args: list[str] | None = None) -> client.V1Container:
    return client.V1Container(
        name=name,
        image=BASE,
        image_pull_policy="IfNotPresent",
        command=["python3", "-c", script, *(args or [])],
    )


def test_pod_service_dns_job_and_logs(cluster: Cluster, namespace: str) -> None:
    core: Any = client.CoreV1Api(cluster.api_client())
    batch: Any = client.BatchV1Api(cluster.api_client())

    server = _python_container("server", SERVER)
    server.ports = [client.V1ContainerPort(container_port=8080)]
    server.readiness_probe = client.V1Probe(
        http_get=client.V1HTTPGetAction(path="/health", port=8080), period_seconds=1
    )
    core.create_namespaced_pod(
        namespace,
        client.V1Pod(
            metadata=client.V1ObjectMeta(name="server", labels={"app": "server"}),
            spec=client.V1PodSpec(containers=[server]),
        ),
    )
    core.create_namespaced_service(
        namespace,
        client.V1Service(
            metadata=client.V1ObjectMeta(name="web"),
            spec=client.V1ServiceSpec(
                selector={"app": "server"},
                ports=[client.V1ServicePort(port=80, target_port=8080)],
            ),
        ),
    )

    def server_ready() -> bool:
        pod = core.read_namespaced_pod("server", namespace)
        return any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])

    wait_for(server_ready, 90, "server pod Ready (kubelet probe via pod IP)")
    pod_ip = core.read_namespaced_pod("server", namespace).status.pod_ip
    cluster_ip = core.read_namespaced_service("web", namespace).spec.cluster_ip
    assert pod_ip and cluster_ip

    urls = [
        f"http://{pod_ip}:8080/health",
        f"http://{cluster_ip}/health",
        f"http://web.{namespace}.svc.cluster.local/health",
        "http://web/health",  # the pod's search domains resolve short names too
    ]
    batch.create_namespaced_job(
        namespace,
        client.V1Job(
            metadata=client.V1ObjectMeta(name="probe"),
            spec=client.V1JobSpec(
                backoff_limit=0,
                template=client.V1PodTemplateSpec(
                    metadata=client.V1ObjectMeta(labels={"app": "probe"}),
                    spec=client.V1PodSpec(
                        restart_policy="Never",
                        containers=[_python_container("probe", CLIENT, urls)],
                    ),
                ),
            ),
        ),
    )

    def job_finished() -> bool:
        status = batch.read_namespaced_job("probe", namespace).status
        return bool(status.succeeded or status.failed)

    wait_for(job_finished, 180, "probe Job to finish")
    probe_pod = core.list_namespaced_pod(namespace, label_selector="app=probe").items[0]
    logs = core.read_namespaced_pod_log(probe_pod.metadata.name, namespace)
    assert batch.read_namespaced_job("probe", namespace).status.succeeded == 1, logs
    for url in urls:
        assert f"{url} -> ok server" in logs, logs

    server_logs = core.read_namespaced_pod_log("server", namespace)
    assert "serving" in server_logs
