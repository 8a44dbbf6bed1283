"""An in-memory `KubeAPI` (codemode_operator.kube) for the fast tier.

It keeps objects as the API server's JSON, gives every write a new resourceVersion,
answers a status write on an old resourceVersion with 409 Conflict and a create of an
existing name with 409 AlreadyExists, and logs every call, so tests can assert what
the reconcile functions did and in which order. `before_status_write` lets a test act
as a concurrent writer between a reconcile's read and its write.
"""

from __future__ import annotations

import base64
import copy
import itertools
from collections.abc import Callable, Iterator
from typing import Any

from codemode_operator.kube import LIST_PAGE, Obj
from kubernetes.client.exceptions import ApiException

Events = list[tuple[str, str, str, str]]  # (name, type, reason, message) posted

PLURALS = {
    "Pod": "pods",
    "Service": "services",
    "Secret": "secrets",
    "Job": "jobs",
    "NetworkPolicy": "networkpolicies",
}
KINDS = {
    "workspaces": "Workspace",
    "codesessions": "CodeSession",
    "workflowlibraries": "WorkflowLibrary",
}
Key = tuple[str, str, str]  # (plural, namespace, name)


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch, as the API server applies a merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out


def selects(selector: str, labels: dict[str, str] | None) -> bool:
    """Whether a label selector (`k=v`, `!k`, `k in (a,b)`, comma-joined) picks `labels`."""
    labels = labels or {}
    terms, depth, start = [], 0, 0
    for i, ch in enumerate(selector + ","):
        depth += ch == "("
        depth -= ch == ")"
        if ch == "," and depth == 0:
            terms.append(selector[start:i].strip())
            start = i + 1
    for term in filter(None, terms):
        if term.startswith("!"):
            if term[1:] in labels:
                return False
        elif " in " in term:
            key, values = term.split(" in ", 1)
            if labels.get(key.strip()) not in values.strip("() ").split(","):
                return False
        elif "=" in term:
            key, value = term.split("=", 1)
            if labels.get(key) != value:
                return False
        elif term not in labels:
            return False
    return True


class FakeKube:
    def __init__(self) -> None:
        self.objects: dict[Key, Obj] = {}
        self.calls: list[tuple[str, ...]] = []
        self._rv = itertools.count(100)
        self._uid = itertools.count(1)
        # called with (plural, namespace, name) before a status write is checked
        self.before_status_write: Callable[[str, str, str], None] | None = None
        # method name -> exception raised by the next call of it
        self.fail: dict[str, Exception] = {}

    # ---- test helpers --------------------------------------------------------------

    def _next_rv(self) -> str:
        return str(next(self._rv))

    def _log(self, *call: str) -> None:
        self.calls.append(call)
        failure = self.fail.pop(call[0], None)
        if failure is not None:
            raise failure

    def put(self, plural: str, obj: Obj) -> Obj:
        """Store `obj` as if created: uid, resourceVersion, generation, timestamps."""
        obj = copy.deepcopy(obj)
        meta = obj.setdefault("metadata", {})
        meta.setdefault("namespace", "team")
        meta.setdefault("uid", f"uid-{next(self._uid)}")
        meta.setdefault("creationTimestamp", "2026-01-01T00:00:00Z")
        meta["resourceVersion"] = self._next_rv()
        if plural in KINDS:
            meta.setdefault("generation", 1)
            obj.setdefault("apiVersion", "codemode.dev/v1alpha1")
            obj.setdefault("kind", KINDS[plural])
        self.objects[(plural, meta["namespace"], meta["name"])] = obj
        return copy.deepcopy(obj)

    def get(self, plural: str, namespace: str, name: str) -> Obj | None:
        found = self.objects.get((plural, namespace, name))
        return copy.deepcopy(found) if found is not None else None

    def edit(
        self,
        plural: str,
        namespace: str,
        name: str,
        change: Callable[[Obj], None],
        spec: bool = False,
    ) -> Obj:
        """Another writer changes an object: a new resourceVersion (and generation for
        a spec change)."""
        obj = self.objects[(plural, namespace, name)]
        change(obj)
        obj["metadata"]["resourceVersion"] = self._next_rv()
        if spec:
            obj["metadata"]["generation"] = obj["metadata"].get("generation", 1) + 1
        return copy.deepcopy(obj)

    def remove(self, plural: str, namespace: str, name: str) -> None:
        self.objects.pop((plural, namespace, name), None)

    def names(self, plural: str) -> list[str]:
        return sorted(name for (p, _, name) in self.objects if p == plural)

    def called(self, method: str) -> list[tuple[str, ...]]:
        return [c for c in self.calls if c[0] == method]

    # ---- KubeAPI -------------------------------------------------------------------

    def _create(self, manifest: Obj) -> bool:
        meta = manifest["metadata"]
        key = (PLURALS[manifest["kind"]], meta["namespace"], meta["name"])
        if key in self.objects:
            return False
        self.put(key[0], manifest)
        return True

    def ensure(self, manifest: Obj) -> bool:
        self._log("ensure", manifest["kind"], manifest["metadata"]["name"])
        if manifest["kind"] not in PLURALS:
            raise ValueError(f"cannot create {manifest['kind']}")
        return self._create(manifest)

    def create_pod(self, manifest: Obj) -> tuple[Obj | None, bool]:
        meta = manifest["metadata"]
        self._log("create_pod", meta["name"])
        pod = {**manifest, "status": {"phase": "Pending"}}
        created = self._create(pod)
        return self.get("pods", meta["namespace"], meta["name"]), created

    def _replace(self, manifest: Obj) -> None:
        self.put(PLURALS[manifest["kind"]], manifest)

    def replace_secret(self, manifest: Obj) -> None:
        self._log("replace_secret", manifest["metadata"]["name"])
        self._replace(manifest)

    def replace_network_policy(self, manifest: Obj) -> None:
        self._log("replace_network_policy", manifest["metadata"]["name"])
        self._replace(manifest)

    def read_pod(self, namespace: str, name: str) -> Obj | None:
        self._log("read_pod", name)
        return self.get("pods", namespace, name)

    def list_pods(self, namespace: str, selector: str) -> list[Obj]:
        self._log("list_pods", selector)
        return [
            copy.deepcopy(o)
            for (p, ns, _), o in sorted(self.objects.items())
            if p == "pods" and ns == namespace and selects(selector, o["metadata"].get("labels"))
        ]

    def patch_pod(self, namespace: str, name: str, body: Obj) -> Obj | None:
        self._log("patch_pod", name)
        obj = self.objects.get(("pods", namespace, name))
        if obj is None:
            return None
        wanted = (body.get("metadata") or {}).get("resourceVersion")
        if wanted is not None and wanted != obj["metadata"]["resourceVersion"]:
            raise ApiException(status=409, reason="Conflict")
        merged = merge_patch(obj, body)
        merged["metadata"]["resourceVersion"] = self._next_rv()
        self.objects[("pods", namespace, name)] = merged
        return copy.deepcopy(merged)

    def patch_secret(self, namespace: str, name: str, body: Obj) -> None:
        self._log("patch_secret", name)
        obj = self.objects.get(("secrets", namespace, name))
        if obj is not None:
            self.objects[("secrets", namespace, name)] = merge_patch(obj, body)

    def delete_pod(self, namespace: str, name: str, resource_version: str | None = None) -> None:
        self._log("delete_pod", name)
        current = self.objects.get(("pods", namespace, name))
        changed = current is not None and current["metadata"]["resourceVersion"] != resource_version
        if resource_version is not None and changed:
            return  # changed since it was listed: the API server answers 409
        self.remove("pods", namespace, name)

    def delete_service(self, namespace: str, name: str) -> None:
        self._log("delete_service", name)
        self.remove("services", namespace, name)
        self.remove("endpointslices", namespace, name)

    def apply_endpoints(self, manifest: Obj) -> None:
        self._log("apply_endpoints", manifest["metadata"]["name"])
        self.put("endpointslices", manifest)

    def secret_data(self, namespace: str, name: str) -> dict[str, str] | None:
        self._log("secret_data", name)
        secret = self.get("secrets", namespace, name)
        if secret is None:
            return None
        data = {k: base64.b64decode(v).decode() for k, v in (secret.get("data") or {}).items()}
        data.update(secret.get("stringData") or {})
        return data

    def read_job(self, namespace: str, name: str) -> Obj | None:
        self._log("read_job", name)
        return self.get("jobs", namespace, name)

    def delete_job(self, namespace: str, name: str) -> None:
        self._log("delete_job", name)
        self.remove("jobs", namespace, name)

    def job_pods(self, namespace: str, job: str) -> list[Obj]:
        self._log("job_pods", job)
        return [
            copy.deepcopy(o)
            for (p, ns, _), o in sorted(self.objects.items())
            if p == "pods"
            and ns == namespace
            and (o["metadata"].get("labels") or {}).get("job-name") == job
        ]

    def get_custom(self, plural: str, namespace: str, name: str) -> Obj | None:
        self._log("get_custom", plural, name)
        return self.get(plural, namespace, name)

    def list_custom(self, plural: str, namespace: str, page: int = LIST_PAGE) -> Iterator[Obj]:
        self._log("list_custom", plural)
        items = [
            copy.deepcopy(o)
            for (p, ns, _), o in sorted(self.objects.items())
            if p == plural and ns == namespace
        ]
        yield from items

    def delete_custom(self, plural: str, namespace: str, name: str) -> None:
        self._log("delete_custom", plural, name)
        self.remove(plural, namespace, name)

    def patch_custom(self, plural: str, namespace: str, name: str, body: Obj) -> None:
        self._log("patch_custom", plural, name)
        obj = self.objects.get((plural, namespace, name))
        if obj is None:
            return
        status = obj.get("status")
        merged = merge_patch(obj, body)
        merged["status"] = status
        merged["metadata"]["resourceVersion"] = self._next_rv()
        if "spec" in body:
            merged["metadata"]["generation"] = int(obj["metadata"].get("generation") or 1) + 1
        self.objects[(plural, namespace, name)] = merged

    def patch_status(
        self,
        plural: str,
        namespace: str,
        name: str,
        status: Obj,
        resource_version: str | None = None,
    ) -> Obj | None:
        self._log("patch_status", plural, name)
        if self.before_status_write is not None:
            hook, self.before_status_write = self.before_status_write, None
            hook(plural, namespace, name)
        obj = self.objects.get((plural, namespace, name))
        if obj is None:
            return None
        if resource_version is not None and resource_version != obj["metadata"]["resourceVersion"]:
            raise ApiException(status=409, reason="Conflict")
        obj["status"] = merge_patch(obj.get("status") or {}, status)
        obj["metadata"]["resourceVersion"] = self._next_rv()
        return copy.deepcopy(obj)


# ---- objects -------------------------------------------------------------------------

NS = "team"
REDIS = "redis://admin:pw@redis.example:6379/0"


def workspace(name: str = "ws", ready: bool = True, **spec: Any) -> Obj:
    body: Obj = {
        "metadata": {"name": name, "namespace": NS},
        "spec": {"redis": {"url": REDIS}, **spec},
    }
    if ready:
        body["status"] = {"credentialsSecret": f"{name}-redis"}
    return body


def session(name: str = "s1", workspace_ref: str = "ws", **spec: Any) -> Obj:
    return {
        "metadata": {"name": name, "namespace": NS},
        "spec": {"workspaceRef": workspace_ref, **spec},
    }


def library(name: str = "lib", workspace_ref: str = "ws", **spec: Any) -> Obj:
    return {
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "workspaceRef": workspace_ref,
            "source": {"url": "https://git.example/flows.git"},
            **spec,
        },
    }


def pod_status(
    phase: str = "Running",
    ready: bool = False,
    waiting: str | None = None,
    unschedulable: str | None = None,
    ip: str | None = None,
) -> Obj:
    """A pod's status as the kubelet (or kwok) reports it."""
    conditions: list[Obj] = []
    if unschedulable:
        conditions.append({"type": "PodScheduled", "status": "False", "reason": unschedulable})
    else:
        conditions.append({"type": "PodScheduled", "status": "True"})
        conditions.append({"type": "Ready", "status": "True" if ready else "False"})
    status: Obj = {"phase": phase, "conditions": conditions}
    if waiting:
        status["containerStatuses"] = [
            {"name": "session", "state": {"waiting": {"reason": waiting}}}
        ]
    if ip:
        status["podIP"] = ip
    return status
