"""The fast path of `codemode exec`: a Ready session's address and token, remembered.

Finding a session through Kubernetes costs most of a call (importing the client, reading
the kubeconfig, the CodeSession and its token Secret: about two seconds). A call that
found one writes where it was (its pod's address, never a port-forward of a process that
is gone), its token and its state id to a file only the user can read; the next call to
the same session tries that first, with the standard library only, and checks the
server is that session's before it sends the token (`GET /health` names the session's
state id). Anything unexpected (no answer, another session's server, a 401) falls back
to the Kubernetes path, which writes the entry again.

Every call to one session uses the same server session, an id chosen when the entry is
written (the server binds a client-chosen id to the token that chose it) and never
ended: the next call finds its worker alive, as the last call left it, instead of
waiting for a new one to start and load the saved state (most of a call's time). A
newcomer in the pod takes that worker when it needs it; the state stays either way.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from codemode_session.errors import CodemodeError

TTL_SECONDS = 3600.0
CONNECT_TIMEOUT = 1.0
SSE = "text/event-stream"
OutputSink = Callable[[str, str], None]  # (stream, text) of a streamed run, as printed


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "codemode" / "exec"


def _entry_path(namespace: str | None, name: str) -> Path:
    """Keyed by the kubeconfig in use, the namespace asked for and the session's name."""
    kubeconfig = os.environ.get("KUBECONFIG") or str(Path.home() / ".kube" / "config")
    key = hashlib.sha256(f"{kubeconfig}\0{namespace or ''}\0{name}".encode()).hexdigest()[:32]
    return cache_dir() / f"{key}.json"


def cacheable(url: str, state_id: str | None) -> bool:
    """Not a port-forward (it dies with its process), and a state id to check against."""
    return bool(state_id) and (urlsplit(url).hostname or "") not in ("127.0.0.1", "localhost")


def session_id(namespace: str | None, name: str) -> str:
    """The server session calls to this session use: the remembered one, else a new id
    (the entry written after the call keeps it)."""
    entry = _load(namespace, name)
    found = entry.get("session_id") if entry else None
    return found if isinstance(found, str) and found else str(uuid.uuid4())


def remember(
    namespace: str | None,
    name: str,
    url: str,
    token: str,
    state_id: str | None,
    server_session: str | None = None,
) -> None:
    if state_id and cacheable(url, state_id):
        write_entry(namespace, name, url, token, state_id, server_session)


def write_entry(
    namespace: str | None,
    name: str,
    url: str,
    token: str,
    state_id: str,
    server_session: str | None = None,
) -> None:
    path = _entry_path(namespace, name)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    entry = {
        "url": url,
        "token": token,
        "state_id": state_id,
        "session_id": server_session or str(uuid.uuid4()),
        "saved_at": time.time(),
    }
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump(entry, out)
    os.replace(tmp, path)


def forget(namespace: str | None, name: str) -> None:
    _entry_path(namespace, name).unlink(missing_ok=True)


def _load(namespace: str | None, name: str) -> dict[str, Any] | None:
    try:
        entry = json.loads(_entry_path(namespace, name).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(entry, dict) or time.time() - float(entry.get("saved_at", 0)) > TTL_SECONDS:
        return None
    return entry


class _Miss(Exception):
    """The cached address is not (or no longer) this session's server."""


def _call(
    conn: http.client.HTTPConnection,
    method: str,
    path: str,
    headers: dict[str, str],
    body: dict[str, Any] | None = None,
) -> dict[str, Any]:
    payload = None if body is None else json.dumps(body).encode()
    conn.request(method, path, body=payload, headers=headers)
    response = conn.getresponse()
    data = response.read()
    if response.status != 200:
        raise _Miss(f"{method} {path} answered {response.status}")
    found = json.loads(data) if data else {}
    if not isinstance(found, dict):
        raise _Miss(f"{method} {path} answered no object")
    return found


def read_events(response: http.client.HTTPResponse, on_output: OutputSink) -> dict[str, Any] | None:
    """A streamed `/execute`'s events: output to `on_output` as it comes, then the result
    (None if the stream ended without one)."""
    from codemode_session.sse import EventReader

    events = EventReader()
    while line := response.readline():
        found = events.feed(line.decode("utf-8", errors="replace"))
        if found is None:
            continue
        name, data = found
        if name in ("stdout", "stderr"):
            on_output(name, str(data.get("text", "")))
        elif name == "result" and isinstance(data, dict):
            return data
        elif name == "error":
            raise CodemodeError(f"/execute answered {data.get('status')}: {data.get('detail')}")
    return None


def try_execute(
    namespace: str | None,
    name: str,
    code: str,
    timeout: float | None,
    on_output: OutputSink | None = None,
) -> dict[str, Any] | None:
    """The run's answer through the remembered address, or None to take the slow path.

    None only before the code was sent: once `/execute` is on its way, its answer (or its
    error) is the call's, so code never runs twice."""
    entry = _load(namespace, name)
    if entry is None or not isinstance(entry.get("session_id"), str):
        return None
    parts = urlsplit(str(entry["url"]))
    if parts.scheme != "http" or not parts.hostname:
        return None
    conn = http.client.HTTPConnection(parts.hostname, parts.port or 80, timeout=CONNECT_TIMEOUT)
    try:
        try:
            health = _call(conn, "GET", "/health", {})
            if (health.get("state") or {}).get("state_id") != entry["state_id"]:
                raise _Miss("another session's server answers there")
        except (OSError, ValueError, _Miss, http.client.HTTPException):
            forget(namespace, name)
            return None
        headers = {
            "Authorization": f"Bearer {entry['token']}",
            "Content-Type": "application/json",
            "X-Session-ID": entry["session_id"],
        }
        conn.timeout = None  # the run takes as long as it takes (the server bounds it)
        if conn.sock is not None:
            conn.sock.settimeout(None)
        body: dict[str, Any] = {"code": code}
        if timeout is not None:
            body["timeout"] = timeout
        run_headers = headers if on_output is None else {**headers, "Accept": SSE}
        conn.request("POST", "/execute", body=json.dumps(body).encode(), headers=run_headers)
        response = conn.getresponse()
        if response.status == 401:  # refused before it ran: a token the pod no longer takes
            response.read()
            forget(namespace, name)
            return None
        streamed = response.getheader("content-type", "").startswith(SSE)
        if on_output is not None and response.status == 200 and streamed:
            found = read_events(response, on_output)
            if found is None:
                raise CodemodeError("/execute's stream ended without a result")
            result: Any = found
            data = b""
        else:
            data = response.read()
            result = json.loads(data) if data else {}
        if response.status != 200 or not isinstance(result, dict):
            text = data[:200].decode(errors="replace")
            detail = result.get("detail") if isinstance(result, dict) else text
            raise CodemodeError(f"/execute answered {response.status}: {detail}")
        return result
    finally:
        conn.close()
