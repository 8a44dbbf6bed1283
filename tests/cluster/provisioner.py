"""The node cluster's default StorageClass: host folders made on demand.

kind ships a local-path provisioner as its default ``standard`` class, so a chart
that asks for a PersistentVolumeClaim just works there; nothing here can pull that
image. This small host process does the same job: for each Pending claim of the
class it makes a world-writable folder under the cluster's run directory and a
hostPath PersistentVolume bound to that claim (one node, so the folder is where the
pod runs); a Released volume of its own is deleted together with its folder.

Run by ``up`` as ``python -m tests.cluster.provisioner``; ``down`` stops it.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import time
from pathlib import Path
from typing import Any

from kubernetes import client, config
from kubernetes.client.rest import ApiException

CLASS_NAME = "standard"
PROVISIONER = "codemode.dev/local-path"
PROVISIONED_BY = "pv.kubernetes.io/provisioned-by"
READY_FILE = "provisioner.ready"

STORAGE_CLASS = f"""
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata:
  name: {CLASS_NAME}
  annotations: {{storageclass.kubernetes.io/is-default-class: "true"}}
provisioner: {PROVISIONER}
reclaimPolicy: Delete
volumeBindingMode: Immediate
"""

log = logging.getLogger("local-path")


def volume_name(claim: Any) -> str:
    return f"pvc-{claim.metadata.uid}"


def volume_for(claim: Any, root: Path) -> dict[str, Any]:
    """The PersistentVolume that satisfies ``claim``: a folder of its own under ``root``."""
    meta = claim.metadata
    request = (claim.spec.resources.requests or {}).get("storage", "1Gi")
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {"name": volume_name(claim), "annotations": {PROVISIONED_BY: PROVISIONER}},
        "spec": {
            "capacity": {"storage": request},
            "accessModes": claim.spec.access_modes or ["ReadWriteOnce"],
            "persistentVolumeReclaimPolicy": "Delete",
            "storageClassName": CLASS_NAME,
            "volumeMode": claim.spec.volume_mode or "Filesystem",
            "claimRef": {
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "namespace": meta.namespace,
                "name": meta.name,
                "uid": meta.uid,
            },
            "hostPath": {
                "path": str(root / f"{meta.namespace}_{meta.name}_{meta.uid}"),
                "type": "DirectoryOrCreate",
            },
        },
    }


def wants_volume(claim: Any, existing: set[str]) -> bool:
    return bool(
        claim.status.phase == "Pending"
        and claim.spec.storage_class_name == CLASS_NAME
        and not claim.spec.volume_name
        and volume_name(claim) not in existing
    )


def released(volume: Any) -> bool:
    annotations = volume.metadata.annotations or {}
    return bool(
        annotations.get(PROVISIONED_BY) == PROVISIONER
        and volume.status.phase in ("Released", "Failed")
        and volume.spec.persistent_volume_reclaim_policy == "Delete"
    )


def reconcile(core: client.CoreV1Api, root: Path) -> None:
    """One pass: provision what is wanted, delete what was released."""
    volumes = core.list_persistent_volume().items
    existing = {v.metadata.name for v in volumes}
    for claim in core.list_persistent_volume_claim_for_all_namespaces().items:
        if not wants_volume(claim, existing):
            continue
        manifest = volume_for(claim, root)
        folder = Path(manifest["spec"]["hostPath"]["path"])
        folder.mkdir(parents=True, exist_ok=True)
        folder.chmod(0o777)  # the pod may run as any uid; hostPath has no fsGroup
        core.create_persistent_volume(manifest)
        log.info(
            "provisioned %s for %s/%s",
            manifest["metadata"]["name"],
            claim.metadata.namespace,
            claim.metadata.name,
        )
    for volume in volumes:
        if not released(volume):
            continue
        folder = Path(volume.spec.host_path.path) if volume.spec.host_path else None
        if folder is not None and folder.parent == root:
            shutil.rmtree(folder, ignore_errors=True)
        try:
            core.delete_persistent_volume(volume.metadata.name)
        except ApiException as e:
            if e.status != 404:
                raise
        log.info("deleted %s", volume.metadata.name)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.cluster.provisioner")
    parser.add_argument("--kubeconfig", required=True)
    parser.add_argument("--root", required=True, type=Path, help="folder of the volumes")
    parser.add_argument("--ready-file", required=True, type=Path)
    parser.add_argument("--interval", type=float, default=1.0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    args.root.mkdir(parents=True, exist_ok=True)
    core = client.CoreV1Api(config.new_client_from_config(config_file=args.kubeconfig))
    while True:
        try:
            reconcile(core, args.root.resolve())
            args.ready_file.touch()
        except Exception as e:  # keep serving: the next pass retries
            log.warning("pass failed: %s", str(e).splitlines()[0] if str(e) else repr(e))
        time.sleep(args.interval)


if __name__ == "__main__":
    raise SystemExit(main())
