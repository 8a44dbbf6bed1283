"""The real operator (`python -m codemode_operator`) as a subprocess, for tests and benches.

`OperatorProcess(kubeconfig, namespaces, env)` runs it watching only the given
namespaces with metrics off and logs to a file; `log_tail()` shows what it said,
`kill()` ends it with SIGKILL (to test restarts) and `stop()` with SIGTERM.
`install_crds()` applies the checked-in CRDs (idempotent) and waits until served.
`wait_for()` polls until a condition holds; `stays_true_for()` watches one that must keep
holding for a bounded window.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from kubernetes import client

from tests.cluster import kind
from tests.cluster.kubectl import forget_discovery
from tests.cluster.layout import NODE_HOST_IP

ROOT = Path(__file__).resolve().parents[2]
CRD_DIR = ROOT / "crds"
GROUP = "codemode.dev"
VERSION = "v1alpha1"
PLURALS = ("workspaces", "codesessions", "workflowlibraries")
PROXY_VARS = ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY")

T = TypeVar("T")


def kubectl_binary() -> str:
    from tests.cluster import paths

    built = paths.binary("kubectl")
    return str(built) if built.exists() else "kubectl"


def install_crds(kubeconfig: Path, api_client: Any, timeout: float = 60) -> None:
    """Apply crds/*.yaml (idempotent) and wait until each kind is Established and served."""
    proc = subprocess.run(
        [
            kubectl_binary(),
            f"--kubeconfig={kubeconfig}",
            "apply",
            "--server-side",
            "--force-conflicts",
            "--field-manager=codemode-tests",
            "-f",
            str(CRD_DIR),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    if proc.returncode != 0:
        raise AssertionError(f"kubectl apply -f crds/: {proc.stderr.strip()}")
    ext = client.ApiextensionsV1Api(api_client)
    custom = client.CustomObjectsApi(api_client)

    def ready() -> bool:
        for plural in PLURALS:
            crd = ext.read_custom_resource_definition(f"{plural}.{GROUP}")
            conds = (crd.status.conditions if crd.status else None) or []
            if not any(c.type == "Established" and c.status == "True" for c in conds):
                return False
            try:
                custom.list_cluster_custom_object(GROUP, VERSION, plural, limit=1)
            except client.ApiException as exc:
                if exc.status == 404:
                    return False
                raise
        return True

    wait_for(ready, timeout, "codemode CRDs established")
    forget_discovery()


def cluster_env() -> dict[str, str]:
    """The operator settings the tests' cluster needs. The local node cluster: its CoreDNS
    runs on the host (NODE_HOST_IP:53), not in kube-dns pods, so the sessions'
    NetworkPolicy must allow it by address. tests.cluster's kind cluster: the host (the
    tests' client and an operator run on the host) is not the node, so session pods admit
    its bridge address by CIDR. Any other cluster (CODEMODE_KUBECONFIG): the defaults."""
    if kind.targets_kind():
        return {"SESSION_INGRESS_CIDRS": f"{kind.host_address()}/32"}
    if os.environ.get("CODEMODE_KUBECONFIG"):
        return {}
    return {"SESSION_DNS_CIDRS": f"{NODE_HOST_IP}/32"}


def cluster_values() -> list[str]:
    """`cluster_env()` as the chart's values (`helm install` arguments)."""
    names = {
        "SESSION_DNS_CIDRS": "session.dns.cidrs",
        "SESSION_INGRESS_CIDRS": "session.ingressCIDRs",
    }
    values: list[str] = []
    for name, value in cluster_env().items():
        values += ["--set", f"{names[name]}={{{value}}}"]
    return values


def image_values(operator: str, session: str, redis: str) -> list[str]:
    """The chart's image values (`helm install` arguments) for images named `repo:tag`."""
    values: list[str] = []
    for key, image in (("operator", operator), ("session", session), ("redis", redis)):
        repository, tag = image.rsplit(":", 1)
        values += ["--set", f"{key}.image.repository={repository}"]
        values += ["--set", f"{key}.image.tag={tag}"]
    return values


def wait_for(
    predicate: Callable[[], T | None],
    timeout: float,
    what: str,
    interval: float = 0.25,
    op: OperatorProcess | None = None,
) -> T:
    """Poll until predicate() is truthy; its value is returned."""
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while True:
        try:
            value = predicate()
            if value:
                return value
        except client.ApiException as exc:
            last_error = exc
        if time.monotonic() > deadline:
            tail = f"\n--- operator log ---\n{op.log_tail()}" if op is not None else ""
            err = f" (last error: {last_error})" if last_error else ""
            raise AssertionError(f"timed out after {timeout}s waiting for {what}{err}{tail}")
        time.sleep(interval)


def stays_true_for(
    predicate: Callable[[], object],
    seconds: float,
    what: str,
    interval: float = 0.25,
    op: OperatorProcess | None = None,
) -> None:
    """Poll predicate() for `seconds`, failing as soon as it is falsy.

    The observation window of a negative check ("and it stays deleted", "no Job appears"):
    bounded, but it fails at the first violation instead of after a blind sleep. A poll that
    raises ApiException proves nothing either way; the last one, at the window's end, must
    answer.
    """
    start = time.monotonic()
    deadline = start + seconds
    while True:
        final = time.monotonic() >= deadline
        try:
            holds = predicate()
        except client.ApiException:
            if final:
                raise
            holds = True
        if not holds:
            tail = f"\n--- operator log ---\n{op.log_tail()}" if op is not None else ""
            raise AssertionError(
                f"{what} stopped holding after {time.monotonic() - start:.1f}s of {seconds}s{tail}"
            )
        if final:
            return
        time.sleep(max(0.0, min(interval, deadline - time.monotonic())))


@contextlib.contextmanager
def temp_namespace(api_client: Any, base: str) -> Iterator[str]:
    """A fresh namespace with its default service account, deleted afterwards."""
    core = client.CoreV1Api(api_client)
    name = f"{base}-{uuid.uuid4().hex[:6]}"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    try:
        wait_for(
            lambda: core.read_namespaced_service_account("default", name),
            30,
            f"namespace {name} ready",
        )
        yield name
    finally:
        with contextlib.suppress(client.ApiException):
            core.delete_namespace(name)


class OperatorProcess:
    """`python -m codemode_operator` watching `namespaces`, logging to a file."""

    def __init__(
        self,
        kubeconfig: Path,
        namespaces: Sequence[str],
        env: Mapping[str, str] | None = None,
        log_dir: Path | None = None,
    ) -> None:
        self.kubeconfig = kubeconfig
        self.namespaces = list(namespaces)
        self.extra_env = dict(env or {})
        directory = log_dir or Path(tempfile.mkdtemp(prefix="codemode-operator-"))
        self.log_path = directory / f"operator-{uuid.uuid4().hex[:6]}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def environment(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in PROXY_VARS}
        env.update(
            KUBECONFIG=str(self.kubeconfig),
            WATCH_NAMESPACES=",".join(self.namespaces),
            METRICS_PORT="0",
            OPERATOR_NAMESPACE="codemode-system",
            CODEMODE_SESSION_IMAGE="localhost/codemode/session:dev",
            PYTHONUNBUFFERED="1",
            NO_PROXY="127.0.0.1,localhost",
        )
        env.update(cluster_env())
        env.update(self.extra_env)
        return env

    def start(self) -> OperatorProcess:
        assert self.proc is None or self.proc.poll() is not None, "already running"
        self.starts += 1
        with self.log_path.open("ab") as log:
            log.write(f"===== start #{self.starts} =====\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "codemode_operator"],
                env=self.environment(),
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=str(ROOT),
                start_new_session=True,
            )
        return self

    def wait_started(self, timeout: float = 60) -> OperatorProcess:
        """Until kopf has logged in (its watches start right after)."""

        def started() -> bool:
            if not self.alive():
                raise AssertionError(f"operator exited:\n{self.log_tail()}")
            return (
                "Initial authentication has finished"
                in self.log().split(f"===== start #{self.starts} =====")[-1]
            )

        wait_for(started, timeout, "operator started", interval=0.1, op=self)
        time.sleep(0.5)
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL: no cleanup, like a node loss or OOM kill."""
        if self.alive():
            assert self.proc is not None
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if not self.alive():
            return
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 80) -> str:
        return "\n".join(self.log().splitlines()[-lines:])

    def __enter__(self) -> OperatorProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def report_log_on_failure(request: Any, op: OperatorProcess, failed_before: int) -> None:
    """At fixture teardown: print the operator's log when a test of its scope failed."""
    if request.session.testsfailed > failed_before:
        reporter = request.config.pluginmanager.get_plugin("terminalreporter")
        text = (
            f"\n===== operator log ({op.log_path}) =====\n{op.log_tail(300)}\n"
            "===== end of operator log ====="
        )
        if reporter is not None:
            reporter.write_line(text)
        else:
            print(text, file=sys.stderr)


# ---- small helpers on our kinds ----------------------------------------------------------


class Kinds:
    """CRUD of Workspace, CodeSession and WorkflowLibrary in one namespace."""

    def __init__(self, api_client: Any, namespace: str) -> None:
        self.custom = client.CustomObjectsApi(api_client)
        self.core = client.CoreV1Api(api_client)
        self.namespace = namespace

    def create(self, plural: str, name: str, spec: dict[str, Any], **kw: Any) -> Any:
        kind = {
            "workspaces": "Workspace",
            "codesessions": "CodeSession",
            "workflowlibraries": "WorkflowLibrary",
        }[plural]
        body = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": kind,
            "metadata": {"name": name},
            "spec": spec,
        }
        return self.custom.create_namespaced_custom_object(
            GROUP, VERSION, self.namespace, plural, body, **kw
        )

    def get(self, plural: str, name: str) -> dict[str, Any] | None:
        try:
            found: dict[str, Any] = self.custom.get_namespaced_custom_object(
                GROUP, VERSION, self.namespace, plural, name
            )
        except client.ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return found

    def patch(self, plural: str, name: str, body: Any) -> Any:
        return self.custom.patch_namespaced_custom_object(
            GROUP, VERSION, self.namespace, plural, name, body
        )

    def delete(self, plural: str, name: str) -> None:
        with contextlib.suppress(client.ApiException):
            self.custom.delete_namespaced_custom_object(
                GROUP, VERSION, self.namespace, plural, name
            )

    def status(self, plural: str, name: str) -> dict[str, Any]:
        obj = self.get(plural, name)
        return dict((obj or {}).get("status") or {})

    def condition(self, plural: str, name: str, type_: str) -> dict[str, Any]:
        conds = self.status(plural, name).get("conditions") or []
        return next((dict(c) for c in conds if c.get("type") == type_), {})
