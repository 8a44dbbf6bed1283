"""Node mode: containerd + runc + CNI bridge, a real kubelet, kube-proxy,
kube-router's NetworkPolicy firewall and CoreDNS, so pods really run, Services
and ``*.svc`` names work in them and NetworkPolicies are enforced.

Everything this module changes on the host is recorded in ``host-state.json``
so ``down`` can undo exactly that: processes, mounts, network namespaces, the
bridge, iptables rules and ipsets, the ``lo`` address and the ip_forward and
bridge-nf-call-iptables sysctls.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

from . import images, kubeconfig, lo_address, paths, pki, procs, provisioner, wait
from .kubectl import apply, node_ready
from .layout import BRIDGE, CLUSTER_DOMAIN, NODE_HOST_IP, POD_CIDR, SERVICE_CIDR, Layout

CNI_BIN = Path("/usr/lib/cni")
CNI_RESULTS = Path("/var/lib/cni/results")
VAR_LIB_KUBELET = Path("/var/lib/kubelet")
NETNS_DIR = Path("/var/run/netns")
CGROUP_ROOT = Path("/sys/fs/cgroup")
COREDNS_READY = "127.0.0.1:18181"
COREDNS_HEALTH = "127.0.0.1:18180"

NODE_CLIENTS = (
    ("kubelet", "system:node:{node}", ("system:nodes",)),
    ("kube-proxy", "system:kube-proxy", ()),
    ("coredns", "system:codemode-coredns", ()),
    ("kube-router", "system:codemode-kube-router", ()),
)
# Most processes one pod may run (kubelet podPidsLimit): a fork bomb in a pod
# stops there instead of exhausting the node's PIDs for every other pod.
POD_PIDS_LIMIT = 1024


def containerd_state() -> Path:
    """Runtime state; short path because shim sockets live under it."""
    return Path("/run/codemode/containerd")


def containerd_root() -> Path:
    """Persistent root (images, snapshots) so imported images survive ``down``."""
    return paths.cache_root() / "containerd"


def containerd_socket() -> Path:
    return containerd_state() / "containerd.sock"


def ctr(*args: str, check: bool = True) -> str:
    proc = subprocess.run(
        ["ctr", f"--address={containerd_socket()}", "--namespace=k8s.io", *args],
        capture_output=True,
        text=True,
        timeout=300,
    )
    if check and proc.returncode != 0:
        raise RuntimeError(f"ctr {' '.join(args)} failed: {proc.stderr.strip()}")
    return proc.stdout


def _sh(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True)


def _state_file(lay: Layout) -> Path:
    return lay.run / "host-state.json"


def _netns() -> set[str]:
    return {p.name for p in NETNS_DIR.iterdir()} if NETNS_DIR.exists() else set()


# ---------------------------------------------------------------- host setup


def prepare_host(lay: Layout) -> None:
    """Host networking and containerd; run before the control plane so
    containerd starts while the API server comes up.

    Each change is recorded in ``host-state.json`` before it is made, so an
    ``up`` killed halfway leaves ``down`` what it needs to undo it."""
    lay.run.mkdir(parents=True, exist_ok=True)
    bridge_nf = _bridge_netfilter_before()
    if bridge_nf is None:
        raise RuntimeError(
            f"{BRIDGE_NF} is missing (no br_netfilter): pod-to-pod traffic on the bridge would "
            "bypass iptables, so NetworkPolicy could not be enforced; run `modprobe br_netfilter`"
        )
    addrs = _sh("ip", "-o", "addr", "show", "dev", "lo").stdout
    state: dict[str, object] = {
        "ip_forward": Path("/proc/sys/net/ipv4/ip_forward").read_text().strip(),
        "netns_before": sorted(_netns()),
        "lo_ip_added": f" {NODE_HOST_IP}/" not in addrs,
        # The kubelet's device-plugin directory ignores --root-dir.
        "var_lib_kubelet_existed": VAR_LIB_KUBELET.exists(),
        "bridge_nf": bridge_nf,
    }
    _state_file(lay).write_text(json.dumps(state))
    if state["lo_ip_added"]:
        subprocess.run(["ip", "addr", "add", f"{NODE_HOST_IP}/32", "dev", "lo"], check=True)
    Path("/proc/sys/net/ipv4/ip_forward").write_text("1\n")
    BRIDGE_NF.write_text("1\n")
    _write_cni_config(lay)
    _start_containerd(lay)


BRIDGE_NF = Path("/proc/sys/net/bridge/bridge-nf-call-iptables")


def _bridge_netfilter_before() -> str | None:
    """Bridged packets must pass iptables: pod-to-Service-to-pod traffic on one
    bridge needs conntrack to un-DNAT the reply, and kube-router's policy chains
    only see same-node pod-to-pod traffic this way. Returns the current value to
    restore, or None if br_netfilter is unavailable."""
    if not BRIDGE_NF.exists():
        _sh("modprobe", "br_netfilter")
    if not BRIDGE_NF.exists():
        return None
    return BRIDGE_NF.read_text().strip()


def _write_cni_config(lay: Layout) -> None:
    conf = {
        "cniVersion": "1.0.0",
        "name": "codemode",
        "plugins": [
            {
                "type": "bridge",
                "bridge": BRIDGE,
                "isGateway": True,
                # Pods only talk to each other and to this host; no NAT needed.
                "ipMasq": False,
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": POD_CIDR}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                    "dataDir": str(lay.run / "cni" / "ipam"),
                },
            }
        ],
    }
    d = lay.run / "cni" / "net.d"
    d.mkdir(parents=True, exist_ok=True)
    (d / "10-codemode.conflist").write_text(json.dumps(conf, indent=2))


def _containerd_config(lay: Layout) -> str:
    cri = 'plugins."io.containerd.grpc.v1.cri"'
    return f"""version = 2
root = "{containerd_root()}"
state = "{containerd_state()}"
[grpc]
  address = "{containerd_socket()}"
[ttrpc]
  address = "{containerd_state()}/ttrpc.sock"
[debug]
  level = "warn"
[metrics]
  address = ""
[{cri}]
  sandbox_image = "{images.PAUSE}"
  disable_tcp_service = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  restrict_oom_score_adj = true
  enable_selinux = false
  disable_apparmor = true
[{cri}.containerd]
  snapshotter = "overlayfs"
  default_runtime_name = "runc"
[{cri}.containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"
[{cri}.containerd.runtimes.runc.options]
  SystemdCgroup = false
[{cri}.cni]
  bin_dir = "{CNI_BIN}"
  conf_dir = "{lay.run / "cni" / "net.d"}"
[{cri}.registry]
  config_path = ""
"""


def _start_containerd(lay: Layout) -> None:
    containerd_state().mkdir(parents=True, exist_ok=True)
    containerd_root().mkdir(parents=True, exist_ok=True)
    cfg = lay.run / "containerd.toml"
    cfg.write_text(_containerd_config(lay))
    procs.start(lay.run, "containerd", ["containerd", f"--config={cfg}"])
    wait.until(
        lay.run,
        "containerd",
        lambda: (
            subprocess.run(
                ["ctr", f"--address={containerd_socket()}", "version"], capture_output=True
            ).returncode
            == 0
        ),
        timeout=30,
    )


# ---------------------------------------------------------------- components


def _make_node_pki(lay: Layout) -> None:
    for stem, cn, orgs in NODE_CLIENTS:
        pki.ensure_cert(
            lay.pki, pki.CertSpec(stem, cn.format(node=lay.node_name), orgs, client=True)
        )
        kubeconfig.write(lay.component_kubeconfig(stem), lay.server, lay.pki, stem, cn)
    pki.ensure_cert(
        lay.pki,
        pki.CertSpec(
            "kubelet-serving",
            lay.node_name,
            server=True,
            dns_names=(lay.node_name, "localhost"),
            ips=(NODE_HOST_IP, "127.0.0.1"),
        ),
    )


def kubelet_config(lay: Layout) -> dict[str, object]:
    """The kubelet's KubeletConfiguration: TLS and webhook auth, our DNS, no
    disk-pressure evictions on a small disk, and a PID limit per pod."""
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "address": NODE_HOST_IP,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": 10248,
        "readOnlyPort": 0,
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": True},
            "x509": {"clientCAFile": str(lay.pki / "ca.crt")},
        },
        "authorization": {"mode": "Webhook"},
        "tlsCertFile": str(lay.pki / "kubelet-serving.crt"),
        "tlsPrivateKeyFile": str(lay.pki / "kubelet-serving.key"),
        "cgroupDriver": "cgroupfs",
        "failSwapOn": False,
        "failCgroupV1": False,
        "containerRuntimeEndpoint": f"unix://{containerd_socket()}",
        "clusterDNS": [NODE_HOST_IP],
        "clusterDomain": CLUSTER_DOMAIN,
        "podLogsDir": str(lay.run / "pod-logs"),
        "serializeImagePulls": False,
        "imageGCHighThresholdPercent": 100,
        "evictionHard": {
            "imagefs.available": "0%",
            "nodefs.available": "0%",
            "nodefs.inodesFree": "0%",
        },
        "localStorageCapacityIsolation": False,
        "resolvConf": "/etc/resolv.conf",
        "syncFrequency": "10s",
        "fileCheckFrequency": "10s",
        "nodeStatusUpdateFrequency": "5s",
        "podPidsLimit": POD_PIDS_LIMIT,
    }


def _start_kubelet(lay: Layout) -> None:
    root = lay.run / "kubelet"
    root.mkdir(parents=True, exist_ok=True)
    cfg = lay.run / "kubelet-config.yaml"
    cfg.write_text(yaml.safe_dump(kubelet_config(lay)))
    procs.start(
        lay.run,
        "kubelet",
        [
            str(paths.binary("kubelet")),
            f"--config={cfg}",
            f"--kubeconfig={lay.component_kubeconfig('kubelet')}",
            f"--root-dir={root}",
            f"--hostname-override={lay.node_name}",
            f"--node-ip={NODE_HOST_IP}",
            "--v=1",
        ],
    )

    wait.until(lay.run, "kubelet", lambda: node_ready(lay), timeout=60)


def _start_kube_proxy(lay: Layout) -> None:
    config = {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "clientConnection": {"kubeconfig": str(lay.component_kubeconfig("kube-proxy"))},
        "hostnameOverride": lay.node_name,
        "mode": "iptables",
        "clusterCIDR": POD_CIDR,
        "healthzBindAddress": "127.0.0.1:10256",
        "metricsBindAddress": "127.0.0.1:10249",
        "nodePortAddresses": [f"{NODE_HOST_IP}/32"],
        # Inside a container the conntrack sysctls are read-only.
        "conntrack": {"maxPerCore": 0},
        # No SNAT of pod-to-Service traffic (br_netfilter lets conntrack un-DNAT
        # replies on the bridge): a masqueraded source would be the node, which
        # NetworkPolicy always admits.
        "iptables": {"localhostNodePorts": False, "masqueradeAll": False},
    }
    cfg = lay.run / "kube-proxy-config.yaml"
    cfg.write_text(yaml.safe_dump(config))
    procs.start(
        lay.run, "kube-proxy", [str(paths.binary("kube-proxy")), f"--config={cfg}", "--v=1"]
    )
    wait.until(
        lay.run,
        "kube-proxy",
        lambda: wait.http_get("http://127.0.0.1:10256/healthz")[0] == 200,
        timeout=30,
    )


COREDNS_RBAC = """
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: "system:codemode-coredns"}
rules:
- apiGroups: [""]
  resources: [endpoints, services, pods, namespaces]
  verbs: [list, watch]
- apiGroups: [discovery.k8s.io]
  resources: [endpointslices]
  verbs: [list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: "system:codemode-coredns"}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "system:codemode-coredns"}
subjects:
- {apiGroup: rbac.authorization.k8s.io, kind: User, name: "system:codemode-coredns"}
"""


def _start_coredns(lay: Layout) -> None:
    """CoreDNS runs on the host at NODE_HOST_IP (the kubelet's clusterDNS):
    no image is needed and pods reach it through their gateway. It only
    answers cluster names; nothing is forwarded off the machine."""
    apply(lay, COREDNS_RBAC)
    corefile = lay.run / "Corefile"
    corefile.write_text(
        f""".:53 {{
    bind {NODE_HOST_IP}
    errors
    health {COREDNS_HEALTH}
    ready {COREDNS_READY}
    kubernetes {CLUSTER_DOMAIN} in-addr.arpa ip6.arpa {{
        kubeconfig {lay.component_kubeconfig("coredns")} codemode
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
    }}
    cache 5
}}
"""
    )
    procs.start(lay.run, "coredns", [str(paths.binary("coredns")), f"-conf={corefile}"])
    wait.until(
        lay.run,
        "coredns",
        lambda: wait.http_get(f"http://{COREDNS_READY}/ready")[0] == 200,
        timeout=30,
    )


KUBE_ROUTER_RBAC = """
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: "system:codemode-kube-router"}
rules:
- apiGroups: [""]
  resources: [pods, namespaces, nodes, services, endpoints]
  verbs: [get, list, watch]
- apiGroups: [networking.k8s.io]
  resources: [networkpolicies]
  verbs: [get, list, watch]
- apiGroups: [discovery.k8s.io]
  resources: [endpointslices]
  verbs: [get, list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: "system:codemode-kube-router"}
roleRef:
  {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "system:codemode-kube-router"}
subjects:
- {apiGroup: rbac.authorization.k8s.io, kind: User, name: "system:codemode-kube-router"}
"""

# kube-router's filter-table chains and ipsets (all its names start so).
KUBE_ROUTER_CHAIN_PREFIXES = ("KUBE-ROUTER-", "KUBE-POD-FW-", "KUBE-NWPLCY-")
KUBE_ROUTER_IPSET_PREFIXES = ("KUBE-SRC-", "KUBE-DST-")
# A full policy sync ends by appending this ACCEPT to its top-level chains.
_SYNCED_MARK = "--mark 0x20000/0x20000 -j ACCEPT"


def kube_router_argv(lay: Layout) -> list[str]:
    """Only the firewall: kube-proxy stays the service proxy and the CNI bridge
    the pod network. Health and metrics ports are off (the health server would
    listen on every interface); ``up`` checks its iptables chains instead."""
    return [
        str(paths.binary("kube-router")),
        f"--kubeconfig={lay.component_kubeconfig('kube-router')}",
        f"--hostname-override={lay.node_name}",
        "--run-firewall=true",
        "--run-router=false",
        "--run-service-proxy=false",
        f"--service-cluster-ip-range={SERVICE_CIDR}",
        "--health-port=0",
        "--metrics-port=0",
        "--v=1",
    ]


def kube_router_enforcing() -> bool:
    """kube-router has finished a policy sync: the FORWARD hook jumps to its
    chain and that chain ends in the ACCEPT a completed sync appends."""
    hook = _sh("iptables", "-t", "filter", "-S", "FORWARD").stdout
    chain = _sh("iptables", "-t", "filter", "-S", "KUBE-ROUTER-FORWARD").stdout
    return "-j KUBE-ROUTER-FORWARD" in hook and _SYNCED_MARK in chain


def _start_kube_router(lay: Layout) -> None:
    apply(lay, KUBE_ROUTER_RBAC)
    procs.start(lay.run, "kube-router", kube_router_argv(lay))
    wait.until(lay.run, "kube-router", kube_router_enforcing, timeout=60)


def _start_provisioner(lay: Layout) -> None:
    """The default StorageClass and the host process that serves its claims."""
    apply(lay, provisioner.STORAGE_CLASS)
    ready = lay.run / provisioner.READY_FILE
    ready.unlink(missing_ok=True)
    procs.start(
        lay.run,
        "local-path-provisioner",
        [
            sys.executable,
            "-m",
            "tests.cluster.provisioner",
            f"--kubeconfig={lay.kubeconfig}",
            f"--root={lay.run / 'volumes'}",
            f"--ready-file={ready}",
        ],
        env={"PYTHONPATH": str(Path(__file__).resolve().parents[2])},
    )
    wait.until(lay.run, "local-path-provisioner", ready.exists, timeout=30)


def start(lay: Layout) -> None:
    """Everything after the control plane is ready."""
    _make_node_pki(lay)
    images.import_all(ctr)
    _start_kubelet(lay)
    _start_kube_proxy(lay)
    _start_kube_router(lay)
    _start_coredns(lay)
    _start_provisioner(lay)


# ---------------------------------------------------------------- teardown


def teardown_workloads(lay: Layout) -> None:
    """Stop the kubelet, then kill and remove every container containerd runs,
    so nothing of a pod outlives ``down``."""
    procs.stop(lay.run, "kubelet")
    if procs.running_pid(lay.run, "containerd") is None:
        return
    for task in ctr("tasks", "list", "-q", check=False).split():
        ctr("tasks", "kill", "--signal=SIGKILL", task, check=False)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        tasks = ctr("tasks", "list", "-q", check=False).split()
        for task in tasks:
            ctr("tasks", "delete", task, check=False)
        if not tasks:
            break
        time.sleep(0.3)
    for container in ctr("containers", "list", "-q", check=False).split():
        ctr("containers", "delete", container, check=False)
        # Removed without a CNI DEL: drop libcni's cached results for it.
        for result in CNI_RESULTS.glob(f"*-{container}-*") if CNI_RESULTS.exists() else []:
            result.unlink(missing_ok=True)


def _kill_shims() -> None:
    """containerd shims daemonize away from containerd; ours are exactly those
    whose command line names our containerd socket."""
    needle = str(containerd_socket()).encode()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes()
        except OSError:
            continue
        if b"containerd-shim" in cmdline and needle in cmdline:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(proc.name), signal.SIGKILL)


def _kill_pod_cgroups() -> None:
    """Kill any process left in the kubelet's ``kubepods`` cgroups and remove them."""
    for subsystem in CGROUP_ROOT.iterdir():
        top = subsystem / "kubepods"
        if not top.is_dir():
            continue
        dirs = sorted(
            (d for d in top.rglob("*") if d.is_dir()), key=lambda d: len(d.parts), reverse=True
        )
        for d in [*dirs, top]:
            try:
                for pid in (d / "cgroup.procs").read_text().split():
                    os.kill(int(pid), signal.SIGKILL)
            except (OSError, ValueError):
                pass
        time.sleep(0.2)
        for d in [*dirs, top]:
            with contextlib.suppress(OSError):
                d.rmdir()


def _unmount_under(prefixes: list[Path]) -> None:
    mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()]
    ours = [m for m in mounts if any(m == str(p) or m.startswith(f"{p}/") for p in prefixes)]
    for m in sorted(set(ours), key=len, reverse=True):
        _sh("umount", "-l", m)


KUBELET_CHAINS = ("KUBE-FIREWALL", "KUBE-KUBELET-CANARY", "KUBE-IPTABLES-HINT")


def _remove_kubelet_iptables() -> None:
    """The kubelet installs a few utility chains of its own (kube-proxy's
    ``--cleanup`` does not know them); remove jumps to them, then the chains."""
    for tool in ("iptables", "ip6tables"):
        for table in ("filter", "nat", "mangle"):
            for hook in ("INPUT", "OUTPUT"):
                while _sh(tool, "-t", table, "-D", hook, "-j", "KUBE-FIREWALL").returncode == 0:
                    pass
            for chain in KUBELET_CHAINS:
                if _sh(tool, "-t", table, "-F", chain).returncode == 0:
                    _sh(tool, "-t", table, "-X", chain)


def kube_router_leftovers(filter_rules: str) -> tuple[list[list[str]], list[str]]:
    """From ``iptables -t filter -S`` output: the hook rules that jump into
    kube-router's chains (as ``-D`` arguments) and the chains themselves."""
    jumps: list[list[str]] = []
    chains: list[str] = []
    for line in filter_rules.splitlines():
        words = shlex.split(line)
        if len(words) == 2 and words[0] == "-N" and words[1].startswith(KUBE_ROUTER_CHAIN_PREFIXES):
            chains.append(words[1])
        elif (
            len(words) > 2
            and words[0] == "-A"
            and words[1] in ("INPUT", "FORWARD", "OUTPUT")
            and "-j" in words
            and words[words.index("-j") + 1].startswith("KUBE-ROUTER-")
        ):
            jumps.append(["-D", *words[1:]])
    return jumps, chains


def _remove_kube_router_state() -> None:
    """kube-router leaves its chains and ipsets when stopped (and its own
    ``--cleanup-config`` also resets service-proxy and routing state we never
    had): unhook its chains, flush and delete them, then destroy its ipsets."""
    rules = _sh("iptables", "-t", "filter", "-S").stdout
    jumps, chains = kube_router_leftovers(rules)
    for args in jumps:
        _sh("iptables", "-t", "filter", *args)
    for chain in chains:  # flush all first: they jump to each other
        _sh("iptables", "-t", "filter", "-F", chain)
    for chain in chains:
        _sh("iptables", "-t", "filter", "-X", chain)
    if shutil.which("ipset") is None:
        return
    for name in _sh("ipset", "list", "-n").stdout.split():
        if name.startswith(KUBE_ROUTER_IPSET_PREFIXES):
            _sh("ipset", "destroy", name)


def teardown_host(lay: Layout) -> None:
    """Undo prepare_host and anything the node processes left behind."""
    _kill_shims()
    state = {}
    if _state_file(lay).exists():
        state = json.loads(_state_file(lay).read_text())
        _kill_pod_cgroups()
    # Without a state file ``up`` never prepared this host: the cni-* namespaces
    # there belong to someone else's runtime.
    before = set(state.get("netns_before", _netns()))
    for ns in _netns() - before:
        if ns.startswith("cni-"):
            _sh("ip", "netns", "delete", ns)
    _unmount_under([containerd_state(), containerd_root(), lay.run / "kubelet"])
    # containerd's runtime state (sockets, task bundles) is ours alone; the
    # persistent root with the imported images stays.
    subprocess.run(["rm", "-rf", "--one-file-system", str(containerd_state())], check=False)
    if _sh("ip", "link", "show", BRIDGE).returncode == 0:
        _sh("ip", "link", "delete", BRIDGE)
    if state:
        _remove_kube_router_state()
    if Path(paths.binary("kube-proxy")).exists() and state:
        _sh(str(paths.binary("kube-proxy")), "--cleanup")
        _remove_kubelet_iptables()
    # kind, still up, needs it: it removes it when it goes down
    if state.get("lo_ip_added") and not lo_address.hand_over("kind"):
        _sh("ip", "addr", "del", f"{NODE_HOST_IP}/32", "dev", "lo")
    if state.get("bridge_nf") is not None and BRIDGE_NF.exists():
        BRIDGE_NF.write_text(f"{state['bridge_nf']}\n")
    if "ip_forward" in state:
        Path("/proc/sys/net/ipv4/ip_forward").write_text(f"{state['ip_forward']}\n")
    if state.get("var_lib_kubelet_existed") is False:
        subprocess.run(["rm", "-rf", "--one-file-system", str(VAR_LIB_KUBELET)], check=False)
    for leftover in (
        lay.run / "kubelet",
        lay.run / "cni" / "ipam",
        lay.run / "pod-logs",
        lay.run / "volumes",
    ):
        subprocess.run(["rm", "-rf", "--one-file-system", str(leftover)], check=False)
    _state_file(lay).unlink(missing_ok=True)
