"""A WorkflowLibrary's sync Job: the session image running `codemode store bootstrap`."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from codemode_operator.api.workflowlibrary import WorkflowLibrarySpec
from codemode_operator.builders.common import (
    container_security_context,
    env,
    labels,
    owner_reference,
    pod_security_context,
    secret_env,
)

GIT_CREDENTIALS_DIR = "/etc/codemode/git"


@dataclass(frozen=True)
class LibraryParams:
    name: str
    namespace: str
    uid: str
    spec: WorkflowLibrarySpec
    workspace: str
    workspace_id: str
    prefix: str
    credentials_secret: str
    image: str
    image_pull_policy: str = "IfNotPresent"
    timeout_seconds: int = 300

    def labels(self) -> dict[str, str]:
        return labels("library-sync", self.workspace, library=self.name)

    def owner(self) -> list[dict[str, Any]]:
        return [owner_reference("WorkflowLibrary", self.name, self.uid)]


def spec_hash(spec: WorkflowLibrarySpec) -> str:
    data = json.dumps(spec.model_dump(by_alias=True, mode="json"), sort_keys=True)
    return hashlib.sha256(data.encode()).hexdigest()[:8]


def job_name(library: str, attempt: int, spec: WorkflowLibrarySpec) -> str:
    base = library[:40].rstrip("-")
    return f"{base}-sync-{spec_hash(spec)}-{attempt}"


def bootstrap_args(
    p: LibraryParams, delete: bool = False, secret_keys: frozenset[str] = frozenset()
) -> list[str]:
    src = p.spec.source
    args = ["store", "bootstrap", "--library", p.name, "--result-file", "/dev/termination-log"]
    if delete:
        return [*args, "--delete"]
    args += ["--git", src.url, "--path", src.path]
    ref = src.ref
    value = ref.commit or ref.tag or ref.branch
    if value:
        args += ["--ref", value]
    args.append("--prune" if p.spec.prune else "--no-prune")
    if src.secret_ref is not None:
        # The Secret holds `token`, or `username` and `password`; the CLI reads them as files,
        # so no credential ever appears in the Job's arguments.
        if "token" in secret_keys:
            args += ["--token-file", f"{GIT_CREDENTIALS_DIR}/token"]
        elif {"username", "password"} <= secret_keys:
            args += [
                "--username-file",
                f"{GIT_CREDENTIALS_DIR}/username",
                "--password-file",
                f"{GIT_CREDENTIALS_DIR}/password",
            ]
    return args


def sync_job(
    p: LibraryParams, name: str, delete: bool = False, secret_keys: frozenset[str] = frozenset()
) -> dict[str, Any]:
    mounts: list[dict[str, Any]] = [{"name": "tmp", "mountPath": "/tmp"}]
    volumes: list[dict[str, Any]] = [{"name": "tmp", "emptyDir": {"sizeLimit": "2Gi"}}]
    if p.spec.source.secret_ref is not None and not delete:
        mounts.append({"name": "git", "mountPath": GIT_CREDENTIALS_DIR, "readOnly": True})
        volumes.append(
            {
                "name": "git",
                "secret": {"secretName": p.spec.source.secret_ref.name, "defaultMode": 0o440},
            }
        )
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": name,
            "namespace": p.namespace,
            "labels": p.labels(),
            "ownerReferences": p.owner(),
        },
        "spec": {
            "backoffLimit": 0,
            "activeDeadlineSeconds": p.timeout_seconds,
            "ttlSecondsAfterFinished": 3600,
            "template": {
                "metadata": {"labels": p.labels()},
                "spec": {
                    "restartPolicy": "Never",
                    "automountServiceAccountToken": False,
                    "enableServiceLinks": False,
                    "securityContext": pod_security_context(),
                    "containers": [
                        {
                            "name": "bootstrap",
                            "image": p.image,
                            "imagePullPolicy": p.image_pull_policy,
                            "args": bootstrap_args(p, delete, secret_keys),
                            "env": [
                                secret_env("REDIS_URL", p.credentials_secret, "url"),
                                env("STORAGE_PREFIX", p.prefix),
                                env("WORKSPACE_ID", p.workspace_id),
                                env("HOME", "/tmp"),
                            ],
                            "terminationMessagePolicy": "FallbackToLogsOnError",
                            "resources": {
                                "requests": {"cpu": "100m", "memory": "128Mi"},
                                "limits": {"cpu": "1", "memory": "512Mi"},
                            },
                            "securityContext": container_security_context(),
                            "volumeMounts": mounts,
                        }
                    ],
                    "volumes": volumes,
                },
            },
        },
    }


def parse_result(termination_message: str | None) -> dict[str, Any] | None:
    """The bootstrap's JSON result from a container's termination message, if any."""
    if not termination_message:
        return None
    for line in reversed(termination_message.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                data = json.loads(line)
            except ValueError:
                continue
            if isinstance(data, dict) and "revision" in data:
                return data
    return None


def failure_reason(termination_message: str | None) -> str:
    """The one readable line the CLI printed on failure (FallbackToLogsOnError)."""
    lines = [ln.strip() for ln in (termination_message or "").splitlines() if ln.strip()]
    errors = [ln for ln in lines if "error" in ln.lower()]
    return (errors or lines or ["the sync Job ended without a result"])[-1][:500]
