"""kstatus as Argo CD and Flux read it, checked on every version of an object.

`History` watches one object and keeps every version the API server hands out, so a
test can check a rule at each moment the object was observable, not only at the moments
it polled. `kstatus()` is what those tools read of one version, `check_history()` the
rules every version must keep, and `progress_path()` the order of Reconciling, Stalled and
Current that the versions went through (which proves the watch saw the transitions).
`wait_kstatus()` waits for the three conditions a test expects, at the current generation.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import Any

from kubernetes import client, watch

from tests.k8s.operator_env import Env
from tests.k8s.operator_fixture import GROUP, VERSION

KSTATUS = ("Ready", "Reconciling", "Stalled")
Obj = dict[str, Any]


def kstatus(obj: Obj | None) -> dict[str, tuple[str, str]]:
    """{type: (status, reason)} of the Ready, Reconciling and Stalled conditions present."""
    conds = ((obj or {}).get("status") or {}).get("conditions") or []
    return {
        c["type"]: (c.get("status", ""), c.get("reason", ""))
        for c in conds
        if c.get("type") in KSTATUS
    }


def progress(obj: Obj | None) -> str | None:
    """What kstatus makes of the conditions: Reconciling, Stalled, Current, or None when
    they are not there yet."""
    found = kstatus(obj)
    if not found:
        return None
    if found.get("Reconciling", ("",))[0] == "True":
        return "Reconciling"
    if found.get("Stalled", ("",))[0] == "True":
        return "Stalled"
    return "Current" if found.get("Ready", ("",))[0] == "True" else "NotReady"


def check_version(obj: Obj) -> list[str]:
    """What is wrong with the kstatus of one version (nothing, when it is consistent)."""
    meta, status = obj.get("metadata") or {}, obj.get("status") or {}
    conds = {c["type"]: c for c in status.get("conditions") or [] if c.get("type") in KSTATUS}
    if not conds:
        return []
    where = f"resourceVersion {meta.get('resourceVersion')}"
    problems = []
    if set(conds) != set(KSTATUS):
        problems.append(f"{where}: only {sorted(conds)} of {KSTATUS}")
    true = [t for t, c in conds.items() if c.get("status") == "True"]
    if "Reconciling" in true and "Stalled" in true:
        problems.append(f"{where}: Reconciling and Stalled both True")
    if "Ready" in true and len(true) > 1:
        problems.append(f"{where}: Ready True together with {true}")
    generations = {c.get("observedGeneration") for c in conds.values()}
    if len(generations) != 1:
        problems.append(f"{where}: the conditions' observedGeneration differ: {generations}")
    observed = status.get("observedGeneration")
    if observed is not None and observed > meta.get("generation", 0):
        problems.append(f"{where}: observedGeneration {observed} > {meta.get('generation')}")
    return problems


def progress_path(versions: Sequence[Obj]) -> list[str]:
    """The progress of successive versions, repeats and versions without kstatus left out."""
    path: list[str] = []
    for obj in versions:
        now = progress(obj)
        if now is not None and (not path or path[-1] != now):
            path.append(now)
    return path


def wait_kstatus(
    env: Env, plural: str, name: str, timeout: float = 30, **want: tuple[str, str]
) -> Obj:
    """Until Ready, Reconciling and Stalled are `want` ((status, reason) each) and
    status.observedGeneration is the object's generation; the object then."""
    expected = {t.capitalize(): v for t, v in want.items()}
    seen: dict[str, Any] = {}

    def holds() -> dict[str, Any] | None:
        obj = env.kinds.get(plural, name) or {}
        seen.update(
            kstatus=kstatus(obj),
            generation=obj.get("metadata", {}).get("generation"),
            observed=(obj.get("status") or {}).get("observedGeneration"),
        )
        current = seen["generation"] is not None and seen["observed"] == seen["generation"]
        return obj if current and seen["kstatus"] == expected else None

    try:
        found: dict[str, Any] = env.wait(holds, timeout, f"{plural}/{name} {expected}")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\nlast seen: {seen}") from None
    return found


class History:
    """Every version of `plural/name` in `namespace` from now on, as a watch delivers them
    (the API server sends each change; none is coalesced). Use as a context manager, and
    `settle()` before reading `versions`, so they include the version last read."""

    def __init__(self, api_client: Any, plural: str, namespace: str, name: str) -> None:
        self.custom = client.CustomObjectsApi(api_client)
        self.plural, self.namespace, self.name = plural, namespace, name
        self.versions: list[Obj] = []
        self.error: BaseException | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _list(self, **kw: Any) -> Any:
        return self.custom.list_namespaced_custom_object(
            GROUP, VERSION, self.namespace, self.plural, **kw
        )

    def start(self) -> History:
        listed: Any = self._list(field_selector=f"metadata.name={self.name}")
        self.versions.extend(listed["items"])
        since = listed["metadata"]["resourceVersion"]
        self._thread = threading.Thread(
            target=self._run, args=(since,), name=f"history-{self.name}", daemon=True
        )
        self._thread.start()
        return self

    def _run(self, since: str) -> None:
        try:
            while not self._stop.is_set():
                # A short server-side timeout, so stop() returns within a second.
                stream: Any = watch.Watch().stream  # type: ignore[no-untyped-call]
                for event in stream(
                    self.custom.list_namespaced_custom_object,
                    GROUP,
                    VERSION,
                    self.namespace,
                    self.plural,
                    field_selector=f"metadata.name={self.name}",
                    resource_version=since,
                    timeout_seconds=1,
                ):
                    obj = event["object"]
                    since = obj["metadata"]["resourceVersion"]
                    with self._lock:
                        self.versions.append(obj)
        except Exception as exc:  # the test sees it: settle() raises it
            self.error = exc

    def seen(self, resource_version: str) -> bool:
        with self._lock:
            return any(
                v["metadata"].get("resourceVersion") == resource_version for v in self.versions
            )

    def settle(self, timeout: float = 10) -> list[Obj]:
        """Wait until the version the API server has now is recorded; all versions."""
        current: Any = self.custom.get_namespaced_custom_object(
            GROUP, VERSION, self.namespace, self.plural, self.name
        )
        rv = current["metadata"]["resourceVersion"]
        deadline = time.monotonic() + timeout
        while not self.seen(rv):
            if self.error is not None:
                raise AssertionError(f"watch of {self.plural}/{self.name} failed: {self.error}")
            if time.monotonic() > deadline:
                raise AssertionError(f"watch of {self.plural}/{self.name} never saw {rv}")
            time.sleep(0.05)
        with self._lock:
            return list(self.versions)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)

    def __enter__(self) -> History:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def check_history(history: History) -> list[Obj]:
    """Assert every recorded version keeps the kstatus rules; the versions, in order."""
    versions = history.settle()
    problems = [p for obj in versions for p in check_version(obj)]
    assert not problems, "\n".join(problems)
    return versions
