"""The node cluster's default StorageClass: a claim gets a host folder a non-root
pod can write, deleting the claim deletes the volume and its folder, and claims
of another class (or of none) are left alone.

On kind the class of that name is kind's local-path (``WaitForFirstConsumer``: the
claim binds once the writer pod is scheduled) and the folder is in the node
container, read there with ``docker exec`` (tests/cluster/README.md, kind)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from tests.cluster import kind
from tests.cluster.images import BASE
from tests.cluster.pytest_plugin import Cluster
from tests.k8s.operator_fixture import wait_for

pytestmark = pytest.mark.e2e


def _claim(name: str, storage_class: str | None) -> client.V1PersistentVolumeClaim:
    return client.V1PersistentVolumeClaim(
        metadata=client.V1ObjectMeta(name=name),
        spec=client.V1PersistentVolumeClaimSpec(
            access_modes=["ReadWriteOnce"],
            storage_class_name=storage_class,
            resources=client.V1VolumeResourceRequirements(requests={"storage": "1Gi"}),
        ),
    )


class Folder:
    """A volume's folder: on this host (the local node cluster) or in the kind node."""

    def __init__(self, path: str, on_kind: bool) -> None:
        self.path, self.on_kind = Path(path), on_kind

    def read(self, name: str) -> tuple[str, int]:
        """A file's content and owner uid."""
        f = self.path / name
        if self.on_kind:
            return kind.node_exec("cat", str(f)), int(kind.node_exec("stat", "-c", "%u", str(f)))
        return f.read_text(), f.stat().st_uid

    def exists(self) -> bool:
        if self.on_kind:
            return kind.node_exec("sh", "-c", f"test -e '{self.path}' && echo y || echo n") == "y\n"
        return self.path.exists()


def test_default_class_binds_writes_as_any_uid_and_deletes(
    cluster: Cluster, namespace: str
) -> None:
    on_kind = kind.targets_kind()
    core: Any = client.CoreV1Api(cluster.api_client())
    for name, storage_class in (("data", None), ("no-class", ""), ("other", "other")):
        core.create_namespaced_persistent_volume_claim(namespace, _claim(name, storage_class))

    def bound() -> bool:
        claim = core.read_namespaced_persistent_volume_claim("data", namespace)
        return bool(claim.status.phase == "Bound")

    if not on_kind:  # kind's local-path binds once a pod uses the claim
        wait_for(bound, 60, "the default-class claim Bound")
    core.create_namespaced_pod(
        namespace,
        client.V1Pod(
            metadata=client.V1ObjectMeta(name="writer"),
            spec=client.V1PodSpec(
                restart_policy="Never",
                termination_grace_period_seconds=0,
                security_context=client.V1PodSecurityContext(run_as_user=999, run_as_group=999),
                containers=[
                    client.V1Container(
                        name="w",
                        image=BASE,
                        image_pull_policy="IfNotPresent",
                        command=["sh", "-c", "echo hello > /data/f && id -u"],
                        volume_mounts=[client.V1VolumeMount(name="d", mount_path="/data")],
                    )
                ],
                volumes=[
                    client.V1Volume(
                        name="d",
                        persistent_volume_claim=client.V1PersistentVolumeClaimVolumeSource(
                            claim_name="data"
                        ),
                    )
                ],
            ),
        ),
    )

    def finished() -> str | None:
        phase = core.read_namespaced_pod("writer", namespace).status.phase
        return phase if phase in ("Succeeded", "Failed") else None

    wait_for(finished, 90, "the uid-999 writer to finish")
    logs = core.read_namespaced_pod_log("writer", namespace)
    assert core.read_namespaced_pod("writer", namespace).status.phase == "Succeeded", logs
    wait_for(bound, 60, "the default-class claim Bound")
    claim = core.read_namespaced_persistent_volume_claim("data", namespace)
    assert claim.spec.storage_class_name == "standard"
    pv = core.read_persistent_volume(claim.spec.volume_name)
    folder = Folder((pv.spec.host_path or pv.spec.local).path, on_kind)
    assert folder.read("f") == ("hello\n", 999)  # the folder on this host (kind: its node)

    for name in ("no-class", "other"):
        left = core.read_namespaced_persistent_volume_claim(name, namespace)
        assert left.status.phase == "Pending" and not left.spec.volume_name, name

    core.delete_namespaced_pod("writer", namespace, grace_period_seconds=0)
    core.delete_namespaced_persistent_volume_claim("data", namespace)

    def volume_gone() -> bool:
        names = {v.metadata.name for v in core.list_persistent_volume().items}
        return pv.metadata.name not in names

    wait_for(volume_gone, 60, "the released volume deleted")
    assert not folder.exists()
