"""Python API for agents and tools: find or create a CodeSession, wait, run code.

    from codemode_operator.sessions import Sessions
    with Sessions(namespace="agents").connect("agent-1", workspace="client-a") as client:
        print(client.execute("1 + 1").value)

Readiness is awaited with a watch, not by polling. The session server is
reached through its Service name when this runs in the cluster, its pod IP when
that is routable (a node), or a port-forward through the API server otherwise;
with a gateway (`gateway=` or CODEMODE_GATEWAY), through the gateway with the
caller's Kubernetes token (codemode_operator.gateway_client).
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

from codemode_session.client import SessionClient
from codemode_session.errors import CodemodeError, NotFoundError
from kubernetes import client, watch
from kubernetes.client.exceptions import ApiException
from kubernetes.stream import portforward

from codemode_operator import API_VERSION, GROUP, VERSION, gateway_client
from codemode_operator.kube import Kube, load_config
from codemode_operator.vocabulary import Phase, is_final

PLURAL = "codesessions"
AGENT_LABEL = "codemode.dev/agent"
PORT = 8080


class SessionUnavailable(CodemodeError):
    """The CodeSession cannot become Ready in time, or ever (its phase is final)."""


def usable(session: dict[str, Any] | None) -> bool:
    status = (session or {}).get("status") or {}
    return status.get("phase") == Phase.READY and bool(status.get("endpoint"))


def settled(session: dict[str, Any] | None) -> bool:
    """Whether waiting on this session can stop: Ready, or in a final phase. A Pending
    (limit reached, workspace missing) or Failed session (the operator replaces its pod)
    may still become Ready."""
    phase = ((session or {}).get("status") or {}).get("phase")
    return usable(session) or is_final(phase)


def _pod_ready(pod: dict[str, Any]) -> bool:
    conditions = (pod.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def _reachable(host: str, port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


class _PortForward:
    """A local TCP listener whose connections are tunnelled to a pod port via the API."""

    def __init__(self, core: Any, namespace: str, pod: str, port: int) -> None:
        self.core, self.namespace, self.pod, self.port = core, namespace, pod, port
        self.server = socket.socket()
        self.server.bind(("127.0.0.1", 0))
        self.server.listen(16)
        self.local_port = int(self.server.getsockname()[1])
        self._stop = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            threading.Thread(target=self._pipe, args=(conn,), daemon=True).start()

    def _pipe(self, conn: socket.socket) -> None:
        pf = portforward(
            self.core.connect_get_namespaced_pod_portforward,
            self.pod,
            self.namespace,
            ports=str(self.port),
        )
        remote = pf.socket(self.port)
        remote.setblocking(True)
        try:
            while not self._stop.is_set():
                ready, _, _ = select.select([conn, remote], [], [], 0.5)
                for src in ready:
                    data = src.recv(65536)
                    if not data:
                        return
                    (remote if src is conn else conn).sendall(data)
        finally:
            conn.close()
            remote.close()
            pf.close()

    def close(self) -> None:
        self._stop.set()
        self.server.close()


class _PodGone(SessionUnavailable):
    """The session's status says Ready, but its pod is gone, going or not ready yet."""


class Sessions:
    def __init__(
        self,
        namespace: str = "default",
        api: client.ApiClient | None = None,
        gateway: str | None = None,
        token: str | None = None,
    ) -> None:
        self.gateway = gateway or gateway_client.configured()
        self._gateway_token = token or os.environ.get(gateway_client.TOKEN_ENV)
        if api is None and not (self.gateway and self._gateway_token):
            load_config()
        self.namespace = namespace
        self.kube = Kube(api)
        self._forwards: list[_PortForward] = []

    def get(self, name: str) -> dict[str, Any] | None:
        return self.kube.get_custom(PLURAL, self.namespace, name)

    def ensure(
        self, name: str, workspace: str | None = None, spec: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """The CodeSession `name`, created for `workspace` if it does not exist."""
        found = self.get(name)
        if found is not None:
            return found
        if workspace is None:
            raise NotFoundError(
                f"CodeSession {name!r} does not exist in namespace {self.namespace!r}; "
                "pass a workspace to create it"
            )
        body = {
            "apiVersion": API_VERSION,
            "kind": "CodeSession",
            "metadata": {"name": name, "namespace": self.namespace},
            "spec": {"workspaceRef": workspace, **(spec or {})},
        }
        try:
            created: Any = self.kube.custom.create_namespaced_custom_object(
                GROUP, VERSION, self.namespace, PLURAL, body
            )
        except ApiException as exc:
            if exc.status != 409:
                raise CodemodeError(
                    f"cannot create CodeSession {name!r}: {exc.reason}: {_api_message(exc)}"
                ) from None
            created = self.get(name) or body
        return dict(created)

    def wait_ready(
        self, name: str, timeout: float = 120.0, seen: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """Block on a watch until the session is Ready; raise with its reason when its
        phase is final (it never will be) or when `timeout` passes. `seen`, a copy just
        read (by `ensure`), saves reading it again."""
        deadline = time.monotonic() + timeout
        last: dict[str, Any] | None = seen if seen is not None else self.get(name)
        while True:
            if last is not None:
                status = last.get("status") or {}
                if usable(last):
                    return last
                if is_final(status.get("phase")):
                    raise SessionUnavailable(
                        f"CodeSession {name!r} is {status['phase']}: {status.get('reason')}"
                    )
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                reason = ((last or {}).get("status") or {}).get("reason", "no status yet")
                raise SessionUnavailable(
                    f"CodeSession {name!r} not Ready after {timeout:g}s ({reason})"
                )
            stream = watch.Watch().stream(  # type: ignore[no-untyped-call]
                self.kube.custom.list_namespaced_custom_object,
                GROUP,
                VERSION,
                self.namespace,
                PLURAL,
                field_selector=f"metadata.name={name}",
                timeout_seconds=max(1, int(remaining)),
            )
            for event in stream:
                last = event["object"]
                if settled(last):
                    break
            else:
                last = self.get(name)

    def _base_url(self, session: dict[str, Any]) -> str:
        status = session.get("status") or {}
        endpoint = str(status.get("endpoint", ""))
        host = endpoint.split("//", 1)[-1].split(":", 1)[0]
        with contextlib.suppress(OSError):
            socket.getaddrinfo(host, PORT)
            if _reachable(host, PORT):
                return endpoint
        pod = self.kube.read_pod(self.namespace, str(status.get("podName", "")))
        if pod is not None and (pod.get("metadata") or {}).get("deletionTimestamp"):
            pod = None  # going: the session's Ready is about to be withdrawn
        if pod is None:
            raise _PodGone(f"session pod {status.get('podName')!r} not found")
        if not _pod_ready(pod):  # a replacement of the same name, still starting
            raise _PodGone(f"session pod {status.get('podName')!r} is not ready yet")
        ip = (pod.get("status") or {}).get("podIP")
        if ip and _reachable(ip, PORT):
            return f"http://{ip}:{PORT}"
        forward = _PortForward(self.kube.core, self.namespace, pod["metadata"]["name"], PORT)
        self._forwards.append(forward)
        return f"http://127.0.0.1:{forward.local_port}"

    def token(self, session: dict[str, Any]) -> str:
        secret = str((session.get("status") or {}).get("tokenSecret", ""))
        data = self.kube.secret_data(self.namespace, secret)
        if not data or "token" not in data:
            raise SessionUnavailable(f"token Secret {secret!r} not found")
        return data["token"]

    def address(
        self, name: str, workspace: str | None = None, timeout: float = 120.0
    ) -> tuple[str, str]:
        """(base URL, token) of the Ready session `name` (created if needed), reachable
        from here: its Service, its pod IP, or a port-forward this object keeps open; with
        a gateway, the gateway's URL for it and the caller's token."""
        if self.gateway:
            url = gateway_client.session_url(self.gateway, self.namespace, name)
            token = gateway_client.caller_token(self._gateway_token)
            gateway_client.wait_ready(url, token, workspace, timeout)
            return url, token
        seen: dict[str, Any] | None = self.ensure(name, workspace)
        deadline = time.monotonic() + timeout
        while True:
            session = self.wait_ready(name, max(1.0, deadline - time.monotonic()), seen)
            try:
                return self._base_url(session), self.token(session)
            except _PodGone:
                # Ready was read just before its pod went (deleted, evicted): the operator
                # is making a new one; wait for it rather than fail.
                if time.monotonic() > deadline:
                    raise
                seen = None
                time.sleep(0.25)

    @contextlib.contextmanager
    def connect(
        self, name: str, workspace: str | None = None, timeout: float = 120.0
    ) -> Iterator[SessionClient]:
        """A SessionClient for the Ready session `name` (created if needed).

        The server session the client opens is ended on the way out: a session pod has
        one worker (MAX_SESSIONS=1), and a session left open would hold it until the next
        client takes it over (that one then starts on a fresh interpreter anyway)."""
        url, token = self.address(name, workspace, timeout)
        with SessionClient(url, token=token) as session_client:
            try:
                yield session_client
            finally:
                with contextlib.suppress(Exception):  # the pod may be gone; nothing to end
                    session_client.end_session()

    # ---- durable sessions: list, history, fork, suspend, resume ------------------------

    def list(self, agent_id: str | None = None, workspace: str | None = None) -> list[Any]:
        """CodeSessions of the namespace, newest first: an agent's (its label) or all."""
        selector = f"{AGENT_LABEL}={agent_id}" if agent_id else None
        found: Any = self.kube.custom.list_namespaced_custom_object(
            GROUP, VERSION, self.namespace, PLURAL, label_selector=selector
        )
        items = [
            o
            for o in found.get("items", [])
            if workspace is None or (o.get("spec") or {}).get("workspaceRef") == workspace
        ]
        items.sort(key=lambda o: o["metadata"].get("creationTimestamp") or "", reverse=True)
        return items

    def history(self, name: str, offset: int = 0, limit: int = 100) -> dict[str, Any]:
        """The session's history (every run, through all its pods). History is read by a
        session server of its workspace: its own if it runs, else another running one."""
        session = self.get(name)
        if session is None:
            raise NotFoundError(f"CodeSession {name!r} does not exist in {self.namespace!r}")
        state_id = (session.get("status") or {}).get("stateId")
        if not state_id:
            raise SessionUnavailable(f"CodeSession {name!r} has not started yet: no history")
        workspace = (session.get("spec") or {}).get("workspaceRef")
        reader = session if usable(session) else None
        if reader is None:
            reader = next(
                (o for o in self.list(workspace=workspace) if usable(o)),
                None,
            )
        if reader is None:
            raise SessionUnavailable(
                f"CodeSession {name!r} is {(session.get('status') or {}).get('phase')} and no "
                f"session of workspace {workspace!r} runs to read its history: resume it"
            )
        url = self._base_url(reader)
        with SessionClient(url, token=self.token(reader)) as client:
            return client.history(state_id, offset=offset, limit=limit)

    def fork(self, name: str, new_name: str, spec: dict[str, Any] | None = None) -> Any:
        """A new CodeSession that starts from `name`'s latest state and history."""
        source = self.get(name)
        if source is None:
            raise NotFoundError(f"CodeSession {name!r} does not exist in {self.namespace!r}")
        workspace = (source.get("spec") or {}).get("workspaceRef")
        return self.ensure(new_name, workspace, {"forkFrom": {"session": name}, **(spec or {})})

    def _set_suspend(self, name: str, suspend: bool, wait: float | None) -> Any:
        try:
            self.kube.custom.patch_namespaced_custom_object(
                GROUP, VERSION, self.namespace, PLURAL, name, {"spec": {"suspend": suspend}}
            )
        except ApiException as exc:
            if exc.status == 404:
                raise NotFoundError(
                    f"CodeSession {name!r} does not exist in {self.namespace!r}"
                ) from None
            raise
        if wait is None:
            return self.get(name)
        if not suspend:
            return self.wait_ready(name, wait)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            found = self.get(name)
            if ((found or {}).get("status") or {}).get("phase") == Phase.SUSPENDED:
                return found
            time.sleep(0.25)
        raise SessionUnavailable(f"CodeSession {name!r} not Suspended after {wait:g}s")

    def suspend(self, name: str, wait: float | None = None) -> Any:
        """Save the session's state and delete its pod (spec.suspend: true)."""
        return self._set_suspend(name, True, wait)

    def resume(self, name: str, wait: float | None = None) -> Any:
        """Bring the session's pod back with its state (spec.suspend: false)."""
        return self._set_suspend(name, False, wait)

    def close(self) -> None:
        for forward in self._forwards:
            forward.close()
        self._forwards.clear()


def _api_message(exc: ApiException) -> str:
    import json

    try:
        return str(json.loads(exc.body or "{}").get("message", ""))
    except ValueError:
        return str(exc.body)
