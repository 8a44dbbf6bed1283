"""The gateway's watch of CodeSessions (gateway/informer.py) and how lookups use it
(gateway/targets.py), against an in-memory API server whose watches the tests feed,
break and expire."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from codemode_operator import GROUP, VERSION
from codemode_operator.gateway import informer as informer_module
from codemode_operator.gateway.informer import Informer
from codemode_operator.gateway.kubeapi import ApiError, Gone
from codemode_operator.gateway.routing import Route
from codemode_operator.gateway.targets import Refused, Targets

END = object()  # the API server ends a watch (its timeoutSeconds)
LIST = f"/apis/{GROUP}/{VERSION}/namespaces/t/codesessions"


class FakeApi:
    """CodeSessions of namespace t, their pods and token Secrets; a watch gets the
    changes made while it is open (none made between watches: a list must catch them)."""

    def __init__(self) -> None:
        self.version = 100
        self.sessions: dict[str, dict[str, Any]] = {}
        self.pods: dict[str, str] = {}  # pod name -> IP
        self.watches: list[tuple[dict[str, str], asyncio.Queue[Any]]] = []
        self.watch_params: list[dict[str, str]] = []
        self.calls: list[tuple[str, str]] = []
        self.list_failures: list[Exception] = []

    def _bump(self) -> str:
        self.version += 1
        return str(self.version)

    def _send(self, event: Any) -> None:
        for _, queue in self.watches:
            queue.put_nowait(event)

    def put(self, name: str, pod: str = "", ip: str = "10.0.0.1", pod_version: str = "1") -> None:
        """Create or change session `name`, Ready on `pod` (default `{name}-pod`)."""
        pod = pod or f"{name}-pod"
        self.pods[pod] = ip
        kind = "MODIFIED" if name in self.sessions else "ADDED"
        obj = {
            "metadata": {
                "name": name,
                "namespace": "t",
                "uid": f"uid-{name}",
                "resourceVersion": self._bump(),
                "managedFields": [{"manager": "x"}],
            },
            "spec": {"workspaceRef": "w"},
            "status": {
                "phase": "Ready",
                "podName": pod,
                "tokenSecret": f"{name}-token",
                "podResourceVersion": pod_version,
            },
        }
        self.sessions[name] = obj
        self._send({"type": kind, "object": obj})

    def deleting(self, name: str) -> None:
        """Deleted, but kept by a finalizer until the operator lets it go."""
        obj = self.sessions[name]
        meta = {**obj["metadata"], "resourceVersion": self._bump(), "deletionTimestamp": "x"}
        self.sessions[name] = obj = {**obj, "metadata": meta}
        self._send({"type": "MODIFIED", "object": obj})

    def delete(self, name: str) -> None:
        obj = self.sessions.pop(name)
        obj = {**obj, "metadata": {**obj["metadata"], "resourceVersion": self._bump()}}
        self._send({"type": "DELETED", "object": obj})

    def end_watches(self, how: Any = END) -> None:
        self._send(how)

    async def call(self, method: str, path: str, body: Any = None, **params: Any) -> Any:
        self.calls.append((method, path))
        if method == "GET" and path == LIST:
            if self.list_failures:
                raise self.list_failures.pop(0)
            names = sorted(self.sessions)
            start = int(params.get("continue") or 0)
            page = names[start : start + int(params["limit"])]
            more = start + len(page) < len(names)
            meta = {"resourceVersion": str(self.version)}
            if more:
                meta["continue"] = str(start + len(page))
            return {"items": [self.sessions[n] for n in page], "metadata": meta}
        found = await self.get_or_none(path, record=False)
        if found is None:
            raise ApiError(404, "not found")
        return found

    async def get_or_none(self, path: str, record: bool = True) -> Any:
        if record:
            self.calls.append(("GET", path))
        kind, name = path.rsplit("/", 2)[-2:]
        if kind == "codesessions":
            return self.sessions.get(name)
        if kind == "pods" and name in self.pods:
            return {"status": {"podIP": self.pods[name]}}
        if kind == "secrets":
            return {"data": {"token": base64.b64encode(f"token-of-{name}".encode()).decode()}}
        return None

    async def watch(
        self, path: str, params: dict[str, str], timeout: httpx.Timeout
    ) -> AsyncIterator[Any]:
        assert path == LIST and params["watch"] == "1"
        queue: asyncio.Queue[Any] = asyncio.Queue()
        entry = (params, queue)
        self.watches.append(entry)
        self.watch_params.append(params)
        try:
            while True:
                item = await queue.get()
                if item is END:
                    return
                if isinstance(item, Exception):
                    raise item
                yield item
        finally:
            if entry in self.watches:
                self.watches.remove(entry)


class Sleeps:
    """The informer's waits, recorded and not waited (unless the test holds them)."""

    def __init__(self) -> None:
        self.delays: list[float] = []
        self.go = asyncio.Event()
        self.go.set()

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)
        await self.go.wait()
        await asyncio.sleep(0)


async def until(predicate: Callable[[], Any], what: str) -> None:
    for _ in range(2000):
        if predicate():
            return
        await asyncio.sleep(0.001)
    raise AssertionError(f"never: {what}")


def setup(api: FakeApi) -> tuple[Informer, Targets, list[float], Sleeps]:
    now = [0.0]
    sleeps = Sleeps()
    informer = Informer(api, ["t"], sleep=sleeps)  # type: ignore[arg-type]
    targets = Targets(api, ttl=5, wait=1, clock=lambda: now[0], informer=informer)  # type: ignore[arg-type]
    return informer, targets, now, sleeps


def route(name: str) -> Route:
    return Route("t", name, "/execute")


async def test_a_lookup_is_a_dict_read_while_the_watch_vouches_for_the_session() -> None:
    api = FakeApi()
    api.put("a")
    informer, targets, now, _ = setup(api)
    async with targets.running():
        await until(lambda: informer.synced("t") and api.watches, "the watch open")
        assert not informer.synced("other")  # a namespace it does not watch
        first = await targets.resolve(route("a"))
        assert (first.url, first.token) == ("http://10.0.0.1:8080", "token-of-a-token")
        calls = len(api.calls)
        now[0] += 3600  # far past the ttl: the watch, not the clock, keeps it valid
        for _ in range(100):
            assert await targets.resolve(route("a")) == first
        assert len(api.calls) == calls
    assert "managedFields" not in (informer.get("t", "a") or {}).get("metadata", {})


async def test_a_session_not_seen_by_the_watch_yet_is_read_with_one_get() -> None:
    api = FakeApi()
    _, targets, _, _ = setup(api)
    async with targets.running():
        await until(lambda: api.watches, "the watch open")
        api.watches.clear()  # the API server's event for it has not arrived yet
        api.put("new", ip="10.0.0.7")
        target = await targets.resolve(route("new"))
        assert target.url == "http://10.0.0.7:8080"
        assert ("GET", f"{LIST}/new") in api.calls


async def test_a_deleted_session_is_not_routed_to_once_the_watch_says_so() -> None:
    api = FakeApi()
    api.put("a")
    informer, targets, _, _ = setup(api)
    async with targets.running():
        await until(lambda: api.watches, "the watch open")
        await targets.resolve(route("a"))
        api.deleting("a")
        await until(
            lambda: "deletionTimestamp" in informer.get("t", "a")["metadata"],  # type: ignore[index]
            "the deletion seen",
        )
        with pytest.raises(Refused) as refused:
            await targets.resolve(route("a"))
        assert refused.value.status == 409 and "being deleted" in refused.value.reason
        api.delete("a")
        await until(lambda: informer.get("t", "a") is None, "the object gone")
        with pytest.raises(Refused) as refused:
            await targets.resolve(route("a"))
        assert refused.value.status == 404


async def test_a_replaced_pod_or_new_token_secret_is_looked_up_again() -> None:
    api = FakeApi()
    api.put("a", ip="10.0.0.1")
    informer, targets, _, _ = setup(api)
    async with targets.running():
        await until(lambda: api.watches, "the watch open")
        assert (await targets.resolve(route("a"))).url == "http://10.0.0.1:8080"
        api.put("a", ip="10.0.0.2", pod_version="2")  # same pod name, a new pod
        await until(
            lambda: informer.get("t", "a")["status"]["podResourceVersion"] == "2",  # type: ignore[index]
            "the change seen",
        )
        assert (await targets.resolve(route("a"))).url == "http://10.0.0.2:8080"


async def test_the_watch_resumes_from_the_last_version_without_listing_again() -> None:
    api = FakeApi()
    api.put("a")
    informer, _, _, _ = setup(api)
    async with informer.running():
        await until(lambda: api.watches, "the watch open")
        assert api.watch_params[0]["resourceVersion"] == "101"
        assert api.watch_params[0]["allowWatchBookmarks"] == "true"
        api.put("b")
        api.end_watches()
        await until(lambda: len(api.watch_params) == 2 and api.watches, "a second watch")
        assert api.watch_params[1]["resourceVersion"] == "102"
        assert informer.lists == 1 and informer.synced("t")
        assert informer.get("t", "b") is not None


@pytest.mark.parametrize(
    "gone",
    [
        {"type": "ERROR", "object": {"kind": "Status", "code": 410, "message": "too old"}},
        Gone("too old"),
    ],
    ids=["error event", "http 410"],
)
async def test_410_gone_lists_again_and_drops_what_was_deleted_meanwhile(gone: Any) -> None:
    api = FakeApi()
    api.put("a")
    api.put("b")
    informer, _, _, sleeps = setup(api)
    async with informer.running():
        await until(lambda: api.watches, "the watch open")
        watch = api.watches[0]
        api.watches.clear()  # missed by the watch: it has to list again to know
        api.delete("b")
        watch[1].put_nowait(gone)
        api.watches.append(watch)
        await until(lambda: informer.lists == 2 and api.watches, "a new list and watch")
        assert informer.get("t", "b") is None and informer.get("t", "a") is not None
        assert informer.synced("t")
        assert sleeps.delays == []  # the API server answered: no waiting


async def test_a_broken_watch_falls_back_to_gets_and_lists_again_with_backoff() -> None:
    api = FakeApi()
    api.put("a")
    informer, targets, now, sleeps = setup(api)
    async with targets.running():
        await until(lambda: api.watches, "the watch open")
        await targets.resolve(route("a"))
        # The connection breaks and the API server cannot be reached for a while.
        api.list_failures = [httpx.ConnectError("refused"), ApiError(503, "x"), OSError("x")]
        watch = api.watches[0]
        api.watches.clear()
        api.delete("a")  # unseen while the watch is down
        sleeps.go.clear()
        watch[1].put_nowait(httpx.ReadError("reset"))
        await until(lambda: sleeps.delays, "waiting to reconnect")
        assert not informer.synced("t")
        # Out of step: an address is reused for the ttl only, then looked up again.
        assert (await targets.resolve(route("a"))).url == "http://10.0.0.1:8080"
        now[0] += 5
        with pytest.raises(Refused) as refused:
            await targets.resolve(route("a"))
        assert refused.value.status == 404
        sleeps.go.set()
        await until(lambda: informer.synced("t") and api.watches, "back in step")
        assert informer.lists == 2 and informer.get("t", "a") is None
        # One wait per failure, each about twice the one before (±20 % jitter).
        assert len(sleeps.delays) == 4
        for delay, base in zip(sleeps.delays, (0.5, 1, 2, 4), strict=True):
            assert base * 0.8 <= delay <= base * 1.2


async def test_waits_between_failures_stop_growing_at_the_maximum() -> None:
    api = FakeApi()
    api.list_failures = [httpx.ConnectError("refused")] * 12
    sleeps = Sleeps()
    informer = Informer(api, ["t"], sleep=sleeps)  # type: ignore[arg-type]
    async with informer.running():
        await until(lambda: informer.synced("t"), "in step")
    assert max(sleeps.delays) <= 30 * 1.2 and sleeps.delays[-1] >= 30 * 0.8


async def test_a_list_is_read_page_by_page(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(informer_module, "PAGE", 2)
    api = FakeApi()
    for name in "abcde":
        api.put(name)
    informer, _, _, _ = setup(api)
    async with informer.running():
        await until(lambda: informer.synced("t"), "in step")
        assert all(informer.get("t", n) for n in "abcde")
    assert [c for c in api.calls if c == ("GET", LIST)] == [("GET", LIST)] * 3


async def test_the_whole_cluster_is_one_watch() -> None:
    informer = Informer(FakeApi(), None)  # type: ignore[arg-type]
    assert informer.scopes == [None]
    assert informer._path(None) == f"/apis/{GROUP}/{VERSION}/codesessions"
    informer._synced.add(None)
    assert informer.synced("any") and informer.synced("other")


async def test_without_a_watch_addresses_are_reused_for_the_ttl() -> None:
    api = FakeApi()
    api.put("a")
    now = [0.0]
    targets = Targets(api, ttl=5, clock=lambda: now[0])  # type: ignore[arg-type]
    async with targets.running():
        await targets.resolve(route("a"))
        calls = len(api.calls)
        now[0] += 4.9
        await targets.resolve(route("a"))
        assert len(api.calls) == calls
        now[0] += 0.1
        await targets.resolve(route("a"))
        assert len(api.calls) > calls


async def test_stopping_ends_the_watch_even_when_its_cleanup_fails() -> None:
    """A cancelled watch whose connection fails to close (another exception replaces the
    cancellation) must not be taken for a broken watch and retried forever."""

    class BadCleanup(FakeApi):
        async def watch(
            self, path: str, params: dict[str, str], timeout: httpx.Timeout
        ) -> AsyncIterator[Any]:
            try:
                async for event in super().watch(path, params, timeout):
                    yield event
            finally:
                raise ValueError("closing failed")

    api = BadCleanup()
    informer = Informer(api, ["t"], sleep=Sleeps())  # type: ignore[arg-type]
    async with asyncio.timeout(5), informer.running():
        await until(lambda: api.watches, "the watch open")
    assert not informer.synced("t")
