"""Hostile agent code against real pods of two workspaces (issue 10, docs/architecture.md §7).

The real operator (on the host) reconciles two Workspaces and one CodeSession each on
the node cluster; code goes in through the real session client, as an agent's would.
Each attempt is a row: what was tried, what must hold, what was observed. The test
prints the table (and writes it to the report and ``hostile.txt`` under its tmp_path),
then fails listing every row that did not hold; one failing row never stops the rest.

Covered: credentials and memory of the server (environment, /proc, ptrace, files, a
service-account token), Redis without credentials and, from the host, with a
workspace's own Redis user (another workspace's keys, key-space introspection, client
tracking pushes, admin commands), storage calls naming the other workspace; storage
quotas (size, total, count, what an artifact's description or the prefix-wide deps set
add) and another workspace's writes and deps; the network (the Kubernetes API, the
kubelet, the operator, the other workspace's pod and Service, other Redis ports, ports
agent code listens on); signals to the server and its spare worker; one session per pod;
code persisted into later workers; the spare worker traced; processes outliving a
recycled worker; a worker killed between runs; resource limits, memory bombs, a flood
of brokered writes, deeply nested workflow sources, a fork bomb next to another pod.

Not covered here: HTTP fuzzing, faults of Redis, the kubelet or the operator, gVisor or
Kata runtimes, kernel exploits, and CPU starvation of other pods beyond the pod's limit.
Every address contacted is one of this cluster's pods or Services, the node's own
address (10.250.250.1; on kind also the node container's, where its API server and
kubelet listen) or loopback; every attempt is bounded by a timeout or a count.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import ipaddress
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml
from codemode_operator.sessions import Sessions
from codemode_session.client import ExecuteResult, SessionClient, SessionError

from tests.cluster import kind
from tests.cluster.layout import NODE_HOST_IP, POD_CIDR, SERVICE_CIDR
from tests.cluster.pytest_plugin import Cluster
from tests.conftest import free_port
from tests.e2e import hostredis
from tests.e2e.hostredis import Resp, RespError
from tests.k8s.operator_fixture import CRD_DIR, Kinds, OperatorProcess, install_crds, wait_for

pytestmark = pytest.mark.e2e

ADMIN_PASSWORD = "hostile-admin-secret"
WS_A, WS_B = "hostile-a", "hostile-b"  # workspace names and ids
SESSION_A, SESSION_B = "ha", "hb"
PREFIX = "codemode"
LISTEN_A, LISTEN_B = 9091, 9092
PROBE_TIMEOUT = 2.0
KUBELET_PORT = 10250
API_PORT = 6443
# Storage limits of workspace A (B has none); schema names as the operator's CRD has them.
LIMITS = {"maxArtifactBytes": 1 << 20, "maxStorageBytes": 4 << 20, "maxWorkflows": 5}
CREDENTIAL_VARS = ("REDIS_URL", "STORAGE_DIR", "CONTAINER_AUTH_TOKEN")


# ---- rows ------------------------------------------------------------------------------


@dataclass
class Row:
    id: str
    tried: str
    expected: str
    observed: str = "not run"
    held: bool = False

    def result(self, held: bool, observed: str) -> None:
        self.held, self.observed = held, " ".join(observed.split())


@dataclass
class Rows:
    rows: list[Row] = field(default_factory=list)

    @contextlib.contextmanager
    def attempt(self, id_: str, tried: str, expected: str) -> Iterator[Row]:
        """A row whose body records the outcome; an exception is the observation."""
        row = Row(id_, tried, expected)
        self.rows.append(row)
        try:
            yield row
        except Exception as exc:
            row.result(False, f"the attempt itself failed: {type(exc).__name__}: {exc}"[:400])

    def table(self) -> str:
        head = ("id", "held", "tried", "expected", "observed")
        lines = [
            (r.id, "yes" if r.held else "NO", r.tried, r.expected, r.observed[:300])
            for r in self.rows
        ]
        widths = [max(len(x[i]) for x in [head, *lines]) for i in range(4)]
        out = []
        for cells in [head, *lines]:
            fixed = "  ".join(c.ljust(w) for c, w in zip(cells[:4], widths, strict=True))
            out.append(f"{fixed}  {cells[4]}".rstrip())
        held = sum(r.held for r in self.rows)
        out.append(f"{held}/{len(self.rows)} held")
        return "\n".join(out)


# ---- agents ----------------------------------------------------------------------------


class AgentError(Exception):
    """A cell that was expected to run failed."""


@dataclass
class Agent:
    """One CodeSession as its agent sees it: cells through the session client."""

    name: str
    workspace: str
    client: SessionClient
    base_url: str
    token: str
    pod_ip: str
    service_ip: str

    def run(self, code: str, timeout: float = 20.0) -> ExecuteResult:
        return self.client.execute(code, timeout=timeout)

    def value(self, code: str, timeout: float = 20.0) -> Any:
        result = self.run(code, timeout)
        if result.error is not None:
            raise AgentError(f"{self.name}: {result.error.splitlines()[-1]}")
        return result.value

    def alive(self) -> tuple[bool, str]:
        """Whether /health answers and the session still runs code."""
        try:
            with SessionClient(self.base_url, timeout=10) as probe:
                status = probe.health().get("status")
            two = self.run("1 + 1", timeout=10)
        except Exception as exc:
            return False, f"server not answering ({type(exc).__name__}: {exc})"
        ok = status == "healthy" and two.value == 2
        return ok, f"/health {status}; next run gave {two.value!r} {two.error or ''}".strip()


def _params(**values: Any) -> str:
    """Python assignments that hand `values` to a cell."""
    return "".join(f"{k} = {v!r}\n" for k, v in values.items())


# ---- agent code ------------------------------------------------------------------------

PROC_ENVIRON = """
import os
_out = {}
for _p in os.listdir('/proc'):
    if _p.isdigit():
        try:
            _data = open(f'/proc/{_p}/environ', 'rb').read()
        except OSError as _e:
            _out[_p] = type(_e).__name__
            continue
        _out[_p] = 'LEAK' if any(n.encode() in _data for n in NEEDLES) else 'clean'
_out
"""

FILE_SCAN = """
import os
_hits, _seen = [], 0
for _top in ('/tmp', '/etc', '/run', '/var/run', '/proc/1/cwd'):
    for _root, _dirs, _files in os.walk(_top):
        for _f in _files:
            _path = os.path.join(_root, _f)
            _seen += 1
            if _seen > 4000:
                break
            try:
                if os.path.getsize(_path) > 262144:
                    continue
                _data = open(_path, 'rb').read()
            except OSError:
                continue
            if any(n.encode() in _data for n in NEEDLES):
                _hits.append(_path)
[_seen, _hits]
"""

PTRACE = """
import ctypes, os
_libc = ctypes.CDLL(None, use_errno=True)
_libc.ptrace.restype = ctypes.c_long
_libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]
_out = {}
for _name, _req in (('PTRACE_ATTACH', 16), ('PTRACE_SEIZE', 0x4206)):
    if _libc.ptrace(_req, TARGET, None, None) == 0:
        if _req == 16:  # wait for the attach stop, or the detach fails
            os.waitpid(TARGET, 0x40000000)  # __WALL
        _libc.ptrace(17, TARGET, None, None)  # PTRACE_DETACH
        _out[_name] = 'attached'
    else:
        _out[_name] = os.strerror(ctypes.get_errno())
_out
"""

PROC_FILES = """
import os
_out = {}
for _name in ('mem', 'maps', 'environ', 'fd', 'root'):
    _path = f'/proc/{TARGET}/{_name}'
    try:
        if _name in ('fd', 'root'):
            _out[_name] = 'listed %d entries' % len(os.listdir(_path))
        else:
            with open(_path, 'rb') as _f:
                _out[_name] = 'read %d bytes' % len(_f.read(4096))
    except OSError as _e:
        _out[_name] = type(_e).__name__
_out
"""

PROBE = """
import socket, concurrent.futures as _cf
def _probe(target):
    host, port, payload = target
    try:
        with socket.create_connection((host, port), timeout=TIMEOUT) as s:
            if not payload:
                return 'connected'
            s.settimeout(TIMEOUT)
            s.sendall(payload.encode())
            return 'answered ' + s.recv(80).decode(errors='replace').strip()
    except ConnectionRefusedError:
        return 'refused'
    except socket.timeout:
        return 'timeout'
    except OSError as e:
        return f'{type(e).__name__}: {e}'
with _cf.ThreadPoolExecutor(8) as _pool:
    _res = list(_pool.map(_probe, TARGETS))
_res
"""

LISTEN = """
import socket, threading
_srv = socket.create_server(('', PORT))
def _serve():
    while True:
        c, _ = _srv.accept()
        c.sendall(b'hello from agent code\\n')
        c.close()
threading.Thread(target=_serve, daemon=True).start()
with socket.create_connection(('127.0.0.1', PORT), timeout=2) as _s:
    _hello = _s.recv(64).decode().strip()
_hello
"""

PERSIST = """
import os, site
_marks = '/tmp/hostile-marks'
os.makedirs(_marks, exist_ok=True)
def _payload(tag):
    return f"open({_marks!r} + '/{tag}', 'w').write('ran')\\nSHADOW = True\\n"
_written = []
def _write(path, text):
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, 'w') as f:
            f.write(text)
        _written.append(path)
    except OSError as e:
        _written.append(f'{path}: {type(e).__name__}')
_user = site.getusersitepackages()
_write(os.path.join(_user, 'usercustomize.py'), _payload('usercustomize'))
_write(os.path.join(_user, 'sitecustomize.py'), _payload('sitecustomize'))
_write(os.path.join(_user, 'hostile.pth'),
       f"import os; open({_marks!r} + '/user-pth', 'w').write('ran')\\n")
_deps = os.environ.get('DEPS_DIR')
if _deps:
    for _mod in SHADOWS:
        _write(os.path.join(_deps, _mod + '.py'), _payload('deps-' + _mod))
    _write(os.path.join(_deps, 'hostile.pth'),
           f"import os; open({_marks!r} + '/deps-pth', 'w').write('ran')\\n")
[_deps, _written]
"""

PERSIST_CHECK = """
import importlib, os, sys
_found = {}
for _mod in SHADOWS:
    try:
        _m = importlib.import_module(_mod)
        _found[_mod] = 'SHADOW' if getattr(_m, 'SHADOW', False) else 'real'
    except ImportError:
        _found[_mod] = 'absent'
_marks = '/tmp/hostile-marks'
[sorted(os.listdir(_marks)) if os.path.isdir(_marks) else [], _found, sys.flags.no_user_site]
"""

ESCAPE = """
import os, subprocess, time
_r, _w = os.pipe()
_child = os.fork()
if _child == 0:
    os.setsid()
    if os.fork() == 0:  # in its own session, orphaned: out of the worker's process group
        os.write(_w, b'%d\\n' % os.getpid())
        os.execvp('sleep', ['sleep', '91'])
    if os.fork() == 0:  # the same, staying a copy of the worker
        os.write(_w, b'%d\\n' % os.getpid())
        time.sleep(93)
        os._exit(0)
    os._exit(0)
os.waitpid(_child, 0)
_data = b''
while _data.count(b'\\n') < 2:
    _data += os.read(_r, 64)
os.close(_r)
os.close(_w)
_pids = [int(x) for x in _data.split()]
_pids.append(subprocess.Popen(['sleep', '92'], start_new_session=True).pid)
open('/tmp/hostile-escapees', 'w').write(' '.join(map(str, _pids)))
_pids
"""

SURVIVORS = """
import os
_left = []
for _p in open('/tmp/hostile-escapees').read().split():
    try:
        _stat = open(f'/proc/{_p}/stat').read()
        _cmd = open(f'/proc/{_p}/cmdline', 'rb').read().replace(b'\\0', b' ').decode().strip()
    except OSError:
        continue
    if _stat[_stat.rfind(')') + 2] not in 'ZX':
        _left.append(f'{_p} {_cmd}')
for _p in os.listdir('/proc'):
    if _p.isdigit():
        try:
            _cmd = open(f'/proc/{_p}/cmdline', 'rb').read().replace(b'\\0', b' ').decode()
        except OSError:
            continue
        if _cmd.strip() in ('sleep 91', 'sleep 92') and not any(
                x.startswith(_p + ' ') for x in _left):
            _left.append(f'{_p} {_cmd.strip()}')
_left
"""

WORKERS = """
import os
_me, _found = os.getpid(), []
for _p in os.listdir('/proc'):
    if _p.isdigit() and int(_p) != _me:
        try:
            _cmd = open(f'/proc/{_p}/cmdline', 'rb').read()
        except OSError:
            continue
        if b'codemode_session.worker' in _cmd:
            _found.append(int(_p))
[_me, sorted(_found)]
"""

BROKER_FLOOD = """
import threading
_errors = []
def _save(i):
    try:
        artifacts.save(f'flood{i}', b'f' * (48 << 20))
    except Exception as e:
        _errors.append(type(e).__name__)
_threads = [threading.Thread(target=_save, args=(i,)) for i in range(6)]
for _t in _threads:
    _t.start()
for _t in _threads:
    _t.join()
for _i in range(6):
    try:
        artifacts.delete(f'flood{_i}')
    except Exception:
        pass
_errors
"""

RLIMITS = """
import resource
_out = {}
for _name in ('RLIMIT_NPROC', 'RLIMIT_AS', 'RLIMIT_CORE'):
    _lim = getattr(resource, _name)
    _soft, _hard = resource.getrlimit(_lim)
    _higher = resource.RLIM_INFINITY if _hard == resource.RLIM_INFINITY else _hard + 1
    try:
        resource.setrlimit(_lim, (_higher, _higher))
        _out[_name] = [_soft, _hard, 'raised to %s' % (resource.getrlimit(_lim),)]
    except (ValueError, OSError) as _e:
        _out[_name] = [_soft, _hard, type(_e).__name__]
_out
"""

DEEP_WORKFLOW = """
_src = 'async def run(x=' + '+'.join(['1'] * TERMS) + '):\\n    return x\\n'
_answer = artifacts._storage._line.call(
    {'method': 'save_workflow', 'args': {'name': f'deep{TERMS}', 'source': _src,
                                         'description': ''}})
{k: v for k, v in _answer.items() if k in ('ok', 'error_type', 'error')}
"""

MEMORY_BOMB = """
_hog = []
while True:
    _hog.append(b'\\x01' * (32 << 20))
"""

STUBBORN_MEMORY_BOMB = """
_hog, _chunk = [], 32 << 20
while True:
    try:
        _hog.append(b'\\x01' * _chunk)
    except MemoryError:
        _chunk = max(4096, _chunk // 2)
"""

FORK_BOMB = """
import os, time
_forks, _error, _deadline = 0, None, time.time() + 20
while _forks < 5000 and time.time() < _deadline:
    try:
        _pid = os.fork()
    except OSError as _e:
        _error = f'{type(_e).__name__}: {_e}'
        break
    if _pid == 0:
        time.sleep(30)
        os._exit(0)
    _forks += 1
_full_at = time.time()
while time.time() < _full_at + HOLD:  # keep the process table full
    try:
        _pid = os.fork()
    except OSError:
        time.sleep(0.01)
        continue
    if _pid == 0:
        time.sleep(30)
        os._exit(0)
    _forks += 1
{'forks': _forks, 'error': _error, 'full_at': _full_at, 'until': time.time()}
"""

SPAWN_LOOP = """
import subprocess, time
_runs, _fails, _start = 0, [], time.time()
while time.time() < _start + WINDOW and _runs < 3000:
    try:
        subprocess.run(['true'], check=True, timeout=5)
    except Exception as _e:
        _fails.append(f'{type(_e).__name__}: {_e}')
    _runs += 1
    time.sleep(0.01)
{'runs': _runs, 'failed': len(_fails), 'first': _fails[:2], 'start': _start, 'end': time.time()}
"""


# ---- the cluster side ------------------------------------------------------------------


@dataclass
class World:
    """What the attempts need to know: agents, addresses, credentials."""

    a: Agent
    b: Agent
    main_redis: hostredis.HostRedis
    other_redis: hostredis.HostRedis
    scoped: dict[str, dict[str, str]]  # workspace -> url, username, password
    limits_applied: dict[str, Any]
    limits_missing: list[str]
    kubernetes_service: str
    metrics_port: int
    core: Any
    kinds: Kinds
    namespace: str
    admin: redis.Redis

    def stored_bytes(self, workspace: str) -> int:
        """What the workspace really holds in Redis, as the admin measures it (values of
        its keys: strings, hash fields and values, set members)."""
        total = 0
        for key in self.admin.scan_iter(match=f"{PREFIX}:ws:{workspace}:*", count=1000):
            kind = self.admin.type(key)
            if kind == b"string":
                total += int(self.admin.strlen(key))
            elif kind == b"hash":
                total += sum(len(k) + len(v) for k, v in self.admin.hgetall(key).items())
            elif kind == b"set":
                total += sum(len(m) for m in self.admin.smembers(key))
        return total

    @property
    def needles(self) -> list[str]:
        """Secrets agent code must never find."""
        found = [self.a.token, self.b.token, ADMIN_PASSWORD, self.other_redis.password]
        return found + [s["password"] for s in self.scoped.values() if s.get("password")]

    def agents(self) -> tuple[Agent, Agent]:
        return self.a, self.b


@functools.cache
def _cluster_addresses() -> tuple[str, tuple[str, ...]]:
    """The node's address (its API server and kubelet) and the pod and Service ranges of
    the cluster the tests run on: the local node cluster's, or, when
    ``CODEMODE_KUBECONFIG`` names tests.cluster's kind cluster, kind's (its node
    container's address on the Docker bridge and tests/cluster/kind.yaml's ranges)."""
    if kind.targets_kind():
        return kind.node_ip(), (kind.POD_CIDR, kind.SERVICE_CIDR)
    return NODE_HOST_IP, (POD_CIDR, SERVICE_CIDR)


def _node_address() -> str:
    return _cluster_addresses()[0]


def _must_be_local(host: str) -> None:
    """The workplace rule: only this cluster's pods and Services, its node, the host's
    node address (where the tests' Redis and operator listen), loopback."""
    ip = ipaddress.ip_address(host)
    node_ip, cidrs = _cluster_addresses()
    ok = (
        ip.is_loopback
        or ip in (ipaddress.ip_address(NODE_HOST_IP), ipaddress.ip_address(node_ip))
        or any(ip in ipaddress.ip_network(cidr) for cidr in cidrs)
    )
    assert ok, f"refusing to contact {host}: not an address of the tests' cluster"


def _host_connects(host: str, port: int) -> bool:
    _must_be_local(host)
    try:
        with socket.create_connection((host, port), timeout=PROBE_TIMEOUT):
            return True
    except OSError:
        return False


def _limits_schema() -> dict[str, Any]:
    """spec.limits of the Workspace CRD the test installed (crds/, as the operator has it)."""
    crd = yaml.safe_load((CRD_DIR / "codemode.dev_workspaces.yaml").read_text())
    spec = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    return dict(spec["properties"].get("limits", {}).get("properties", {}))


def _limit_values(schema: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """LIMITS in the form the CRD takes (integers or quantities), and those it lacks."""
    values: dict[str, Any] = {}
    for name, size in LIMITS.items():
        prop = schema.get(name)
        if prop is None:
            continue
        if prop.get("type") == "integer" or name == "maxWorkflows":
            values[name] = size
        else:
            values[name] = f"{size >> 20}Mi"
    return values, [n for n in LIMITS if n not in values]


def _secret(core: Any, namespace: str, name: str) -> dict[str, str]:
    data = core.read_namespaced_secret(name, namespace).data or {}
    return {k: base64.b64decode(v).decode() for k, v in data.items()}


def _session_ready(kinds: Kinds, name: str) -> bool:
    status = kinds.status("codesessions", name)
    return status.get("phase") == "Ready" and bool(status.get("endpoint"))


# ---- the attempts ----------------------------------------------------------------------


def credentials_and_memory(rows: Rows, w: World) -> None:
    a = w.a
    with rows.attempt(
        "1.env",
        "read os.environ for credentials",
        "no REDIS_URL/STORAGE_DIR/token, no secret value",
    ) as row:
        env = a.value("import os\ndict(os.environ)")
        bad = sorted(
            k
            for k, v in env.items()
            if k in CREDENTIAL_VARS or any(n in str(v) for n in w.needles) or "redis://" in str(v)
        )
        row.result(not bad, f"{len(env)} variables; credentials: {bad or 'none'}")
    with rows.attempt(
        "1.proc1-environ", "open('/proc/1/environ') (the server's)", "PermissionError"
    ) as row:
        seen = a.value(_params(NEEDLES=w.needles) + PROC_ENVIRON)
        row.result(
            seen.get("1") in ("PermissionError", "FileNotFoundError"),
            f"/proc/1/environ: {seen.get('1')}",
        )
    with rows.attempt(
        "1.proc-environs",
        "read /proc/<pid>/environ of every process",
        "none readable holds a secret",
    ) as row:
        leaks = sorted(p for p, v in seen.items() if v == "LEAK")
        readable = sorted(p for p, v in seen.items() if v in ("clean", "LEAK"))
        row.result(not leaks, f"readable: pids {readable}; with a secret: {leaks or 'none'}")
    with rows.attempt(
        "1.files",
        "search /tmp, /etc, /run and the server's cwd for secrets",
        "no file holds a secret",
    ) as row:
        seen_files, hits = a.value(_params(NEEDLES=w.needles) + FILE_SCAN, timeout=30)
        row.result(not hits, f"{seen_files} files read; with a secret: {hits or 'none'}")
    with rows.attempt(
        "1.ptrace", "ctypes ptrace(PTRACE_ATTACH / PTRACE_SEIZE, 1)", "both fail (EPERM)"
    ) as row:
        traced = a.value(_params(TARGET=1) + PTRACE)
        row.result("attached" not in traced.values(), json.dumps(traced))
    with rows.attempt("1.proc1-mem", "read /proc/1/mem, maps, fd, root", "all refused") as row:
        files = a.value(_params(TARGET=1) + PROC_FILES)
        opened = [k for k, v in files.items() if v.startswith(("read", "listed"))]
        row.result(not opened, json.dumps(files))
    with rows.attempt("1.sa-token", "look for a service-account token", "no token file") as row:
        found = a.value(
            "import os\n[p for p in ('/var/run/secrets/kubernetes.io/serviceaccount/token',"
            " '/run/secrets/kubernetes.io/serviceaccount/token') if os.path.exists(p)]"
        )
        row.result(not found, f"token files: {found or 'none'}")
    with rows.attempt(
        "1.redis-noauth", "PING its Redis without credentials", "NOAUTH (or no connection)"
    ) as row:
        _must_be_local(NODE_HOST_IP)
        answer = a.value(
            _params(TARGETS=[(NODE_HOST_IP, w.main_redis.port, "PING\r\n")], TIMEOUT=PROBE_TIMEOUT)
            + PROBE
        )[0]
        row.result("NOAUTH" in answer or not answer.startswith("answered"), answer)
    with rows.attempt(
        "1.broker-retarget",
        "storage calls naming workspace B (retargeted storage object, raw channel call)",
        "B's artifact unreachable",
    ) as row:
        code = (
            _params(WS=WS_B) + "_st = artifacts._storage\n_own = _st.workspace_id\n_out = {}\n"
            "_st.workspace_id = WS\n"
            "try:\n    _out['load'] = repr(artifacts.load('b-secret'))\n"
            "except Exception as e:\n    _out['load'] = type(e).__name__\n"
            "_out['list'] = repr(artifacts.list())\n"
            "_out['raw'] = repr(_st._line.call({'method': 'load_artifact', 'args': "
            "{'name': 'b-secret', 'workspace_id': WS, 'workspace': WS}}))[:300]\n"
            "_st.workspace_id = _own\n_out"
        )
        out = a.value(code)
        leaked = [k for k, v in out.items() if "B-ONLY" in v]
        row.result(not leaked, f"leaked via: {leaked or 'nothing'}; load: {out.get('load')}")


def redis_as_workspace_user(rows: Rows, w: World) -> None:
    """From the host, with workspace A's own Redis user (its Secret), against B."""
    creds_a, creds_b = w.scoped[WS_A], w.scoped[WS_B]
    b_key = f"{PREFIX}:ws:{WS_B}:artifacts:b-secret"
    denials: list[tuple[str, list[str]]] = [
        ("GET B's artifact", ["GET", b_key]),
        ("HGETALL B's artifact index", ["HGETALL", f"{PREFIX}:ws:{WS_B}:artifacts:__index__"]),
        ("EXISTS B's artifact", ["EXISTS", b_key]),
        ("MEMORY USAGE of B's artifact", ["MEMORY", "USAGE", b_key]),
        ("DBSIZE", ["DBSIZE"]),
        ("KEYS *", ["KEYS", "*"]),
        ("SCAN 0", ["SCAN", "0"]),
        ("RANDOMKEY", ["RANDOMKEY"]),
        ("INFO keyspace", ["INFO", "keyspace"]),
        ("CLIENT LIST", ["CLIENT", "LIST"]),
        ("CLIENT KILL USER <B's user>", ["CLIENT", "KILL", "USER", creds_b["username"]]),
        ("ACL LIST", ["ACL", "LIST"]),
        ("CONFIG GET *", ["CONFIG", "GET", "*"]),
        ("SLOWLOG GET", ["SLOWLOG", "GET"]),
        ("PSUBSCRIBE __key*__:* (keyspace events)", ["PSUBSCRIBE", "__key*__:*"]),
        ("PUBSUB CHANNELS", ["PUBSUB", "CHANNELS"]),
        ("MONITOR", ["MONITOR"]),
        ("FLUSHALL", ["FLUSHALL"]),
    ]
    for i, (what, command) in enumerate(denials, 1):
        with rows.attempt(f"1.redis-{i:02d}", f"as A's Redis user: {what}", "NOPERM") as row:
            with Resp("127.0.0.1", w.main_redis.port) as conn:
                auth = conn.call("AUTH", creds_a["username"], creds_a["password"])
                assert auth == "OK", f"AUTH as A's user: {auth}"
                reply = conn.call(*command)
            denied = isinstance(reply, RespError) and reply.startswith("NOPERM")
            row.result(denied, repr(reply)[:200])

    for variant, extra in (("", []), (" PREFIX <B's keys>", ["PREFIX", f"{PREFIX}:ws:{WS_B}:"])):
        with rows.attempt(
            f"1.tracking{'-prefix' if extra else ''}",
            f"as A's user, HELLO 3 + CLIENT TRACKING ON BCAST{variant}, then B's agent writes",
            "no push names B's keys",
        ) as row:
            with Resp("127.0.0.1", w.main_redis.port) as conn:
                hello = conn.call("HELLO", "3", "AUTH", creds_a["username"], creds_a["password"])
                assert isinstance(hello, dict), f"HELLO 3 AUTH as A's user: {hello!r}"
                tracking = conn.call("CLIENT", "TRACKING", "ON", "BCAST", *extra)
                w.b.value(
                    "artifacts.save('tracked', {'n': 1})\n"
                    "artifacts.save('tracked', {'n': 2})\nartifacts.delete('tracked')"
                )
                pushes = conn.read_pushes(1.5)
            about_b = [p for p in pushes if f"ws:{WS_B}:" in repr(p)]
            row.result(
                not about_b,
                f"TRACKING: {tracking!r}; {len(pushes)} pushes, "
                f"{len(about_b)} about B, e.g. {about_b[:1]!r}"[:300],
            )


def storage_quotas(rows: Rows, w: World) -> None:
    a, b = w.a, w.b
    missing = (
        (f" (the Workspace CRD has no spec.limits {', '.join(w.limits_missing)}: not landed)")
        if w.limits_missing
        else ""
    )
    quota = "QuotaExceededError"
    with rows.attempt(
        "3.artifact-size",
        "artifacts.save of 2 MiB (maxArtifactBytes 1Mi)",
        "QuotaExceededError naming the limit",
    ) as row:
        result = a.run("artifacts.save('too-big', b'x' * (2 << 20))")
        last = (result.error or "saved").splitlines()[-1]
        row.result(result.error_type == quota, f"{result.error_type}: {last}{missing}")
    with rows.attempt("3.artifact-size-http", "POST /api/artifacts of 2 MiB", "HTTP 413") as row:
        try:
            a.client.save_artifact("too-big-http", b"x" * (2 << 20))
            row.result(False, f"saved{missing}")
        except SessionError as exc:
            row.result(exc.status == 413, f"{exc.status}: {exc.detail}"[:200])
    with rows.attempt(
        "3.total",
        "save 900 KiB artifacts until refused (maxStorageBytes 4Mi)",
        "refused before 4 MiB are stored",
    ) as row:
        out = a.value(
            "_saved, _err = 0, None\nfor _i in range(8):\n    try:\n"
            "        artifacts.save(f'fill{_i}', b'y' * (900 << 10))\n        _saved += 1\n"
            "    except Exception as _e:\n        _err = [type(_e).__name__, str(_e)]\n"
            "        break\n[_saved, _err]",
            timeout=60,
        )
        saved, err = out
        row.result(
            bool(err) and err[0] == quota and saved * (900 << 10) <= LIMITS["maxStorageBytes"],
            f"{saved} saved, then {err}{missing}"[:300],
        )
    with rows.attempt(
        "3.workflows", "workflows.create until refused (maxWorkflows 5)", "refused after 5"
    ) as row:
        out = a.value(
            "_made, _err = 0, None\nfor _i in range(8):\n    try:\n"
            "        workflows.create(f'hostile_w{_i}', 'async def run():\\n    return 1\\n')\n"
            "        _made += 1\n    except Exception as _e:\n"
            "        _err = [type(_e).__name__, str(_e)]\n        break\n[_made, _err]"
        )
        made, err = out
        row.result(
            bool(err) and err[0] == quota and made <= LIMITS["maxWorkflows"],
            f"{made} created, then {err}{missing}"[:300],
        )
    with rows.attempt(
        "3.description",
        "artifacts.save of empty data with an 8 MiB description, 3 times (A near its 4Mi limit)",
        "refused, or A's stored bytes stay within maxStorageBytes",
    ) as row:
        before = w.stored_bytes(WS_A)
        out = a.value(
            "_ok, _err = 0, None\nfor _i in range(3):\n    try:\n"
            "        artifacts.save(f'described{_i}', b'', description='d' * (8 << 20))\n"
            "        _ok += 1\n    except Exception as _e:\n"
            "        _err = [type(_e).__name__, str(_e)[:120]]\n        break\n[_ok, _err]",
            timeout=60,
        )
        after = w.stored_bytes(WS_A)
        a.value("for _i in range(3):\n    artifacts.delete(f'described{_i}')")
        row.result(
            after <= LIMITS["maxStorageBytes"],
            f"{out[0]} saved, then {out[1]}; A stores {before} bytes before, {after} "
            f"after (limit {LIMITS['maxStorageBytes']}){missing}",
        )
    deps_key = f"{PREFIX}:deps:deps"
    with rows.attempt(
        "3.deps",
        "A (runtime deps on) adds 3,000 200-byte specs to the deps "
        "set through the broker (no install)",
        "refused before 600 KB land outside every quota",
    ) as row:
        members_before = int(w.admin.scard(deps_key))
        out = a.value(
            "_added, _err = 0, None\nfor _i in range(3000):\n    try:\n"
            "        deps._storage.add_dep("
            "f'hostile-fill-{_i:05d}-' + 'x' * 170)\n        _added += 1\n"
            "    except Exception as _e:\n        _err = [type(_e).__name__, str(_e)[:120]]\n"
            "        break\n[_added, _err]",
            timeout=120,
        )
        grown = int(w.admin.scard(deps_key)) - members_before
        own = int(w.admin.scard(f"{PREFIX}:ws:{WS_A}:deps:deps"))
        w.admin.delete(f"{PREFIX}:ws:{WS_A}:deps:deps")
        row.result(
            grown == 0 and own < 3000 and bool(out[1]) and out[1][0] == quota,
            f"{out[0]} added, then {out[1]}; A's own set holds {own}; the prefix-wide "
            f"{deps_key} "
            f"grew by {grown} members (~{grown * 188} bytes, in no "
            "workspace's usage)",
        )
        w.admin.delete(deps_key)
    with rows.attempt(
        "1.deps-cross-tenant",
        "A (runtime deps on) removes a dep of the prefix "
        "(deps.remove) and plants one (broker add_dep); B lists its deps",
        "B's deps unchanged",
    ) as row:
        w.admin.sadd(deps_key, "b-needs-this==1.0")
        refused = a.value(
            "try:\n    deps.remove('b-needs-this==1.0')\n    _r = None\n"
            "except Exception as _e:\n    _r = type(_e).__name__\n"
            "deps._storage.add_dep('a-planted==6.6.6')\n_r"
        )
        seen = b.value("deps.list()")
        row.result(
            "b-needs-this==1.0" in seen and "a-planted==6.6.6" not in seen,
            f"A's remove: {refused or 'no error'}; B's deps.list(): {seen}",
        )
        w.admin.delete(deps_key)
    with rows.attempt(
        "3.other-workspace", "B saves 512 KiB after A filled its share", "saved and read back"
    ) as row:
        size = b.value(
            "artifacts.save('after-a', b'z' * (512 << 10))\nlen(artifacts.load('after-a'))"
        )
        row.result(size == 512 << 10, f"B read back {size} bytes")


def _listen(agent: Agent, port: int) -> str:
    try:
        return str(agent.value(_params(PORT=port) + LISTEN))
    except AgentError as exc:
        return f"cannot listen: {exc}"


def network(rows: Rows, w: World) -> None:
    a, b = w.a, w.b
    hello = "hello from agent code"
    listen_a, listen_b, listen_b53 = _listen(a, LISTEN_A), _listen(b, LISTEN_B), _listen(b, 53)
    allowed = (NODE_HOST_IP, w.main_redis.port, "PING\r\n")
    node = _node_address()  # the API server and kubelet listen there
    # id, what, from, host, port, payload, proof the target answers (None: the host tries)
    denied: list[tuple[str, str, Agent, str, int, str | None, str | None]] = [
        (
            "4.api-service",
            "the kubernetes Service (ClusterIP:443)",
            a,
            w.kubernetes_service,
            443,
            None,
            None,
        ),
        (
            "4.api-server",
            f"the API server at {node}:{API_PORT}",
            a,
            node,
            API_PORT,
            None,
            None,
        ),
        (
            "4.kubelet",
            f"the kubelet at {node}:{KUBELET_PORT}",
            a,
            node,
            KUBELET_PORT,
            None,
            None,
        ),
        (
            "4.operator",
            "the operator's metrics port (on the host)",
            a,
            NODE_HOST_IP,
            w.metrics_port,
            None,
            None,
        ),
        (
            "4.redis-other-port",
            "a Redis on another port of the Redis host",
            a,
            NODE_HOST_IP,
            w.other_redis.port,
            "PING\r\n",
            None,
        ),
        ("4.b-pod", "B's session pod IP, server port", a, b.pod_ip, 8080, None, None),
        ("4.b-service", "B's session Service", a, b.service_ip, 8080, None, None),
        ("4.a-pod", "A's session pod IP, server port (from B)", b, a.pod_ip, 8080, None, None),
        (
            "4.b-port53",
            "B's agent code listening on TCP 53 (the port DNS egress opens)",
            a,
            b.pod_ip,
            53,
            None,
            listen_b53,
        ),
        (
            "5.b-listener",
            f"B's agent code's listener (pod IP:{LISTEN_B})",
            a,
            b.pod_ip,
            LISTEN_B,
            None,
            listen_b,
        ),
        (
            "5.a-listener",
            f"A's agent code's listener (pod IP:{LISTEN_A}, from B)",
            b,
            a.pod_ip,
            LISTEN_A,
            None,
            listen_a,
        ),
    ]
    outcomes: dict[str, str] = {}
    for agent in w.agents():
        mine = [d for d in denied if d[2] is agent]
        targets = [(d[3], d[4], d[5]) for d in mine] + ([allowed] if agent is a else [])
        for host, _, _ in targets:
            _must_be_local(host)
        got = agent.value(_params(TARGETS=targets, TIMEOUT=PROBE_TIMEOUT) + PROBE, timeout=30)
        outcomes.update({d[0]: g for d, g in zip(mine, got, strict=False)})
        if agent is a:
            outcomes["allowed"] = got[-1]
    with rows.attempt(
        "4.redis-allowed", "its own Redis host and port (control)", "connects (NOAUTH)"
    ) as row:
        row.result("NOAUTH" in outcomes["allowed"], outcomes["allowed"])
    for id_, what, source, host, port, _, listener in denied:
        with rows.attempt(
            id_, f"connect from {source.name}'s agent code: {what}", "no connection"
        ) as row:
            got = outcomes[id_]
            through = got == "connected" or got.startswith("answered")
            if listener is None:  # the target must answer someone, or a refusal proves nothing
                valid = _host_connects(host, port)
                note = "" if valid else "; the host cannot reach it either: proves nothing"
            elif listener.startswith("cannot listen"):
                valid, note = True, f"; {listener}"
            else:
                valid = listener == hello
                note = f"; in its own pod the listener answers {listener!r}"
            row.result(not through and valid, f"{host}:{port}: {got}{note}")


def signals(rows: Rows, w: World) -> None:
    a = w.a
    attempts = [
        ("6.term-1", "os.kill(1, SIGTERM)", "os.kill(1, signal.SIGTERM)"),
        (
            "6.int-hup-quit-1",
            "os.kill(1, SIGINT / SIGHUP / SIGQUIT / SIGUSR1)",
            "[os.kill(1, s) for s in (signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, "
            "signal.SIGUSR1)]",
        ),
        ("6.kill-1", "os.kill(1, SIGKILL)", "os.kill(1, signal.SIGKILL)"),
        ("6.stop-1", "os.kill(1, SIGSTOP)", "os.kill(1, signal.SIGSTOP)"),
        ("6.stop-ppid", "os.kill(os.getppid(), SIGSTOP)", "os.kill(os.getppid(), signal.SIGSTOP)"),
        (
            "6.kill-all",
            "os.kill(-1, SIGKILL) (every process it may signal)",
            "os.kill(-1, signal.SIGKILL)",
        ),
    ]
    for id_, tried, call in attempts:
        with rows.attempt(id_, tried, "the session keeps answering") as row:
            sent = a.run(f"import os, signal\n{call}\n'sent'", timeout=10)
            ok, how = a.alive()
            row.result(ok, f"{sent.value or (sent.error or '').splitlines()[-1]}; {how}")
    with rows.attempt(
        "6.stop-all-reset",
        "os.kill(-1, SIGSTOP) (stops the spare worker), then /reset",
        "the session answers after the reset",
    ) as row:
        a.client.reset()
        _, spares = _other_workers(a)
        sent = a.run("import os, signal\nos.kill(-1, signal.SIGSTOP)\n'sent'", timeout=10)
        a.client.reset()
        ok, how = a.alive()
        row.result(ok, f"spares {spares}: {sent.value or sent.error}; reset done; {how}")
    with (
        rows.attempt(
            "6.second-session",
            "a second server session on A's pod: runs while A's code runs, then once A "
            "is idle (A left a setsid'd `sleep 300` and a variable behind)",
            "refused (429) while A runs; once A is idle the newcomer gets a worker only "
            "after A's whole tree is gone (its sleeper too), and A's next run gets its "
            "variables back from the saved state and says its worker was released",
        ) as row,
        SessionClient(a.base_url, token=a.token, timeout=10) as other,
    ):
        row.result(*_second_session(a, other, w.admin))


SLEEPERS = (
    "import os\n"
    "def _cmd(p):\n"
    "    try:\n"
    "        return open(f'/proc/{p}/cmdline', 'rb').read()\n"
    "    except OSError:\n"
    "        return b''\n"
    "[p for p in os.listdir('/proc') if p.isdigit() and _cmd(p) == b'sleep\\x00300\\x00']"
)


def _second_session(a: Agent, other: SessionClient, admin: Any) -> tuple[bool, str]:
    """One session's code at a time on a pod: a newcomer is refused while A runs, and
    takes the worker from an idle A only by ending everything A started. A's busy cell
    saves an artifact first, so the attempts start once A's code provably runs."""
    a.value(
        "import subprocess\n"
        "_bg = subprocess.Popen(['sleep', '300'], start_new_session=True)\n"
        "_left_behind = 42\nNone"
    )
    planted = a.value(SLEEPERS)
    outcomes: list[str] = []
    marker = f"{PREFIX}:ws:{WS_A}:artifacts:second-session-busy"
    admin.delete(marker)
    busy_cell = "artifacts.save('second-session-busy', 'x')\nimport time\ntime.sleep(6)\nNone"
    busy = threading.Thread(target=lambda: a.run(busy_cell, 30))
    busy.start()
    try:
        wait_for(lambda: admin.exists(marker) or not busy.is_alive(), 20, "A's busy cell runs")
        while busy.is_alive():
            try:
                other.create_session()
                ran = other.execute("1 + 1", timeout=10)
                outcomes.append(f"ran ({ran.value!r})" if busy.is_alive() else "late")
            except SessionError as exc:
                outcomes.append(str(exc.status))
    finally:
        busy.join()
    during = [o for o in outcomes if o != "late"]
    took = other.execute(SLEEPERS, timeout=20)
    back = a.run("_left_behind", timeout=20)
    held = (
        bool(planted)
        and bool(during)
        and all(o == "429" for o in during)
        and took.error is None
        and took.value == []
        and back.error is None
        and back.value == 42
        and back.worker_restarted
        and bool(back.state_released)
    )
    return held, (
        f"A planted sleeper(s) {planted}; while A ran: {len(during)} attempts, "
        f"{sorted(set(during))}; the newcomer then ran and saw sleepers {took.value!r} "
        f"{took.error or ''}; A's next run: {back.value!r} "
        f"{(back.error or '').splitlines()[-1:]} "
        f"worker_restarted={back.worker_restarted} state_released={back.state_released!r}"
    )


def persistence(rows: Rows, w: World) -> None:
    a = w.a
    shadows = ["requests", "fractions", "hostile_shadow"]
    for id_, how in (("7.after-reset", "reset"), ("7.after-new-session", "new session")):
        with rows.attempt(
            id_,
            "write usercustomize/sitecustomize/.pth into the user site and "
            f"requests/fractions/hostile_shadow.py + .pth into DEPS_DIR; {how}",
            "nothing runs, imports are not the shadows",
        ) as row:
            deps, written = a.value(_params(SHADOWS=shadows) + PERSIST)
            if how == "reset":
                a.client.reset()
            else:
                a.client.end_session()
            marks, found, no_user_site = a.value(_params(SHADOWS=shadows) + PERSIST_CHECK)
            shadowed = [m for m, v in found.items() if v == "SHADOW"]
            row.result(
                not marks and not shadowed,
                f"wrote {len(written)} files (DEPS_DIR={deps}); ran: {marks or 'none'}; "
                f"imports: {found}; no_user_site={no_user_site}",
            )


def _other_workers(agent: Agent) -> tuple[int, list[int]]:
    """The worker running the agent's code and the others in its pod, once the pool has
    started its spare again (it does so right after handing one out; bounded wait)."""
    me, others = agent.value(WORKERS)
    for _ in range(20):
        if others:
            break
        time.sleep(0.5)
        me, others = agent.value(WORKERS)
    return me, others


def spare_worker(rows: Rows, w: World) -> None:
    a = w.a
    with rows.attempt(
        "7.spare-worker",
        "ptrace-attach the other workers of its pod (the spare), then reset",
        "the next worker is none it could reach",
    ) as row:
        me, others = _other_workers(a)
        traced = {pid: a.value(_params(TARGET=pid) + PTRACE)["PTRACE_ATTACH"] for pid in others}
        a.client.reset()
        new, _ = a.value(WORKERS)
        row.result(
            new != me and new not in others,
            f"worker {me}, others {others}, ptrace: {traced}; next worker: {new}",
        )


def escapes(rows: Rows, w: World) -> None:
    a = w.a
    triggers: list[tuple[str, str, Callable[[], Any]]] = [
        ("8.timeout", "a run timed out", lambda: a.run("import time\ntime.sleep(30)", 2)),
        ("8.reset", "/reset", a.client.reset),
        ("8.end-session", "DELETE /sessions", a.client.end_session),
    ]
    for id_, what, trigger in triggers:
        with rows.attempt(
            id_,
            "fork+setsid+fork (sleep and a python copy) and "
            f"Popen(['sleep','92'], start_new_session=True); then {what}",
            "none of them is left",
        ) as row:
            pids = a.value(ESCAPE)
            outcome = trigger()
            left = a.value(SURVIVORS)
            note = ""
            if isinstance(outcome, ExecuteResult):
                note = (
                    f" (timed-out run: {outcome.error_type}, restarted {outcome.worker_restarted})"
                )
            row.result(not left, f"started {pids}; left: {left or 'none'}{note}")


def killed_worker(rows: Rows, w: World) -> None:
    a = w.a
    with rows.attempt(
        "9.self-kill",
        "x = 41, then os.kill(os.getpid(), 9) in a cell",
        "that run says worker_restarted",
    ) as row:
        a.value("x = 41")
        died = a.run("import os\nos.kill(os.getpid(), 9)")
        after = a.run("x")
        row.result(
            died.worker_restarted and died.error is not None,
            f"killing run: restarted={died.worker_restarted} {died.error_type}; next: "
            f"{after.error_type or after.value}",
        )
    with rows.attempt(
        "9.killed-between-runs",
        "x = 41, a subprocess SIGKILLs the worker after the run returned",
        "the next run says worker_restarted",
    ) as row:
        pid = a.value(
            "x = 41\nimport os, subprocess\n"
            "subprocess.Popen(['sh', '-c', f'sleep 0.5; kill -9 {os.getpid()}'],"
            " start_new_session=True)\nos.getpid()"
        )
        time.sleep(3)  # lets the killer act before the next run (no assertion on time)
        after = a.run("x")
        row.result(
            after.worker_restarted,
            f"worker {pid} killed; next run: restarted="
            f"{after.worker_restarted}, {after.error_type or after.value}",
        )


def resource_limits(rows: Rows, w: World) -> None:
    a = w.a
    with rows.attempt(
        "10.rlimits",
        "setrlimit above the hard limit: NPROC, AS, CORE",
        "each refused; NPROC and AS finite",
    ) as row:
        got = a.value(RLIMITS)
        raised = [k for k, v in got.items() if str(v[2]).startswith("raised")]
        infinite = [k for k in ("RLIMIT_NPROC", "RLIMIT_AS") if got[k][1] == -1]
        row.result(not raised and not infinite, json.dumps(got))
        if raised:
            a.client.reset()
    with rows.attempt(
        "10.broker-flood",
        "B (no tight limits): 6 threads save 48 MiB "
        "artifacts at once (the server holds what it brokers)",
        "the server stays up",
    ) as row:
        flood = w.b.run(BROKER_FLOOD, timeout=120)
        ok, how = w.b.alive()
        row.result(
            ok,
            f"{flood.value if flood.error is None else flood.error_type}, "
            f"restarted={flood.worker_restarted}; {how}",
        )
    for terms in (400, 100_000):
        with rows.attempt(
            f"10.deep-workflow-{terms}",
            f"raw save_workflow call whose default "
            f"is a sum of {terms:,} terms (parsed by the server)",
            "a clear error, the server stays up",
        ) as row:
            answer = a.value(_params(TERMS=terms) + DEEP_WORKFLOW, timeout=60)
            ok, how = a.alive()
            row.result(
                not answer.get("ok") and ok,
                f"{answer.get('error_type')}: {str(answer.get('error'))[:100]}; {how}",
            )
    with rows.attempt(
        "10.memory-bomb",
        "append 32 MiB blocks until it fails",
        "the run fails, the server stays up",
    ) as row:
        bomb = a.run(MEMORY_BOMB, timeout=60)
        a.client.reset()  # frees what the bomb holds
        ok, how = a.alive()
        row.result(
            bomb.error is not None and ok,
            f"{bomb.error_type}, restarted={bomb.worker_restarted}; {how}",
        )
    with rows.attempt(
        "10.memory-bomb-stubborn",
        "a memory bomb that ignores MemoryError",
        "worker restarted, the server stays up",
    ) as row:
        bomb = a.run(STUBBORN_MEMORY_BOMB, timeout=8)
        ok, how = a.alive()
        row.result(
            bomb.worker_restarted and ok,
            f"{bomb.error_type}, restarted={bomb.worker_restarted}; {how}",
        )


def fork_bomb(rows: Rows, w: World) -> None:
    a, b = w.a, w.b
    with rows.attempt(
        "2.fork-bomb",
        "fork bomb in A (held at its limit for 5 s) while B "
        "runs subprocess.run(['true']) in a loop",
        "B never fails",
    ) as row:
        uid_a, uid_b = a.value("import os\nos.getuid()"), b.value("import os\nos.getuid()")
        if uid_a == uid_b:
            row.result(
                False,
                f"both pods run as uid {uid_a}: RLIMIT_NPROC is per uid, so A's "
                "bomb would starve every pod of that uid (issue 10 case 2); "
                "not launched",
            )
            return
        spawned: dict[str, Any] = {}

        def spawn_loop() -> None:
            spawned["b"] = b.run(_params(WINDOW=12) + SPAWN_LOOP, timeout=40)

        loop = threading.Thread(target=spawn_loop)
        loop.start()
        time.sleep(1.5)  # B's loop is running before the bomb goes off
        bomb = a.run(_params(HOLD=5) + FORK_BOMB, timeout=40)
        loop.join(60)
        spawn = spawned["b"]
        assert spawn.error is None, f"B's loop: {spawn.error}"
        assert bomb.error is None, f"the bomb: {bomb.error}"
        bv, sv = bomb.value, spawn.value
        overlapped = sv["start"] <= bv["full_at"] and sv["end"] >= bv["until"]
        ok, how = a.alive()
        row.result(
            sv["failed"] == 0 and bool(bv["error"]) and overlapped and ok,
            f"uids {uid_a}/{uid_b}; A forked {bv['forks']} then {bv['error']}; B ran "
            f"{sv['runs']} times, {sv['failed']} failed {sv['first']}; windows "
            f"overlapped: {overlapped}; A afterwards: {how}",
        )


def usage_reported(rows: Rows, w: World) -> None:
    with rows.attempt(
        "3.usage",
        "read Workspace A's status.usage after the quota attempts",
        "5 workflows, at least the 4 artifacts kept",
    ) as row:
        usage: dict[str, Any] = {}
        for _ in range(120):  # the operator refreshes usage every 30 s (bounded wait)
            usage = dict(w.kinds.status("workspaces", WS_A).get("usage") or {})
            if usage.get("workflows") == LIMITS["maxWorkflows"]:
                break
            time.sleep(0.5)
        row.result(
            usage.get("workflows") == LIMITS["maxWorkflows"]
            and int(usage.get("storageBytes", 0)) >= 4 * (900 << 10),
            f"usage {usage}",
        )


def server_never_restarted(rows: Rows, w: World) -> None:
    with rows.attempt(
        "6.no-restart", "after everything: the session containers", "never restarted"
    ) as row:
        counts = {}
        for agent in w.agents():
            pod = w.core.read_namespaced_pod(f"{agent.name}-session", w.namespace)
            counts[agent.name] = sum(s.restart_count for s in pod.status.container_statuses)
        row.result(not any(counts.values()), f"restart counts {counts}")


GROUPS: list[Callable[[Rows, World], None]] = [
    credentials_and_memory,
    redis_as_workspace_user,
    network,
    storage_quotas,
    persistence,
    spare_worker,
    escapes,
    killed_worker,
    signals,
    resource_limits,
    fork_bomb,
    usage_reported,
    server_never_restarted,
]


# ---- the test --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def redis_pair() -> Iterator[tuple[hostredis.HostRedis, hostredis.HostRedis]]:
    """The workspaces' Redis, and another one on the same host (no session may reach it)."""
    with (
        hostredis.host_redis(ADMIN_PASSWORD) as main,
        hostredis.host_redis("hostile-other-secret") as other,
    ):
        yield main, other


def _agent(
    sessions: Sessions, stack: contextlib.ExitStack, core: Any, ns: str, name: str, workspace: str
) -> Agent:
    conn = stack.enter_context(sessions.connect(name))
    bounded = stack.enter_context(SessionClient(conn.base_url, token=conn.token, timeout=90))
    pod = core.read_namespaced_pod(f"{name}-session", ns)
    svc = core.read_namespaced_service(f"{name}-session", ns)
    return Agent(
        name,
        workspace,
        bounded,
        conn.base_url,
        conn.token or "",
        pod.status.pod_ip,
        svc.spec.cluster_ip,
    )


def test_hostile_code(
    cluster: Cluster,
    namespace: str,
    project_images: dict[str, str],
    redis_pair: tuple[hostredis.HostRedis, hostredis.HostRedis],
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    main_redis, other_redis = redis_pair
    api = cluster.api_client()
    install_crds(cluster.kubeconfig, api)
    kinds = Kinds(api, namespace)
    core: Any = kinds.core
    core.create_namespaced_secret(
        namespace, {"metadata": {"name": "redis-admin"}, "stringData": {"url": main_redis.url}}
    )
    limits, missing = _limit_values(_limits_schema())
    metrics_port = free_port()
    operator = OperatorProcess(
        cluster.kubeconfig,
        [namespace],
        log_dir=tmp_path,
        env={
            "CODEMODE_SESSION_IMAGE": project_images["session"],
            "METRICS_PORT": str(metrics_port),
        },
    )
    rows = Rows()
    started = time.monotonic()
    with operator, contextlib.ExitStack() as stack:
        for ws, ws_limits, deps in ((WS_A, limits, True), (WS_B, {}, False)):
            kinds.create(
                "workspaces",
                ws,
                {
                    "redis": {"urlSecretRef": {"name": "redis-admin", "key": "url"}},
                    "sessionDefaults": {"allowRuntimeDeps": deps},
                    "limits": ws_limits,
                    "deletionPolicy": "Cascade",
                    "dataPolicy": "Delete",
                },
            )
        for name, ws in ((SESSION_A, WS_A), (SESSION_B, WS_B)):
            kinds.create("codesessions", name, {"workspaceRef": ws})
        for name in (SESSION_A, SESSION_B):
            wait_for(
                lambda n=name: _session_ready(kinds, n),
                180,  # type: ignore[misc]
                f"session {name} Ready",
                op=operator,
            )
        scoped = {ws: _secret(core, namespace, f"{ws}-redis") for ws in (WS_A, WS_B)}
        sessions = Sessions(namespace=namespace, api=api)
        stack.callback(sessions.close)
        world = World(
            a=_agent(sessions, stack, core, namespace, SESSION_A, WS_A),
            b=_agent(sessions, stack, core, namespace, SESSION_B, WS_B),
            main_redis=main_redis,
            other_redis=other_redis,
            scoped=scoped,
            limits_applied=limits,
            limits_missing=missing,
            kubernetes_service=core.read_namespaced_service(
                "kubernetes", "default"
            ).spec.cluster_ip,
            metrics_port=metrics_port,
            core=core,
            kinds=kinds,
            namespace=namespace,
            admin=stack.enter_context(
                redis.Redis(port=main_redis.port, password=ADMIN_PASSWORD, socket_timeout=10)
            ),
        )
        world.b.value("artifacts.save('b-secret', 'B-ONLY-data')")
        setup = time.monotonic() - started

        for group in GROUPS:
            group(rows, world)

    table = rows.table()
    took = time.monotonic() - started
    report = (
        f"hostile-code suite: {len(rows.rows)} attempts, setup {setup:.0f} s, "
        f"total {took:.0f} s\n{table}\n"
    )
    print("\n" + report)
    logs = "".join(
        f"\n===== {name}-session log =====\n"
        + core.read_namespaced_pod_log(f"{name}-session", namespace, tail_lines=400)
        for name in (SESSION_A, SESSION_B)
    )
    (tmp_path / "hostile.txt").write_text(report + logs)
    request.node.add_report_section("call", "hostile-code attempts", report)
    failed = [f"{r.id}: {r.observed[:200]}" for r in rows.rows if not r.held]
    assert not failed, f"{len(failed)} attempts did not hold:\n" + "\n".join(failed)
