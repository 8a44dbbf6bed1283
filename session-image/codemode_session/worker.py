"""A worker process: one session's interpreter, run as `python -m codemode_session.worker FD
STORAGE_FD` (its channel to the server, and its storage line).

It imports everything first (so pooled spares start fast), limits itself,
then waits for `init` naming its workspace, and serves `exec` requests on the
socket it inherited. It never exits on agent errors; the server kills and
replaces it on timeout, crash or reset.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import signal
import socket
import sys
from pathlib import Path
from typing import Any

from codemode_session import protocol, snapshot
from codemode_session.channel import StorageLine, WorkerChannel
from codemode_session.limits import apply_worker_limits, leave_pids_cgroup, pids_cgroup_dir
from codemode_session.names import validate_workspace_id
from codemode_session.namespaces import (
    ArtifactsNamespace,
    DepsNamespace,
    ToolsNamespace,
    WorkflowsNamespace,
)
from codemode_session.output_stream import OutputStreamer
from codemode_session.results import failed_run
from codemode_session.runner import CellRunner
from codemode_session.server.config import WorkerConfig
from codemode_session.storage.brokered import BrokeredStorage


def build_namespace(
    workspace_id: str | None, line: StorageLine, config: WorkerConfig
) -> dict[str, Any]:
    """The globals agent code starts with; their storage is the server's, by call."""
    storage = BrokeredStorage(line, config.storage_prefix, validate_workspace_id(workspace_id))
    deps_dir = config.deps_dir
    tools = ToolsNamespace(storage, config.tools_path)
    artifacts = ArtifactsNamespace(storage)

    def install(specs: list[str]) -> None:
        storage.install_deps(specs)
        if deps_dir and deps_dir not in sys.path:
            sys.path.insert(0, deps_dir)
        importlib.invalidate_caches()

    deps = DepsNamespace(storage, config.allow_runtime_deps, install)

    def workflow_globals() -> dict[str, Any]:
        return {
            "tools": tools,
            "workflows": workflows,
            "skills": workflows,  # py-code-mode's skills-era name for the same recipes
            "artifacts": artifacts,
            "deps": deps,
            "__builtins__": __builtins__,
        }

    workflows = WorkflowsNamespace(storage, workflow_globals)
    namespace = workflow_globals()
    namespace["__name__"] = "__main__"
    return namespace


# The names every namespace starts with that a snapshot refers to instead of copying.
STARTING_NAMES = ("tools", "workflows", "skills", "artifacts", "deps")


class SessionState:
    """The interpreter of one session and its snapshots (taken here, in the sandbox)."""

    def __init__(self, namespace: dict[str, Any], output_limit: int, max_bytes: int) -> None:
        self.runner = CellRunner(namespace, output_limit)
        self.namespace = namespace
        self.starting = {name: namespace[name] for name in STARTING_NAMES}
        self.max_bytes = max_bytes
        self.snapshots = False
        self._last_digest: str | None = None

    def snapshot(self, force: bool = False) -> tuple[dict[str, Any], bytes | None]:
        """A summary of the namespace's snapshot, and its bytes when they changed since
        the last one sent (or `force`)."""
        try:
            taken = snapshot.take(self.namespace, self.starting)
        except Exception as exc:  # never lose the run's reply over its snapshot
            return {"error": f"{type(exc).__name__}: {exc}"[:300]}, None
        summary = taken.summary()
        if len(taken.blob) > self.max_bytes:
            summary["error"] = (
                f"the snapshot is {len(taken.blob)} bytes; SNAPSHOT_MAX_BYTES is "
                f"{self.max_bytes}: the state after this run was not saved"
            )
            return summary, None
        changed = force or taken.digest != self._last_digest
        summary["changed"] = changed
        if not changed:
            return summary, None
        self._last_digest = taken.digest
        return summary, taken.blob

    def restore(self, blob: bytes) -> dict[str, Any]:
        restored = snapshot.restore(self.namespace, self.starting, blob)
        self._last_digest = None  # the next snapshot is sent whatever it holds
        return restored.summary()


_forked = False


def _note_fork() -> None:
    global _forked
    _forked = True


def _session_of(pid: str) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rfind(")") + 2 :].split()
    return int(fields[3]) if len(fields) > 3 else None


def stop_forked_copies() -> int:
    """SIGKILL every forked copy of this worker (same command line, same session or cgroup).

    A cell may fork (os.fork, a fork bomb, multiprocessing); those copies must not
    outlive the cell, or they would keep burning the pids budget and CPU. Programs
    started with subprocess (fork + exec) have another command line and are left alone.
    """
    me = os.getpid()
    session = os.getsid(0)
    cgroup = pids_cgroup_dir(me)
    try:
        cmdline = Path(f"/proc/{me}/cmdline").read_bytes()
    except OSError:
        return 0
    stopped = 0
    for _ in range(1000):
        members: set[str] = set()
        if cgroup is not None:  # copies that called setsid() are still in our cgroup
            with contextlib.suppress(OSError):
                members = set((cgroup / "cgroup.procs").read_text().split())
        found = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit() or int(entry) == me:
                continue
            if entry not in members and _session_of(entry) != session:
                continue
            try:
                if Path(f"/proc/{entry}/cmdline").read_bytes() == cmdline:
                    found.append(int(entry))
            except OSError:
                continue
        if not found:
            break
        for pid in found:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        for pid in found:  # reap our own children; others go to their reaper
            with contextlib.suppress(OSError):
                os.waitpid(pid, 0)
        stopped += len(found)
    return stopped


_running = False  # a cell is running: SIGINT (a cancelled streamed run) interrupts it
_line: StorageLine | None = None


def _interrupt(_signum: int, _frame: Any) -> None:
    """SIGINT raises KeyboardInterrupt in the running cell, and is ignored between runs
    (it must not end the worker and the session's state with it). In the middle of a
    storage call it waits for the call's answer (see StorageLine.defer_interrupt)."""
    if _running and not (_line is not None and _line.defer_interrupt()):
        raise KeyboardInterrupt


def serve(channel: WorkerChannel, line: StorageLine, config: WorkerConfig) -> None:
    global _forked, _running, _line
    _line = line
    main_pid = os.getpid()
    os.register_at_fork(after_in_parent=_note_fork)
    signal.signal(signal.SIGINT, _interrupt)
    state: SessionState | None = None
    streamer: OutputStreamer | None = None
    while True:
        try:
            request = channel.next_request()
        except (protocol.ProtocolError, OSError):
            return
        op = request.get("op")
        blob: bytes | None = None
        if op == "init":
            try:
                state = SessionState(
                    build_namespace(request.get("workspace_id"), line, config),
                    config.output_limit_bytes,
                    config.snapshot_max_bytes,
                )
                state.snapshots = bool(request.get("snapshots"))
                reply: dict[str, Any] = {"ok": True}
            except Exception as exc:
                reply = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        elif op == "exec" and state is not None:
            cwd = request.get("cwd")
            if isinstance(cwd, str):  # a new worker's first run: the session's folder
                with contextlib.suppress(OSError):
                    os.chdir(cwd)
            sink = None
            if request.get("stream"):
                if streamer is None:
                    streamer = OutputStreamer(channel)
                streamer.start()
                sink = streamer.write
            _running = True
            try:
                reply = state.runner.run(str(request.get("code", "")), sink)
            finally:
                _running = False
                if sink is not None and streamer is not None:
                    streamer.finish()  # every piece of output goes before the reply
            if os.getpid() != main_pid:
                # A copy made by os.fork() in the cell finished the cell: it must not
                # answer on the shared channel (the worker itself does).
                os._exit(0)
            if _forked:
                _forked = False
                stop_forked_copies()
            if state.snapshots:
                reply["snapshot"], blob = state.snapshot(bool(request.get("force_snapshot")))
        elif op == "snapshot" and state is not None:
            reply, blob = state.snapshot(force=True)
            reply["ok"] = "error" not in reply
        elif op == "restore" and state is not None:
            found = request.get("blob")
            reply = state.restore(found) if isinstance(found, bytes) else {"restored": []}
            reply["ok"] = True
        elif op == "ping":
            reply = {"ok": True}
        else:
            reply = {"ok": False, "error": f"unexpected request {op!r}"}
        reply["seq"] = request.get("seq")
        with channel.sending():
            protocol.send_parts(channel.sock, _frame(reply, blob))


def _frame(reply: dict[str, Any], blob: bytes | None = None) -> list[bytes]:
    """The reply as a frame; a reply JSON cannot carry becomes an error, never an exit
    (an exit would throw the session's state away)."""
    try:
        return protocol.encode_parts(reply, blob)
    except (TypeError, ValueError, RecursionError) as exc:
        failed = failed_run("ResultError", f"the result could not be sent as JSON: {exc}")
        return protocol.encode_parts({**failed, "seq": reply.get("seq")})


def main() -> None:
    run(socket.socket(fileno=int(sys.argv[1])), socket.socket(fileno=int(sys.argv[2])))


def run(sock: socket.socket, storage: socket.socket) -> None:
    """A worker's life on its channel: in a process of its own (`main`) or in a copy of
    the worker template (codemode_session.template), after the fork."""
    # Secrets of the server are not the agent's business (the server strips them too).
    for name in ("CONTAINER_AUTH_TOKEN", "REDIS_URL", "STORAGE_DIR"):
        os.environ.pop(name, None)
    config = WorkerConfig.from_env(os.environ)
    if config.deps_dir and config.deps_dir not in sys.path:
        sys.path.insert(0, config.deps_dir)
    importlib.invalidate_caches()  # a template's finders may predate packages added since
    apply_worker_limits(memory_mb=config.memory_mb, max_processes=config.max_processes)
    try:
        channel = WorkerChannel(sock)
        channel.send({"ok": True, "pid": os.getpid()})
        serve(channel, StorageLine(storage), config)
    except OSError:
        pass  # the server went away
    finally:
        leave_pids_cgroup()


if __name__ == "__main__":
    main()
