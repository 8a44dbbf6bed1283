"""Our session image runs as a pod on the node cluster and its /health answers
through the pod IP, a Service ClusterIP and the Service's DNS name."""

from __future__ import annotations

import json
from typing import Any

import pytest
from kubernetes import client

from tests.cluster.images import BASE
from tests.cluster.pytest_plugin import Cluster
from tests.k8s.operator_fixture import wait_for

pytestmark = pytest.mark.e2e

# kube-proxy programs a new Service a moment after its endpoints appear (longer
# on a node that just started), so each URL gets a short grace period.
FETCH = """
import json, sys, time, urllib.request
for url in sys.argv[1:]:
    deadline = time.monotonic() + 45
    while True:
        try:
            body = json.load(urllib.request.urlopen(url, timeout=10))
            break
        except OSError as exc:
            if time.monotonic() > deadline:
                raise
            print(json.dumps({"url": url, "retry": str(exc)}), flush=True)
            time.sleep(1)
    print(json.dumps({"url": url, "body": body}), flush=True)
"""


def test_session_image_health_via_pod_service_and_dns(
    cluster: Cluster, namespace: str, project_images: dict[str, str]
) -> None:
    core: Any = client.CoreV1Api(cluster.api_client())
    batch: Any = client.BatchV1Api(cluster.api_client())
    env = {"CONTAINER_AUTH_TOKEN": "e2e-token", "STORAGE_DIR": "/tmp/store"}
    core.create_namespaced_pod(
        namespace,
        client.V1Pod(
            metadata=client.V1ObjectMeta(name="session", labels={"app": "session"}),
            spec=client.V1PodSpec(
                containers=[
                    client.V1Container(
                        name="session",
                        image=project_images["session"],
                        image_pull_policy="IfNotPresent",
                        env=[client.V1EnvVar(name=k, value=v) for k, v in env.items()],
                        ports=[client.V1ContainerPort(container_port=8080)],
                        readiness_probe=client.V1Probe(
                            http_get=client.V1HTTPGetAction(path="/health", port=8080),
                            period_seconds=1,
                        ),
                    )
                ]
            ),
        ),
    )
    core.create_namespaced_service(
        namespace,
        client.V1Service(
            metadata=client.V1ObjectMeta(name="session"),
            spec=client.V1ServiceSpec(
                selector={"app": "session"},
                ports=[client.V1ServicePort(port=80, target_port=8080)],
            ),
        ),
    )

    def ready() -> bool:
        pod = core.read_namespaced_pod("session", namespace)
        return any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])

    try:
        wait_for(ready, 120, "session pod Ready")
    except AssertionError:
        logs = core.read_namespaced_pod_log("session", namespace)
        raise AssertionError(f"session pod not ready; logs:\n{logs}") from None

    pod_ip = core.read_namespaced_pod("session", namespace).status.pod_ip
    cluster_ip = core.read_namespaced_service("session", namespace).spec.cluster_ip
    urls = [
        f"http://{pod_ip}:8080/health",
        f"http://{cluster_ip}/health",
        f"http://session.{namespace}.svc.cluster.local/health",
    ]
    batch.create_namespaced_job(
        namespace,
        client.V1Job(
            metadata=client.V1ObjectMeta(name="fetch"),
            spec=client.V1JobSpec(
                backoff_limit=0,
                template=client.V1PodTemplateSpec(
                    metadata=client.V1ObjectMeta(labels={"app": "fetch"}),
                    spec=client.V1PodSpec(
                        restart_policy="Never",
                        containers=[
                            client.V1Container(
                                name="fetch",
                                image=BASE,
                                image_pull_policy="IfNotPresent",
                                command=["python3", "-c", FETCH, *urls],
                            )
                        ],
                    ),
                ),
            ),
        ),
    )

    def finished() -> bool:
        status = batch.read_namespaced_job("fetch", namespace).status
        return bool(status.succeeded or status.failed)

    wait_for(finished, 180, "fetch Job to finish")
    fetch_pod = core.list_namespaced_pod(namespace, label_selector="app=fetch").items[0]
    logs = core.read_namespaced_pod_log(fetch_pod.metadata.name, namespace)
    assert batch.read_namespaced_job("fetch", namespace).status.succeeded == 1, logs
    answers = {r["url"]: r["body"] for r in map(json.loads, logs.splitlines()) if "body" in r}
    assert set(answers) == set(urls)
    for body in answers.values():
        assert body["status"] == "healthy"
