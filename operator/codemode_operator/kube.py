"""Kubernetes calls outside kopf's own, through the official client.

Every call is blocking; the handlers that use it are sync and run in kopf's
thread pool, never on its event loop. Creating is idempotent: a name that
already exists is read back, so a restarted operator adopts what it made.
Objects come back as the API's JSON (camelCase dicts), the same shape a watch
event carries, so one function reads a pod whichever way it arrived.

`KubeAPI` is what the reconcile modules need; `Kube` implements it on the
official client, tests/unit/fake_kube.py in memory.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterator
from typing import Any, Protocol

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from codemode_operator import GROUP, VERSION
from codemode_operator.builders.session import ENDPOINTS_MANAGER

LIST_PAGE = 200
# A JSON merge patch (RFC 7386): a list in it replaces the list, as the owner references of
# a claimed pool pod must be replaced (the client's default, a strategic merge patch, would
# add the new controller to the old one, which the API server refuses).
MERGE_PATCH = "application/merge-patch+json"
Obj = dict[str, Any]


class KubeAPI(Protocol):
    """The calls the reconcile modules make (all blocking)."""

    def ensure(self, manifest: Obj) -> bool: ...
    def create_pod(self, manifest: Obj) -> tuple[Obj | None, bool]: ...
    def replace_secret(self, manifest: Obj) -> None: ...
    def replace_network_policy(self, manifest: Obj) -> None: ...
    def read_pod(self, namespace: str, name: str) -> Obj | None: ...
    def list_pods(self, namespace: str, selector: str) -> list[Obj]: ...
    def patch_pod(self, namespace: str, name: str, body: Obj) -> Obj | None: ...
    def patch_secret(self, namespace: str, name: str, body: Obj) -> None: ...
    def delete_pod(
        self, namespace: str, name: str, resource_version: str | None = None
    ) -> None: ...
    def delete_service(self, namespace: str, name: str) -> None: ...
    def apply_endpoints(self, manifest: Obj) -> None: ...
    def secret_data(self, namespace: str, name: str) -> dict[str, str] | None: ...
    def read_job(self, namespace: str, name: str) -> Obj | None: ...
    def delete_job(self, namespace: str, name: str) -> None: ...
    def job_pods(self, namespace: str, job: str) -> list[Obj]: ...
    def get_custom(self, plural: str, namespace: str, name: str) -> Obj | None: ...
    def list_custom(self, plural: str, namespace: str, page: int = LIST_PAGE) -> Iterator[Obj]: ...
    def delete_custom(self, plural: str, namespace: str, name: str) -> None: ...
    def patch_custom(self, plural: str, namespace: str, name: str, body: Obj) -> None: ...
    def patch_status(
        self,
        plural: str,
        namespace: str,
        name: str,
        status: Obj,
        resource_version: str | None = None,
    ) -> Obj | None: ...


def _json(call: Callable[..., Any], *args: Any, **kwargs: Any) -> Obj:
    """Call a client method for its raw JSON: no model objects to build and convert."""
    response = call(*args, _preload_content=False, **kwargs)
    data: Obj = json.loads(response.data)
    return data


def load_config() -> None:
    try:
        config.load_incluster_config()  # type: ignore[no-untyped-call]
    except config.ConfigException:
        config.load_kube_config()  # type: ignore[no-untyped-call]


class Kube:
    def __init__(self, api: client.ApiClient | None = None) -> None:
        if api is None:
            # kopf runs up to 32+ handlers at once: a pool of urllib3's default 4 connections
            # would discard and re-handshake TLS connections under load.
            conf = client.Configuration.get_default_copy()
            conf.connection_pool_maxsize = 64
            api = client.ApiClient(conf)
        self.api = api
        self.core = client.CoreV1Api(self.api)
        self.batch = client.BatchV1Api(self.api)
        self.net = client.NetworkingV1Api(self.api)
        self.discovery = client.DiscoveryV1Api(self.api)
        self.custom = client.CustomObjectsApi(self.api)

    # ---- generic children ------------------------------------------------------------

    def _create(self, manifest: Any) -> None:
        # The client accepts plain dicts; its stubs only know its model classes.
        ns = manifest["metadata"]["namespace"]
        kind = manifest["kind"]
        if kind == "Pod":
            self.core.create_namespaced_pod(ns, manifest)
        elif kind == "Service":
            self.core.create_namespaced_service(ns, manifest)
        elif kind == "Secret":
            self.core.create_namespaced_secret(ns, manifest)
        elif kind == "Job":
            self.batch.create_namespaced_job(ns, manifest)
        elif kind == "NetworkPolicy":
            self.net.create_namespaced_network_policy(ns, manifest)
        else:
            raise ValueError(f"cannot create {kind}")

    def ensure(self, manifest: dict[str, Any]) -> bool:
        """Create the object unless it exists; True when this call created it."""
        try:
            self._create(manifest)
        except ApiException as exc:
            if exc.status == 409:
                return False
            raise
        return True

    def create_pod(self, manifest: Obj) -> tuple[Obj | None, bool]:
        """(the pod, True) when this call created it, else (the existing pod, False)."""
        meta = manifest["metadata"]
        try:
            return _json(self.core.create_namespaced_pod, meta["namespace"], manifest), True
        except ApiException as exc:
            if exc.status != 409:
                raise
        # None when it was deleted between the two calls: the pod's DELETED event follows
        return self.read_pod(meta["namespace"], meta["name"]), False

    def replace_secret(self, manifest: Any) -> None:
        meta = manifest["metadata"]
        try:
            self.core.replace_namespaced_secret(meta["name"], meta["namespace"], manifest)
        except ApiException as exc:
            if exc.status != 404:
                raise
            self.core.create_namespaced_secret(meta["namespace"], manifest)

    def replace_network_policy(self, manifest: Any) -> None:
        meta = manifest["metadata"]
        try:
            self.net.replace_namespaced_network_policy(meta["name"], meta["namespace"], manifest)
        except ApiException as exc:
            if exc.status != 404:
                raise
            self.net.create_namespaced_network_policy(meta["namespace"], manifest)

    def read_pod(self, namespace: str, name: str) -> Obj | None:
        found: Obj | None = _or_none(lambda: _json(self.core.read_namespaced_pod, name, namespace))
        return found

    def list_pods(self, namespace: str, selector: str) -> list[Obj]:
        items: list[Obj] = _json(
            self.core.list_namespaced_pod, namespace, label_selector=selector
        ).get("items", [])
        return items

    def patch_pod(self, namespace: str, name: str, body: Obj) -> Obj | None:
        """Merge-patch a pod; None when it is gone. A `metadata.resourceVersion` in `body`
        makes the patch land only on that version (409 Conflict otherwise)."""
        found: Obj | None = _or_none(
            lambda: _json(
                self.core.patch_namespaced_pod, name, namespace, body, _content_type=MERGE_PATCH
            )
        )
        return found

    def patch_secret(self, namespace: str, name: str, body: Obj) -> None:
        _or_none(
            lambda: self.core.patch_namespaced_secret(
                name, namespace, body, _content_type=MERGE_PATCH
            )
        )

    def delete_pod(self, namespace: str, name: str, resource_version: str | None = None) -> None:
        """Delete a pod; with `resource_version`, only as it was then: a pod changed since
        (a pool pod a session claimed meanwhile) is left alone."""
        if resource_version is None:
            _ignore_404(
                lambda: self.core.delete_namespaced_pod(name, namespace, grace_period_seconds=5)
            )
            return
        options = client.V1DeleteOptions(
            grace_period_seconds=5,
            preconditions=client.V1Preconditions(resource_version=resource_version),
        )
        try:
            self.core.delete_namespaced_pod(name, namespace, body=options)
        except ApiException as exc:
            if exc.status not in (404, 409):
                raise

    def delete_service(self, namespace: str, name: str) -> None:
        """The Service and the EndpointSlice the operator writes for it."""
        _ignore_404(lambda: self.core.delete_namespaced_service(name, namespace))
        _ignore_404(lambda: self.discovery.delete_namespaced_endpoint_slice(name, namespace))

    def apply_endpoints(self, manifest: Obj) -> None:
        """Create or replace an EndpointSlice in one request (server-side apply)."""
        meta = manifest["metadata"]
        self.discovery.patch_namespaced_endpoint_slice(
            meta["name"],
            meta["namespace"],
            manifest,
            field_manager=ENDPOINTS_MANAGER,
            force=True,
            _content_type="application/apply-patch+yaml",
        )

    def secret_data(self, namespace: str, name: str) -> dict[str, str] | None:
        secret = _or_none(lambda: self.core.read_namespaced_secret(name, namespace))
        if secret is None:
            return None
        return {k: base64.b64decode(v).decode() for k, v in (secret.data or {}).items()}

    def read_job(self, namespace: str, name: str) -> Obj | None:
        found: Obj | None = _or_none(lambda: _json(self.batch.read_namespaced_job, name, namespace))
        return found

    def delete_job(self, namespace: str, name: str) -> None:
        _ignore_404(
            lambda: self.batch.delete_namespaced_job(
                name, namespace, propagation_policy="Background"
            )
        )

    def job_pods(self, namespace: str, job: str) -> list[Obj]:
        pods = _json(self.core.list_namespaced_pod, namespace, label_selector=f"job-name={job}")
        return list(pods.get("items") or [])

    # ---- our kinds ---------------------------------------------------------------------

    def get_custom(self, plural: str, namespace: str, name: str) -> dict[str, Any] | None:
        found: dict[str, Any] | None = _or_none(
            lambda: self.custom.get_namespaced_custom_object(
                GROUP, VERSION, namespace, plural, name
            )
        )
        return found

    def list_custom(
        self, plural: str, namespace: str, page: int = LIST_PAGE
    ) -> Iterator[dict[str, Any]]:
        """Every object of a kind in a namespace, fetched `page` at a time.

        A thousand CodeSessions are megabytes of JSON; paging keeps a count over them
        from holding them all (and their decoded copies) in memory at once.
        """
        token: str | None = None
        while True:
            kwargs: dict[str, Any] = {"limit": page}
            if token:
                kwargs["_continue"] = token
            listing: Any = self.custom.list_namespaced_custom_object(
                GROUP, VERSION, namespace, plural, **kwargs
            )
            yield from listing.get("items", [])
            token = (listing.get("metadata") or {}).get("continue")
            if not token:
                return

    def delete_custom(self, plural: str, namespace: str, name: str) -> None:
        _ignore_404(
            lambda: self.custom.delete_namespaced_custom_object(
                GROUP, VERSION, namespace, plural, name
            )
        )

    def patch_custom(self, plural: str, namespace: str, name: str, body: Obj) -> None:
        """Merge-patch metadata or spec (a label, spec.suspend); a vanished object is fine."""
        _or_none(
            lambda: self.custom.patch_namespaced_custom_object(
                GROUP, VERSION, namespace, plural, name, body
            )
        )

    def patch_status(
        self,
        plural: str,
        namespace: str,
        name: str,
        status: dict[str, Any],
        resource_version: str | None = None,
    ) -> Obj | None:
        """Merge `status` into the object's status; the object as written, or None when
        it has vanished (not an error).

        With `resource_version` the write only lands on that version of the object: a
        concurrent writer makes it fail with 409 Conflict instead of being overwritten.
        """
        body: dict[str, Any] = {"status": status}
        if resource_version is not None:
            body["metadata"] = {"resourceVersion": resource_version}
        written: Obj | None = _or_none(
            lambda: self.custom.patch_namespaced_custom_object_status(
                GROUP, VERSION, namespace, plural, name, body
            )
        )
        return written


def _or_none(call: Any) -> Any:
    try:
        return call()
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise


def _ignore_404(call: Any) -> None:
    try:
        call()
    except ApiException as exc:
        if exc.status != 404:
            raise
