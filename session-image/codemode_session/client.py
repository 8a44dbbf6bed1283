"""Python clients for the session server: `SessionClient` (sync) and `AsyncSessionClient`.

Both speak the same HTTP API, keep the server-issued session id, and turn
4xx answers into `SessionError` carrying the server's reason.
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import IO, Any
from urllib.parse import quote

import httpx

from codemode_session.errors import CodemodeError, ValidationError
from codemode_session.results import ExecuteResult
from codemode_session.sse import EventReader

__all__ = ["AsyncSessionClient", "ExecuteResult", "SessionClient", "SessionError"]


class SessionError(CodemodeError):
    """The server refused a request; `status` and the server's `detail` explain why."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(f"the session server answered {status}: {detail}")
        self.status = status
        self.detail = detail

    @property
    def unknown_session(self) -> bool:
        """X-Session-ID names no session of ours (unknown, ended or expired): a server's
        400 `Invalid session ID`, or an earlier server's 404 `unknown or expired session`."""
        if self.status == 400:
            return self.detail.startswith("Invalid session ID")
        return self.status == 404 and "unknown or expired session" in self.detail


def _tls(base_url: str) -> bool:
    """Verify certificates only where TLS is used. A plain `http://` server (a session
    pod, its Service) never needs a CA store, and loading one is most of what a new
    client costs (about 30 ms, 340 ms for the first in a process under load), which
    `codemode exec` and every `Sessions.connect` would pay for nothing."""
    return not base_url.lower().startswith("http://")


def _check(response: httpx.Response) -> httpx.Response:
    if response.status_code >= 400:
        try:
            body = response.json()
        except ValueError:
            body = None
        detail = body.get("detail", response.text) if isinstance(body, dict) else response.text
        reason = body.get("error") if isinstance(body, dict) else None
        if detail == "Invalid session ID" and isinstance(reason, str):
            detail = f"{detail}: {reason}"  # the server's reason says what to do
        raise SessionError(response.status_code, str(detail))
    return response


def _name_path(kind: str, name: str) -> str:
    """`/api/{kind}/{name}` with the name URL-quoted, so '?', '#', '%' or spaces in it
    reach the server as part of the name (a bad name gets the server's 400) instead of
    addressing another object; '.' and '..' parts are escaped so they are not resolved."""
    if not isinstance(name, str):
        raise TypeError(f"name must be a str, not {type(name).__name__}")
    parts = [quote(part, safe="") for part in name.split("/")]
    parts = [p.replace(".", "%2E") if p in (".", "..") else p for p in parts]
    return f"/api/{kind}/" + "/".join(parts)


def _history_path(session_id: str | None) -> str:
    if not session_id:
        raise ValidationError("no session id: pass one, or create a session first")
    return f"/api/history/sessions/{quote(session_id, safe='')}"


def _session_body(workspace_id: str | None, agent_id: str | None) -> dict[str, str] | None:
    body = {"workspace_id": workspace_id, "agent_id": agent_id}
    return {k: v for k, v in body.items() if v is not None} or None


def _history_list_params(agent_id: str | None, offset: int, limit: int) -> dict[str, Any]:
    params: dict[str, Any] = {"offset": offset, "limit": limit}
    if agent_id is not None:
        params["agent_id"] = agent_id
    return params


def _workflow_or_none(response: httpx.Response) -> dict[str, Any] | None:
    """The server answers null for a missing workflow (older ones answered 404)."""
    data = response.json()
    return None if data is None else dict(data)


def _no_such_object(exc: SessionError) -> bool:
    """An older server's 404 for a missing workflow, not one for an unknown session."""
    return exc.status == 404 and not exc.unknown_session


def _artifact_value(response: httpx.Response) -> Any:
    if response.headers.get("content-type", "").startswith("application/octet-stream"):
        return response.content
    return response.json()


def _artifact_body(
    name: str, data: Any, description: str, metadata: dict[str, Any] | None
) -> dict[str, Any]:
    body: dict[str, Any] = {"name": name, "description": description, "metadata": metadata}
    if isinstance(data, bytes | bytearray):
        body["data_base64"] = base64.b64encode(bytes(data)).decode()
    else:
        body["data"] = data
    return body


FILE_CHUNK = 1024 * 1024


def _file_path(path: str) -> str:
    """`/files/{path}` with each component URL-quoted (the server checks the names)."""
    return "/files/" + quote(path.lstrip("/"), safe="/")


def _chunks_of(source: IO[bytes]) -> Iterator[bytes]:
    while chunk := source.read(FILE_CHUNK):
        yield chunk


async def _async_chunks_of(source: IO[bytes]) -> AsyncIterator[bytes]:
    while chunk := source.read(FILE_CHUNK):
        yield chunk


@dataclass(frozen=True)
class Output:
    """A piece of a streamed run's output, as printed: `stream` is stdout or stderr."""

    stream: str
    text: str


StreamItem = Output | ExecuteResult
SSE = {"Accept": "text/event-stream"}


def _stream_item(name: str, data: Any) -> StreamItem | None:
    if name in ("stdout", "stderr"):
        return Output(name, str(data.get("text", "")))
    if name == "result":
        return ExecuteResult.from_json(data)
    if name == "error":
        raise SessionError(int(data.get("status", 500)), str(data.get("detail")))
    return None


def _stream_body(code: str, timeout: float | None) -> dict[str, Any]:
    body: dict[str, Any] = {"code": code}
    if timeout is not None:
        body["timeout"] = timeout
    return body


class _Base:
    def __init__(
        self, base_url: str, token: str | None, session_id: str | None, workspace_id: str | None
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.session_id = session_id
        self.workspace_id = workspace_id

    def _headers(self) -> dict[str, str]:
        headers: dict[str, str] = {}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        if self.session_id:
            headers["X-Session-ID"] = self.session_id
        return headers


class SessionClient(_Base):
    """Blocking client. `with SessionClient(url, token=t) as c: c.execute("1+1").value`."""

    def __init__(
        self,
        base_url: str,
        token: str | None = None,
        *,
        session_id: str | None = None,
        workspace_id: str | None = None,
        timeout: float = 330.0,
    ) -> None:
        super().__init__(base_url, token, session_id, workspace_id)
        self._http = httpx.Client(
            base_url=self.base_url, timeout=timeout, verify=_tls(self.base_url)
        )

    def __enter__(self) -> SessionClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _req(self, method: str, path: str, **kw: Any) -> httpx.Response:
        return _check(self._http.request(method, path, headers=self._headers(), **kw))

    def health(self) -> dict[str, Any]:
        return dict(_check(self._http.get("/health")).json())

    def create_session(self, workspace_id: str | None = None, agent_id: str | None = None) -> str:
        """Open a server session; `agent_id` is whom its history is indexed under."""
        ws = workspace_id if workspace_id is not None else self.workspace_id
        data = self._req("POST", "/sessions", json=_session_body(ws, agent_id)).json()
        self.session_id = str(data["session_id"])
        return self.session_id

    def end_session(self) -> None:
        if self.session_id:
            self._req("DELETE", "/sessions")
            self.session_id = None

    def execute(self, code: str, timeout: float | None = None) -> ExecuteResult:
        if self.session_id is None:
            self.create_session()
        body: dict[str, Any] = {"code": code}
        if timeout is not None:
            body["timeout"] = timeout
        result = ExecuteResult.from_json(self._req("POST", "/execute", json=body).json())
        self.session_id = result.session_id
        return result

    def execute_stream(self, code: str, timeout: float | None = None) -> Iterator[StreamItem]:
        """Run `code`, yielding its output as it is printed (`Output`), then its
        `ExecuteResult`. Closing the iterator early interrupts the run."""
        if self.session_id is None:
            self.create_session()
        headers = {**self._headers(), **SSE}
        body = _stream_body(code, timeout)
        with self._http.stream("POST", "/execute", json=body, headers=headers) as response:
            if response.status_code >= 400:
                response.read()
                _check(response)
            events = EventReader()
            for line in response.iter_lines():
                found = events.feed(line)
                item = None if found is None else _stream_item(*found)
                if isinstance(item, ExecuteResult):
                    self.session_id = item.session_id
                if item is not None:
                    yield item

    def reset(self) -> None:
        self._req("POST", "/reset")

    def info(self) -> dict[str, Any]:
        return dict(self._req("GET", "/info").json())

    def list_tools(self) -> list[dict[str, Any]]:
        return list(self._req("GET", "/api/tools").json())

    def search_tools(self, query: str, limit: int = 10) -> list[dict[str, Any]]:
        return list(
            self._req("GET", "/api/tools/search", params={"query": query, "limit": limit}).json()
        )

    def list_workflows(self) -> list[dict[str, Any]]:
        return list(self._req("GET", "/api/workflows").json())

    def search_workflows(self, query: str, limit: int = 10) -> list[dict[str, Any]]:
        return list(
            self._req(
                "GET", "/api/workflows/search", params={"query": query, "limit": limit}
            ).json()
        )

    def get_workflow(self, name: str) -> dict[str, Any] | None:
        try:
            return _workflow_or_none(self._req("GET", _name_path("workflows", name)))
        except SessionError as exc:
            if _no_such_object(exc):
                return None
            raise

    def create_workflow(self, name: str, source: str, description: str = "") -> dict[str, Any]:
        body = {"name": name, "source": source, "description": description}
        return dict(self._req("POST", "/api/workflows", json=body).json())

    def delete_workflow(self, name: str) -> bool:
        try:
            return self._req("DELETE", _name_path("workflows", name)).json() is not False
        except SessionError as exc:
            if _no_such_object(exc):
                return False
            raise

    def list_artifacts(self) -> list[dict[str, Any]]:
        return list(self._req("GET", "/api/artifacts").json())

    def load_artifact(self, name: str) -> Any:
        return _artifact_value(self._req("GET", _name_path("artifacts", name)))

    def save_artifact(
        self, name: str, data: Any, description: str = "", metadata: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        body = _artifact_body(name, data, description, metadata)
        return dict(self._req("POST", "/api/artifacts", json=body).json())

    def delete_artifact(self, name: str) -> None:
        self._req("DELETE", _name_path("artifacts", name))

    def list_deps(self) -> list[str]:
        return list(self._req("GET", "/api/deps").json())

    def add_dep(self, package: str) -> dict[str, Any]:
        return dict(self._req("POST", "/api/deps/add", json={"package": package}).json())

    def remove_dep(self, package: str) -> dict[str, Any]:
        return dict(self._req("POST", "/api/deps/remove", json={"package": package}).json())

    def sync_deps(self) -> dict[str, Any]:
        return dict(self._req("POST", "/api/deps/sync").json())

    # Session history (Agentix's list/get/fork/delete); ids as /api/history takes them.
    def list_history(
        self, agent_id: str | None = None, offset: int = 0, limit: int = 100
    ) -> dict[str, Any]:
        params = _history_list_params(agent_id, offset, limit)
        return dict(self._req("GET", "/api/history/sessions", params=params).json())

    def history(
        self, session_id: str | None = None, offset: int = 0, limit: int = 100
    ) -> dict[str, Any]:
        """A session's record and a page of its messages (default: this client's session)."""
        sid = session_id or self.session_id
        params = {"offset": offset, "limit": limit}
        return dict(self._req("GET", _history_path(sid), params=params).json())

    def fork_history(self, session_id: str | None = None) -> dict[str, Any]:
        sid = session_id or self.session_id
        return dict(self._req("POST", f"{_history_path(sid)}/fork").json())

    def delete_history(self, session_id: str | None = None) -> None:
        sid = session_id or self.session_id
        self._req("DELETE", _history_path(sid))

    # the session's working folder (its code's current directory)
    def list_files(self) -> list[dict[str, Any]]:
        return list(self._req("GET", "/files").json()["files"])

    def upload_file(self, path: str, data: bytes | IO[bytes]) -> dict[str, Any]:
        """Put `data` (bytes, or a binary file streamed in pieces) at `path` in the folder."""
        content = data if isinstance(data, bytes) else _chunks_of(data)
        return dict(self._req("PUT", _file_path(path), content=content).json())

    def download_file(self, path: str, into: IO[bytes] | None = None) -> bytes | int:
        """The file's bytes; with `into`, streamed there instead (returns the count)."""
        if into is None:
            return self._req("GET", _file_path(path)).content
        count = 0
        with self._http.stream("GET", _file_path(path), headers=self._headers()) as response:
            if response.status_code >= 400:
                response.read()
                _check(response)
            for chunk in response.iter_bytes(FILE_CHUNK):
                into.write(chunk)
                count += len(chunk)
        return count

    def delete_file(self, path: str) -> None:
        self._req("DELETE", _file_path(path))


class AsyncSessionClient(_Base):
    """Asyncio client with the same methods as SessionClient, awaited."""

    def __init__(
        self,
        base_url: str,
        token: str | None = None,
        *,
        session_id: str | None = None,
        workspace_id: str | None = None,
        timeout: float = 330.0,
    ) -> None:
        super().__init__(base_url, token, session_id, workspace_id)
        self._http = httpx.AsyncClient(
            base_url=self.base_url, timeout=timeout, verify=_tls(self.base_url)
        )

    async def __aenter__(self) -> AsyncSessionClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self._http.aclose()

    async def _req(self, method: str, path: str, **kw: Any) -> httpx.Response:
        return _check(await self._http.request(method, path, headers=self._headers(), **kw))

    async def health(self) -> dict[str, Any]:
        return dict(_check(await self._http.get("/health")).json())

    async def create_session(
        self, workspace_id: str | None = None, agent_id: str | None = None
    ) -> str:
        ws = workspace_id if workspace_id is not None else self.workspace_id
        response = await self._req("POST", "/sessions", json=_session_body(ws, agent_id))
        self.session_id = str(response.json()["session_id"])
        return self.session_id

    async def end_session(self) -> None:
        if self.session_id:
            await self._req("DELETE", "/sessions")
            self.session_id = None

    async def execute(self, code: str, timeout: float | None = None) -> ExecuteResult:
        if self.session_id is None:
            await self.create_session()
        body: dict[str, Any] = {"code": code}
        if timeout is not None:
            body["timeout"] = timeout
        result = ExecuteResult.from_json((await self._req("POST", "/execute", json=body)).json())
        self.session_id = result.session_id
        return result

    async def execute_stream(
        self, code: str, timeout: float | None = None
    ) -> AsyncIterator[StreamItem]:
        """As SessionClient.execute_stream, for `async for`."""
        if self.session_id is None:
            await self.create_session()
        headers = {**self._headers(), **SSE}
        body = _stream_body(code, timeout)
        async with self._http.stream("POST", "/execute", json=body, headers=headers) as response:
            if response.status_code >= 400:
                await response.aread()
                _check(response)
            events = EventReader()
            async for line in response.aiter_lines():
                found = events.feed(line)
                item = None if found is None else _stream_item(*found)
                if isinstance(item, ExecuteResult):
                    self.session_id = item.session_id
                if item is not None:
                    yield item

    async def reset(self) -> None:
        await self._req("POST", "/reset")

    async def info(self) -> dict[str, Any]:
        return dict((await self._req("GET", "/info")).json())

    async def list_workflows(self) -> list[dict[str, Any]]:
        return list((await self._req("GET", "/api/workflows")).json())

    async def create_workflow(
        self, name: str, source: str, description: str = ""
    ) -> dict[str, Any]:
        body = {"name": name, "source": source, "description": description}
        return dict((await self._req("POST", "/api/workflows", json=body)).json())

    async def list_tools(self) -> list[dict[str, Any]]:
        return list((await self._req("GET", "/api/tools")).json())

    async def search_tools(self, query: str, limit: int = 10) -> list[dict[str, Any]]:
        return list(
            (
                await self._req("GET", "/api/tools/search", params={"query": query, "limit": limit})
            ).json()
        )

    async def search_workflows(self, query: str, limit: int = 10) -> list[dict[str, Any]]:
        return list(
            (
                await self._req(
                    "GET", "/api/workflows/search", params={"query": query, "limit": limit}
                )
            ).json()
        )

    async def get_workflow(self, name: str) -> dict[str, Any] | None:
        try:
            return _workflow_or_none(await self._req("GET", _name_path("workflows", name)))
        except SessionError as exc:
            if _no_such_object(exc):
                return None
            raise

    async def delete_workflow(self, name: str) -> bool:
        try:
            response = await self._req("DELETE", _name_path("workflows", name))
        except SessionError as exc:
            if _no_such_object(exc):
                return False
            raise
        return response.json() is not False

    async def list_artifacts(self) -> list[dict[str, Any]]:
        return list((await self._req("GET", "/api/artifacts")).json())

    async def load_artifact(self, name: str) -> Any:
        return _artifact_value(await self._req("GET", _name_path("artifacts", name)))

    async def save_artifact(
        self, name: str, data: Any, description: str = "", metadata: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        body = _artifact_body(name, data, description, metadata)
        return dict((await self._req("POST", "/api/artifacts", json=body)).json())

    async def delete_artifact(self, name: str) -> None:
        await self._req("DELETE", _name_path("artifacts", name))

    async def list_deps(self) -> list[str]:
        return list((await self._req("GET", "/api/deps")).json())

    async def add_dep(self, package: str) -> dict[str, Any]:
        return dict((await self._req("POST", "/api/deps/add", json={"package": package})).json())

    async def remove_dep(self, package: str) -> dict[str, Any]:
        return dict((await self._req("POST", "/api/deps/remove", json={"package": package})).json())

    async def sync_deps(self) -> dict[str, Any]:
        return dict((await self._req("POST", "/api/deps/sync")).json())

    # Session history, as SessionClient's.
    async def list_history(
        self, agent_id: str | None = None, offset: int = 0, limit: int = 100
    ) -> dict[str, Any]:
        params = _history_list_params(agent_id, offset, limit)
        return dict((await self._req("GET", "/api/history/sessions", params=params)).json())

    async def history(
        self, session_id: str | None = None, offset: int = 0, limit: int = 100
    ) -> dict[str, Any]:
        path = _history_path(session_id or self.session_id)
        params = {"offset": offset, "limit": limit}
        return dict((await self._req("GET", path, params=params)).json())

    async def fork_history(self, session_id: str | None = None) -> dict[str, Any]:
        path = _history_path(session_id or self.session_id)
        return dict((await self._req("POST", f"{path}/fork")).json())

    async def delete_history(self, session_id: str | None = None) -> None:
        await self._req("DELETE", _history_path(session_id or self.session_id))

    async def list_files(self) -> list[dict[str, Any]]:
        return list((await self._req("GET", "/files")).json()["files"])

    async def upload_file(self, path: str, data: bytes | IO[bytes]) -> dict[str, Any]:
        content = data if isinstance(data, bytes) else _async_chunks_of(data)
        return dict((await self._req("PUT", _file_path(path), content=content)).json())

    async def download_file(self, path: str, into: IO[bytes] | None = None) -> bytes | int:
        if into is None:
            return (await self._req("GET", _file_path(path))).content
        count = 0
        request = self._http.stream("GET", _file_path(path), headers=self._headers())
        async with request as response:
            if response.status_code >= 400:
                await response.aread()
                _check(response)
            async for chunk in response.aiter_bytes(FILE_CHUNK):
                into.write(chunk)
                count += len(chunk)
        return count

    async def delete_file(self, path: str) -> None:
        await self._req("DELETE", _file_path(path))
