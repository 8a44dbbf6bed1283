"""The control-plane cluster is real Kubernetes: controllers, scheduler and
API-server validation behave as they do in production."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from kubernetes import client

from tests.cluster.pytest_plugin import Cluster
from tests.k8s.operator_fixture import wait_for

pytestmark = pytest.mark.k8s


def test_deployment_pods_run_on_kwok_node(cluster: Cluster, namespace: str) -> None:
    api_client = cluster.api_client()
    apps: Any = client.AppsV1Api(api_client)
    core: Any = client.CoreV1Api(api_client)
    labels = {"app": "smoke"}
    apps.create_namespaced_deployment(
        namespace,
        client.V1Deployment(
            metadata=client.V1ObjectMeta(name="smoke"),
            spec=client.V1DeploymentSpec(
                replicas=2,
                selector=client.V1LabelSelector(match_labels=labels),
                template=client.V1PodTemplateSpec(
                    metadata=client.V1ObjectMeta(labels=labels),
                    spec=client.V1PodSpec(
                        containers=[
                            client.V1Container(
                                name="main",
                                image="localhost/codemode/base:bookworm",
                                image_pull_policy="IfNotPresent",
                                # Keeps running on a real node too (kind).
                                command=["python3", "-c", "import time; time.sleep(3600)"],
                            )
                        ]
                    ),
                ),
            ),
        ),
    )

    def running() -> bool:
        pods = core.list_namespaced_pod(namespace, label_selector="app=smoke").items
        return len(pods) == 2 and all(p.status.phase == "Running" for p in pods)

    wait_for(running, 60, "2 Running pods")
    pods = core.list_namespaced_pod(namespace, label_selector="app=smoke").items
    assert {p.spec.node_name for p in pods} == {cluster.node_name}

    # The ReplicaSet controller and the scheduler did real work.
    def all_ready() -> bool:
        status = apps.read_namespaced_deployment("smoke", namespace).status
        return (status.ready_replicas or 0) == 2

    wait_for(all_ready, 30, "deployment readyReplicas=2")


def test_crd_schema_is_enforced_by_api_server(cluster: Cluster, namespace: str) -> None:
    group = f"smoke{uuid.uuid4().hex[:6]}.codemode.test"
    plural = "widgets"
    crd: dict[str, Any] = {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{group}"},
        "spec": {
            "group": group,
            "scope": "Namespaced",
            "names": {"plural": plural, "singular": "widget", "kind": "Widget"},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "properties": {
                                "spec": {
                                    "type": "object",
                                    "required": ["size"],
                                    "properties": {"size": {"type": "integer", "minimum": 1}},
                                }
                            },
                        }
                    },
                }
            ],
        },
    }
    api_client = cluster.api_client()
    ext: Any = client.ApiextensionsV1Api(api_client)
    custom: Any = client.CustomObjectsApi(api_client)
    ext.create_custom_resource_definition(crd)
    try:

        def established() -> bool:
            conds = ext.read_custom_resource_definition(f"{plural}.{group}").status.conditions or []
            return any(c.type == "Established" and c.status == "True" for c in conds)

        wait_for(established, 30, "CRD Established")

        def widget(name: str, spec: dict[str, Any]) -> dict[str, Any]:
            return {
                "apiVersion": f"{group}/v1",
                "kind": "Widget",
                "metadata": {"name": name},
                "spec": spec,
            }

        # The new API may take a moment to be served after Established.
        def created() -> bool:
            try:
                custom.create_namespaced_custom_object(
                    group, "v1", namespace, plural, widget("ok", {"size": 3})
                )
            except client.ApiException as e:
                if e.status == 404:
                    return False
                raise
            return True

        wait_for(created, 30, "valid Widget accepted")
        got = custom.get_namespaced_custom_object(group, "v1", namespace, plural, "ok")
        assert got["spec"] == {"size": 3}

        for bad in ({"size": 0}, {"size": "big"}, {}):
            with pytest.raises(client.ApiException) as info:
                custom.create_namespaced_custom_object(
                    group, "v1", namespace, plural, widget("bad", bad)
                )
            assert info.value.status == 422, info.value.body
            assert "spec.size" in str(info.value.body)
    finally:
        ext.delete_custom_resource_definition(f"{plural}.{group}")
