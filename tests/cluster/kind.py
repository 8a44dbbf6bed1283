"""``python -m tests.cluster kind up|down|env|status``: kind on Docker, with the
node image built here (``kind_images``) because no registry is reachable.

``up`` installs Debian's docker.io if ``dockerd`` is missing, starts a dockerd
of its own, builds kind and the node image (cached), loads the node image and
the base, Redis and pause images into Docker, creates the cluster from
``tests/cluster/kind.yaml`` and makes the host reach it the way the local node
cluster is reached: routes to the pod and Service ranges through the kind
node, and ``NODE_HOST_IP`` on ``lo`` for pods to reach the host.

``down`` deletes the cluster, stops that dockerd and undoes what ``up`` did to
the host: Docker's iptables chains and rules, its bridges, the routes, the
``lo`` address (unless the local node cluster is running and uses it) and the
``ip_forward`` value. Docker's images (``/var/lib/docker``) are kept.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import time
from pathlib import Path

from . import hostdeps, images, kind_images, lo_address, locks, paths, procs
from .layout import NODE_HOST_IP
from .tools import tools_dir

CLUSTER = "codemode"
CONFIG = Path(__file__).resolve().parent / "kind.yaml"
# tests/cluster/kind.yaml's ranges: apart from the local node cluster's
# (10.244.0.0/24, 10.96.0.0/16), so both can run at once with host routes.
POD_CIDR = "10.245.0.0/16"
SERVICE_CIDR = "10.97.0.0/16"
IP_FORWARD = Path("/proc/sys/net/ipv4/ip_forward")

# A runc in front of runc: drops from each container's capability sets those the
# host's bounding set lacks. Docker gives ``--privileged`` containers (every kind
# node) all capabilities the kernel knows; in a VM whose bounding set is smaller
# (CAP_SYS_RESOURCE is missing here), runc then fails with "unable to apply caps:
# operation not permitted".
RUNC_WRAPPER = r'''#!/usr/bin/python3
"""runc, minus the capabilities this host's bounding set lacks (tests/cluster/kind.py)."""
import json, os, sys

NAMES = (
    "CHOWN DAC_OVERRIDE DAC_READ_SEARCH FOWNER FSETID KILL SETGID SETUID SETPCAP "
    "LINUX_IMMUTABLE NET_BIND_SERVICE NET_BROADCAST NET_ADMIN NET_RAW IPC_LOCK IPC_OWNER "
    "SYS_MODULE SYS_RAWIO SYS_CHROOT SYS_PTRACE SYS_PACCT SYS_ADMIN SYS_BOOT SYS_NICE "
    "SYS_RESOURCE SYS_TIME SYS_TTY_CONFIG MKNOD LEASE AUDIT_WRITE AUDIT_CONTROL SETFCAP "
    "MAC_OVERRIDE MAC_ADMIN SYSLOG WAKE_ALARM BLOCK_SUSPEND AUDIT_READ PERFMON BPF "
    "CHECKPOINT_RESTORE"
).split()


def allowed():
    with open("/proc/self/status") as f:
        mask = next(int(l.split()[1], 16) for l in f if l.startswith("CapBnd:"))
    return {"CAP_" + n for i, n in enumerate(NAMES) if mask >> i & 1}


def strip(path, nested):
    with open(path) as f:
        doc = json.load(f)
    caps = (doc.get("process") or {}) if nested else doc
    caps = caps.get("capabilities") or {}
    keep = allowed()
    changed = False
    for kind, names in caps.items():
        if isinstance(names, list):
            kept = [c for c in names if c in keep]
            changed = changed or kept != names
            caps[kind] = kept
    if changed:
        with open(path, "w") as f:
            json.dump(doc, f)


args = sys.argv[1:]


def flag(*names):
    for i, a in enumerate(args):
        for n in names:
            if a == n and i + 1 < len(args):
                return args[i + 1]
            if a.startswith(n + "="):
                return a.split("=", 1)[1]
    return None


cmd = next((a for a in args if a in ("create", "run", "exec")), None)
if cmd in ("create", "run"):
    strip(os.path.join(flag("--bundle", "-b") or ".", "config.json"), True)
elif cmd == "exec" and flag("--process", "-p"):
    strip(flag("--process", "-p"), False)
os.execv(RUNC, ["runc", *args])
'''


def run_dir() -> Path:
    return paths.run_dir("kind")


def kubeconfig() -> Path:
    return run_dir() / "kubeconfig"


def _state_file() -> Path:
    return run_dir() / "host-state.json"


def _sh(*cmd: str, check: bool = False) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, check=check)


def kind_binary() -> Path:
    return kind_images.binary("kind")


def tools() -> Path:
    """The cache's tool folder (kubectl, helm) with kind linked in too."""
    folder = tools_dir()
    link = folder / "kind"
    if not (link.is_symlink() and link.resolve() == kind_binary().resolve()):
        link.unlink(missing_ok=True)
        link.symlink_to(kind_binary())
    return folder


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{tools()}:{env.get('PATH', '')}"
    env["KUBECONFIG"] = str(kubeconfig())
    return env


def shell_env() -> str:
    folder = shlex.quote(str(tools()))
    return f'export KUBECONFIG={shlex.quote(str(kubeconfig()))}\nexport PATH={folder}:"$PATH"'


# ---- docker ---------------------------------------------------------------------


def install_docker() -> None:
    """Debian's docker.io, without letting its package scripts start a daemon."""
    if shutil.which("dockerd"):
        return
    policy = Path("/usr/sbin/policy-rc.d")
    added = not policy.exists()
    if added:
        policy.write_text("#!/bin/sh\nexit 101\n")
        policy.chmod(0o755)
    try:
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-q"], check=True, env=env)
        subprocess.run(["apt-get", "install", "-y", "-q", "docker.io"], check=True, env=env)
    finally:
        if added:
            policy.unlink()


def docker_ok() -> bool:
    if shutil.which("docker") is None:
        return False
    return _sh("docker", "version", "--format", "{{.Server.Version}}").returncode == 0


def _daemon_config() -> Path:
    wrapper = run_dir() / "runc-wrapper"
    runc = shutil.which("runc") or "/usr/sbin/runc"
    wrapper.write_text(RUNC_WRAPPER.replace("os.execv(RUNC,", f"os.execv({runc!r},"))
    wrapper.chmod(0o755)
    cfg = run_dir() / "daemon.json"
    cfg.write_text(
        json.dumps(
            {
                # Docker sets the FORWARD policy to DROP when it turns ip_forward on
                # itself; we turn it on (and back) instead, so the policy stays.
                "ip-forward": False,
                "storage-driver": "overlay2",
                "runtimes": {"codemode-runc": {"path": str(wrapper)}},
                "default-runtime": "codemode-runc",
            },
            indent=2,
        )
    )
    return cfg


def start_docker() -> None:
    """Our own dockerd (and the containerd it starts at /run/docker/containerd,
    apart from the local cluster's at /run/codemode/containerd)."""
    if docker_ok():
        return
    run_dir().mkdir(parents=True, exist_ok=True)
    IP_FORWARD.write_text("1\n")
    procs.start(run_dir(), "dockerd", ["dockerd", f"--config-file={_daemon_config()}"])
    deadline = time.monotonic() + 60
    while not docker_ok():
        if procs.running_pid(run_dir(), "dockerd") is None or time.monotonic() > deadline:
            log = run_dir() / "logs" / "dockerd.log"
            tail = log.read_text()[-2000:] if log.exists() else ""
            raise RuntimeError(f"dockerd did not start; {log}:\n{tail}")
        time.sleep(0.5)


def stop_docker() -> None:
    pid = procs.running_pid(run_dir(), "dockerd")
    if pid is None:
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 60
    while procs.running_pid(run_dir(), "dockerd") is not None and time.monotonic() < deadline:
        time.sleep(0.5)
    if procs.running_pid(run_dir(), "dockerd") is not None:
        os.kill(pid, signal.SIGKILL)
    procs.pid_file(run_dir(), "dockerd").unlink(missing_ok=True)


def _image_id(tag: str) -> str:
    return _sh("docker", "image", "inspect", "--format", "{{.Id}}", tag).stdout.strip()


def _archive_config_id(archive: Path, tag: str) -> str:
    import tarfile

    with tarfile.open(archive) as tar:
        f = tar.extractfile("manifest.json")
        assert f is not None
        for entry in json.load(f):
            if tag in (entry.get("RepoTags") or []):
                return "sha256:" + str(entry["Config"]).removesuffix(".json")
    return ""


def load_images() -> None:
    """The node image, and the images the README's docker builds and the chart use."""
    node = kind_images.node_archive()
    base = kind_images.base_archive()
    for archive, tag in ((node, kind_images.node_tag()), (base, kind_images.base_tag())):
        if _image_id(tag) != _archive_config_id(archive, tag):
            _load(archive)
    hostdeps.install("node")
    for archive in images.build_defaults():  # pause, the Debian base, Redis (buildah)
        tag = {
            images.archive_path(images.PAUSE): images.PAUSE,
            images.archive_path(images.BASE): images.BASE,
            images.archive_path(images.REDIS): images.REDIS,
        }[archive]
        if not _image_id(tag):
            _load(archive)


def _load(archive: Path) -> None:
    start = time.monotonic()
    subprocess.run(["docker", "load", "-q", "-i", str(archive)], check=True)
    print(f"docker load {archive.name} in {time.monotonic() - start:.0f}s", flush=True)


# ---- cluster --------------------------------------------------------------------


def cluster_exists() -> bool:
    if not kind_binary().exists() or not docker_ok():
        return False
    out = _sh(str(kind_binary()), "get", "clusters").stdout.split()
    return CLUSTER in out


def node_container() -> str:
    return f"{CLUSTER}-control-plane"


def node_ip() -> str:
    return _sh(
        "docker",
        "inspect",
        "--format",
        "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
        node_container(),
    ).stdout.strip()


def host_address() -> str:
    """The host's source address toward kind's pods (its address on the Docker bridge):
    the host is not the node, so session pods' NetworkPolicy sees it as this address,
    not as node-local traffic. The tests' operator admits it (SESSION_INGRESS_CIDRS)."""
    first_pod = POD_CIDR.split("/")[0].rsplit(".", 1)[0] + ".1"
    words = _sh("ip", "-o", "route", "get", first_pod, check=True).stdout.split()
    return words[words.index("src") + 1]


def targets_kind(kubeconfig_path: str | os.PathLike[str] | None = None) -> bool:
    """Whether tests run against this tooling's kind cluster: the kubeconfig
    (default: ``$CODEMODE_KUBECONFIG``) has kind's context for ``CLUSTER`` as its
    current one (``kind export kubeconfig`` and ``kind get kubeconfig`` both name it so)."""
    import yaml

    path = kubeconfig_path or os.environ.get("CODEMODE_KUBECONFIG")
    if not path:
        return False
    try:
        cfg = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError):
        return False
    return isinstance(cfg, dict) and cfg.get("current-context") == f"kind-{CLUSTER}"


def node_exec(*argv: str, check: bool = True, timeout: float = 120) -> str:
    """``docker exec`` in the kind node, where systemd, containerd and the kubelet run
    (its own PID namespace: PIDs here are the node's). Returns stdout."""
    proc = subprocess.run(
        ["docker", "exec", node_container(), *argv],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check and proc.returncode != 0:
        raise RuntimeError(
            f"docker exec {node_container()} {' '.join(argv)}: "
            f"exit {proc.returncode}: {proc.stderr.strip()}"
        )
    return proc.stdout


def _record_host_state() -> None:
    if _state_file().exists():
        return
    addrs = _sh("ip", "-o", "addr", "show", "dev", "lo").stdout
    policy = next(
        (
            line.split()[2]
            for line in _sh("iptables", "-S", "FORWARD").stdout.splitlines()
            if line.startswith("-P FORWARD")
        ),
        "ACCEPT",
    )
    state = {
        "ip_forward": IP_FORWARD.read_text().strip(),
        "forward_policy": policy,
        "lo_ip_added": f" {NODE_HOST_IP}/" not in addrs,
    }
    run_dir().mkdir(parents=True, exist_ok=True)
    _state_file().write_text(json.dumps(state, indent=2) + "\n")


def _host_routes(add: bool) -> None:
    ip = node_ip() if add else ""
    for cidr in (POD_CIDR, SERVICE_CIDR):
        if add:
            _sh("ip", "route", "replace", cidr, "via", ip, check=True)
        else:
            _sh("ip", "route", "del", cidr)


def up() -> float:
    """Everything up to a ready cluster; returns seconds taken (0.0 if it was up)."""
    start = time.monotonic()
    with locks.locked("kind"):
        if cluster_exists() and docker_ok() and _ready():
            _host_routes(add=True)
            return 0.0
        install_docker()
        hostdeps.install("node")  # debootstrap, containerd/ctr, iptables, buildah
        kind_images.build_binaries()
        kind_images.node_archive()
        _record_host_state()
        start_docker()
        load_images()
        if not cluster_exists():
            t = time.monotonic()
            subprocess.run(
                [
                    str(kind_binary()),
                    "create",
                    "cluster",
                    f"--config={CONFIG}",
                    f"--kubeconfig={kubeconfig()}",
                    "--wait=3m",
                ],
                check=True,
                env=_env(),
            )
            print(f"kind create cluster in {time.monotonic() - t:.0f}s", flush=True)
        else:
            subprocess.run(
                [
                    str(kind_binary()),
                    "export",
                    "kubeconfig",
                    f"--name={CLUSTER}",
                    f"--kubeconfig={kubeconfig()}",
                ],
                check=True,
            )
        state = json.loads(_state_file().read_text())
        if state["lo_ip_added"]:
            _sh("ip", "addr", "replace", f"{NODE_HOST_IP}/32", "dev", "lo")
        _host_routes(add=True)
        _wait_system_ready()
    return time.monotonic() - start


def _kubectl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(paths.binary("kubectl")), f"--kubeconfig={kubeconfig()}", *args],
        capture_output=True,
        text=True,
    )


def _ready() -> bool:
    return _kubectl("get", "--raw=/readyz").returncode == 0


def _wait_system_ready(timeout: float = 300) -> None:
    """The node, CoreDNS, the CNI/NetworkPolicy DaemonSet and the provisioner."""
    checks = [
        ("wait", "--for=condition=Ready", "node", "--all"),
        ("-n", "kube-system", "rollout", "status", "daemonset/codemode-cni"),
        ("-n", "kube-system", "rollout", "status", "deployment/coredns"),
        ("-n", "local-path-storage", "rollout", "status", "deployment/local-path-provisioner"),
    ]
    deadline = time.monotonic() + timeout
    for check in checks:
        while True:
            left = max(1, int(deadline - time.monotonic()))
            proc = _kubectl(*check, f"--timeout={left}s")
            if proc.returncode == 0:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"kind cluster not ready: kubectl {' '.join(check)}: {proc.stderr}"
                )
            time.sleep(2)


def _node_cluster_running() -> bool:
    return procs.running_pid(paths.run_dir("node"), "kube-apiserver") is not None


DOCKER_CHAINS = {
    "filter": ("DOCKER", "DOCKER-USER", "DOCKER-ISOLATION-STAGE-1", "DOCKER-ISOLATION-STAGE-2"),
    "nat": ("DOCKER",),
}


def _remove_docker_iptables() -> None:
    """dockerd leaves its chains and rules behind when it stops; remove every rule
    that names a Docker chain or bridge, then the chains."""
    for table, chains in DOCKER_CHAINS.items():
        rules = _sh("iptables", "-t", table, "-S").stdout.splitlines()
        for rule in rules:
            words = rule.split()
            if len(words) < 3 or words[0] != "-A" or words[1] in chains:
                continue
            dockerish = any(w in chains for w in words[2:]) or any(
                w in ("docker0",) or w.startswith("br-") for w in words[2:]
            )
            if dockerish:
                _sh("iptables", "-t", table, "-D", *words[1:])
        for chain in chains:
            _sh("iptables", "-t", table, "-F", chain)
        for chain in chains:
            _sh("iptables", "-t", table, "-X", chain)


def _docker_bridges() -> list[str]:
    out = _sh("ip", "-o", "link", "show", "type", "bridge").stdout
    names = [line.split(":")[1].strip().split("@")[0] for line in out.splitlines() if ":" in line]
    return [n for n in names if n == "docker0" or n.startswith("br-")]


def down() -> None:
    with locks.locked("kind"):
        if docker_ok() and kind_binary().exists() and cluster_exists():
            subprocess.run(
                [str(kind_binary()), "delete", "cluster", f"--name={CLUSTER}"],
                check=False,
                env=_env(),
            )
        _host_routes(add=False)
        ours = procs.running_pid(run_dir(), "dockerd") is not None
        stop_docker()
        if not _state_file().exists():
            return
        state = json.loads(_state_file().read_text())
        if ours:
            _remove_docker_iptables()
            for bridge in _docker_bridges():
                _sh("ip", "link", "del", bridge)
        _sh("iptables", "-P", "FORWARD", state["forward_policy"])
        if not _node_cluster_running():
            if state["lo_ip_added"]:
                _sh("ip", "addr", "del", f"{NODE_HOST_IP}/32", "dev", "lo")
            IP_FORWARD.write_text(f"{state['ip_forward']}\n")
        elif state["lo_ip_added"]:
            lo_address.hand_over("node")  # the node cluster removes it when it goes down
        _state_file().unlink()
        kubeconfig().unlink(missing_ok=True)


def status() -> bool:
    running = docker_ok()
    print(f"dockerd: {'running' if running else 'not running'}")
    exists = running and kind_binary().exists() and cluster_exists()
    print(f"kind cluster {CLUSTER}: {'exists' if exists else 'absent'}")
    ready = exists and _ready()
    print(f"API server: {'ready' if ready else 'not ready'}; kubeconfig {kubeconfig()}")
    return ready


def main(argv: list[str]) -> int:
    """``python -m tests.cluster kind up|down|status|env``."""
    import argparse

    p = argparse.ArgumentParser(
        prog="python -m tests.cluster kind",
        description="kind on Docker with a node image built here; see tests/cluster/README.md.",
    )
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("up", help="docker.io, kind, node image, then kind create cluster")
    sub.add_parser("down", help="delete the cluster, stop dockerd, undo host changes")
    sub.add_parser("status", help="dockerd, the cluster and its API server")
    sub.add_parser("env", help="shell exports: KUBECONFIG, PATH with kind, kubectl and helm")
    sub.add_parser("images", help="only build the kind base and node images (cached)")
    sub.add_parser("load", help="build our session, operator and Redis images and load them")
    args = p.parse_args(argv)
    if args.cmd == "up":
        took = up()
        print(f"kind cluster {CLUSTER} ready ({took:.0f}s); kubeconfig {kubeconfig()}")
    elif args.cmd == "down":
        down()
    elif args.cmd == "status":
        return 0 if status() else 3
    elif args.cmd == "env":
        print(shell_env())
    elif args.cmd == "images":
        print(kind_images.base_archive())
        print(kind_images.node_archive())
    elif args.cmd == "load":
        print("\n".join(load_project_images()))
    return 0


def load_project_images() -> list[str]:
    """Our session and operator images, the bundled Redis's and the Debian base
    (tests run plain pods on it), built as for the local cluster (buildah, cached)
    and loaded into the kind node."""
    hostdeps.install("node")
    archives = [*images.build_project_images(), images.build_redis(), images.build_base()]
    subprocess.run(
        [str(kind_binary()), "load", "image-archive", f"--name={CLUSTER}", *map(str, archives)],
        check=True,
        env=_env(),
    )
    return [str(a) for a in archives]
