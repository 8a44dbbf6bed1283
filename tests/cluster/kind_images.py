"""A kind node image built here, with no registry: Debian bookworm from the apt
mirror (debootstrap), the Kubernetes binaries this tooling compiles from the Go
module proxy, and every image the cluster runs, written as docker-archive
tarballs by this module and stored in the node's containerd before first boot.

Two images, both cached under ``kind-<versions>/`` in the cluster cache:

* the base (``localhost/codemode/kind-base:<key>``): systemd, containerd, runc,
  CNI plugins, iptables and this module's entrypoint, units and configuration;
* the node (``localhost/codemode/kind-node:<kubernetes>``): the base plus
  kubeadm, kubelet, kubectl, ``/kind/version``, the CNI and storage manifests
  kind applies, and the images kubeadm and those manifests name.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import shutil
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from . import build, images, locks, paths, versions

KIND = "v0.33.0"
LOCAL_PATH_PROVISIONER = "v0.0.30"
# Bump when the recipe below changes in a way the versions do not show.
RECIPE = "2"

NODE_PACKAGES = (
    "systemd",
    "systemd-sysv",
    "dbus",
    "containerd",
    "runc",
    "containernetworking-plugins",
    "iptables",
    "ipset",
    "conntrack",
    "ethtool",
    "socat",
    "iproute2",
    "kmod",
    "mount",
    "util-linux",
    "procps",
    "ca-certificates",
    "bash",
)
# Userland for the images that need more than one static binary: kube-proxy and
# kube-router (iptables, ipset, conntrack), local-path's helper pod (a shell).
TOOLS_PACKAGES = ("iptables", "ipset", "conntrack", "iproute2")

REPO_PREFIX = "localhost/codemode/kind"
APISERVER_PORT = 6443


def image_names() -> dict[str, str]:
    """Every image the node holds, by role. Control-plane images carry the names
    kubeadm asks for by default; etcd and CoreDNS are the versions pinned here,
    under names ``tests/cluster/kind.yaml`` gives kubeadm."""
    k = versions.KUBERNETES
    return {
        "kube-apiserver": f"registry.k8s.io/kube-apiserver:{k}",
        "kube-controller-manager": f"registry.k8s.io/kube-controller-manager:{k}",
        "kube-scheduler": f"registry.k8s.io/kube-scheduler:{k}",
        "kube-proxy": f"registry.k8s.io/kube-proxy:{k}",
        "etcd": f"{REPO_PREFIX}/etcd:{versions.ETCD}",
        "coredns": f"{REPO_PREFIX}/coredns:{versions.COREDNS}",
        "pause": images.PAUSE,
        "kube-router": f"{REPO_PREFIX}/kube-router:{versions.KUBE_ROUTER}",
        "local-path-provisioner": f"{REPO_PREFIX}/local-path-provisioner:{LOCAL_PATH_PROVISIONER}",
        "tools": f"{REPO_PREFIX}/tools:{versions.DEBIAN_SUITE}",
    }


def _key(*parts: str) -> str:
    return hashlib.sha256(" ".join(parts).encode()).hexdigest()[:12]


def version_key() -> str:
    """What the node image is made of: every pin and package list it depends on."""
    return _key(
        RECIPE,
        KIND,
        versions.KUBERNETES,
        versions.ETCD,
        versions.COREDNS,
        versions.KUBE_ROUTER,
        LOCAL_PATH_PROVISIONER,
        versions.DEBIAN_SUITE,
        versions.DEBIAN_MIRROR,
        *NODE_PACKAGES,
        *TOOLS_PACKAGES,
    )


def cache_dir() -> Path:
    return paths.cache_root() / f"kind-{KIND}-{versions.KUBERNETES}-{version_key()}"


def bin_dir() -> Path:
    return cache_dir() / "bin"


def base_tag() -> str:
    return f"localhost/codemode/kind-base:{version_key()}"


def node_tag() -> str:
    return f"localhost/codemode/kind-node:{versions.KUBERNETES}"


# ---- binaries ---------------------------------------------------------------------


def _targets() -> list[build.Target]:
    return [
        build.Target("kind", "sigs.k8s.io/kind", KIND, "sigs.k8s.io/kind", bin_dir()),
        build.Target(
            "kubeadm",
            "k8s.io/kubernetes",
            versions.KUBERNETES,
            "k8s.io/kubernetes/cmd/kubeadm",
            bin_dir(),
        ),
        build.Target(
            "local-path-provisioner",
            "github.com/rancher/local-path-provisioner",
            LOCAL_PATH_PROVISIONER,
            "github.com/rancher/local-path-provisioner",
            bin_dir(),
        ),
    ]


def binary(name: str) -> Path:
    """kind, kubeadm and local-path-provisioner live here; the rest where the
    cluster tooling builds them."""
    if name in ("kind", "kubeadm", "local-path-provisioner"):
        return bin_dir() / name
    return paths.binary(name)


def build_binaries() -> dict[str, float]:
    """The cluster tooling's binaries, then kind's own (kind, kubeadm, local-path)."""
    times = build.build()
    with locks.locked("kind-build"), tempfile.TemporaryDirectory(prefix="codemode-kind-") as tmp:
        for t in _targets():
            if (t.out_dir / t.name).exists():
                continue
            times[t.name] = build.build_one(t, Path(tmp))
            print(f"built: {t.name} {t.version} in {times[t.name]:.0f}s", flush=True)
    return times


# ---- root filesystems -------------------------------------------------------------


def _debootstrap(name: str, packages: Sequence[str]) -> Path:
    """A minbase bookworm with ``packages`` as a tarball, cached by its inputs."""
    tarball = cache_dir() / f"rootfs-{name}.tar"
    if tarball.exists():
        return tarball
    tarball.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=paths.cache_root()) as tmp:
        root = Path(tmp) / "rootfs"
        subprocess.run(
            [
                "debootstrap",
                "--variant=minbase",
                f"--include={','.join(packages)}",
                versions.DEBIAN_SUITE,
                str(root),
                versions.DEBIAN_MIRROR,
            ],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        for junk in (
            "var/cache/apt/archives",
            "var/lib/apt/lists",
            "usr/share/doc",
            "usr/share/man",
        ):
            shutil.rmtree(root / junk, ignore_errors=True)
        tmp_tar = tarball.with_suffix(".tmp")
        _tar_dir(root, tmp_tar)
        tmp_tar.rename(tarball)
    return tarball


def _tar_dir(root: Path, out: Path) -> None:
    subprocess.run(
        ["tar", "-C", str(root), "--numeric-owner", "--xattrs", "-cf", str(out), "."],
        check=True,
    )


def _untar(tarball: Path, root: Path) -> None:
    root.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["tar", "-C", str(root), "--numeric-owner", "--xattrs", "-xf", str(tarball)], check=True
    )


# ---- docker-archive tarballs ------------------------------------------------------


@dataclass
class Layer:
    """One uncompressed layer: a tar file on disk and its digest."""

    path: Path
    digest: str = ""

    def __post_init__(self) -> None:
        h = hashlib.sha256()
        with self.path.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        self.digest = h.hexdigest()


@dataclass
class Image:
    tag: str
    layers: list[Layer]
    entrypoint: list[str] = field(default_factory=list)
    cmd: list[str] = field(default_factory=list)
    env: list[str] = field(default_factory=list)
    user: str = ""
    stop_signal: str = ""


def files_layer(out: Path, files: dict[str, tuple[Path | bytes, int]]) -> Layer:
    """A layer of the given files (in-image path -> (host file or content, mode)),
    owned by root, with their parent directories."""
    with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as tar:
        seen: set[str] = set()
        for dest in sorted(files):
            parts = dest.strip("/").split("/")
            for i in range(1, len(parts)):
                d = "/".join(parts[:i])
                if d not in seen:
                    seen.add(d)
                    info = tarfile.TarInfo(d)
                    info.type = tarfile.DIRTYPE
                    info.mode = 0o755
                    tar.addfile(info)
            src, mode = files[dest]
            data = src if isinstance(src, bytes) else src.read_bytes()
            info = tarfile.TarInfo(dest.strip("/"))
            info.size = len(data)
            info.mode = mode
            tar.addfile(info, io.BytesIO(data))
    return Layer(out)


def write_archive(out: Path, imgs: Sequence[Image]) -> Path:
    """A docker-archive (``docker save`` layout) holding ``imgs``; layers shared
    between images are stored once."""
    tmp = out.with_suffix(".tmp")
    with tarfile.open(tmp, "w") as tar:
        manifest = []
        stored: set[str] = set()
        for img in imgs:
            config: dict[str, object] = {
                "architecture": "amd64",
                "os": "linux",
                "config": {
                    "Env": img.env
                    or ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
                    "Entrypoint": img.entrypoint or None,
                    "Cmd": img.cmd or None,
                    "User": img.user,
                    **({"StopSignal": img.stop_signal} if img.stop_signal else {}),
                },
                "rootfs": {
                    "type": "layers",
                    "diff_ids": [f"sha256:{x.digest}" for x in img.layers],
                },
                "history": [{"created_by": "tests/cluster/kind_images.py"} for _ in img.layers],
            }
            blob = json.dumps(config, sort_keys=True).encode()
            config_name = f"{hashlib.sha256(blob).hexdigest()}.json"
            _add_bytes(tar, config_name, blob)
            for layer in img.layers:
                if layer.digest not in stored:
                    stored.add(layer.digest)
                    tar.add(str(layer.path), arcname=f"{layer.digest}/layer.tar")
            manifest.append(
                {
                    "Config": config_name,
                    "RepoTags": [img.tag],
                    "Layers": [f"{x.digest}/layer.tar" for x in img.layers],
                }
            )
        _add_bytes(tar, "manifest.json", json.dumps(manifest).encode())
    tmp.rename(out)
    return out


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def _binary_image(tag: str, name: str, work: Path, extra: Sequence[Layer] = ()) -> Image:
    layer = files_layer(work / f"{name}.tar", {f"/usr/local/bin/{name}": (binary(name), 0o755)})
    return Image(tag, [*extra, layer], entrypoint=[f"/usr/local/bin/{name}"])


def cluster_images_archive() -> Path:
    """The images the node runs, as one docker-archive (cached)."""
    out = cache_dir() / "cluster-images.tar"
    if out.exists():
        return out
    names = image_names()
    with tempfile.TemporaryDirectory(dir=paths.cache_root()) as tmp:
        work = Path(tmp)
        tools = Layer(_debootstrap("tools", TOOLS_PACKAGES))
        imgs = [
            _binary_image(names[n], n, work)
            for n in (
                "kube-apiserver",
                "kube-controller-manager",
                "kube-scheduler",
                "etcd",
                "coredns",
                "local-path-provisioner",
            )
        ]
        imgs += [
            _binary_image(names["kube-proxy"], "kube-proxy", work, [tools]),
            _binary_image(names["kube-router"], "kube-router", work, [tools]),
            Image(names["tools"], [tools], cmd=["/bin/sh"]),
        ]
        write_archive(out, imgs)
    return out


# ---- the node's files -------------------------------------------------------------

ENTRYPOINT = r"""#!/bin/bash
# PID 1 of a codemode kind node (tests/cluster/kind_images.py): prepare what
# systemd and the kubelet need inside a privileged container, then exec systemd.
set -euo pipefail

# Volumes the kubelet mounts for pods must propagate into their containers.
mount --make-rshared /

if [[ -f /sys/fs/cgroup/cgroup.controllers ]]; then
  # cgroup v2 (untested here): leave the root cgroup to systemd and its children.
  mkdir -p /sys/fs/cgroup/codemode-entrypoint
  echo $$ > /sys/fs/cgroup/codemode-entrypoint/cgroup.procs
  echo "INFO: cgroup v2"
else
  # cgroup v1, with a private cgroup namespace: each hierarchy is rooted at this
  # container. The kubelet's cgroupRoot (/kubelet, kubelet.slice with systemd)
  # must exist in every hierarchy, cpuset ones with the parent's cpus and mems.
  for h in /sys/fs/cgroup/*/; do
    for d in kubelet kubelet.slice; do
      mkdir -p "$h$d"
      if [[ -f "$h/cpuset.cpus" ]]; then
        cat "$h/cpuset.cpus" > "$h$d/cpuset.cpus"
        cat "$h/cpuset.mems" > "$h$d/cpuset.mems"
      fi
    done
  done
  echo "INFO: detected cgroup v1"
fi

# Docker's embedded DNS answers on 127.0.0.11 inside this network namespace only;
# pods use the node's resolv.conf, so serve it on the node's own address.
if grep -q '^nameserver 127\.0\.0\.11' /etc/resolv.conf; then
  node_ip=$(ip -4 -o addr show dev eth0 | awk '{print $4}' | cut -d/ -f1 | head -n1)
  sysctl -q -w net.ipv4.conf.all.route_localnet=1
  pattern='s/^-A DOCKER_OUTPUT .* -p \(tcp\|udp\) .*-destination \(127[.0-9:]*\).*/\1 \2/p'
  iptables-save -t nat | sed -n "$pattern" |
  while read -r proto dest; do
    for chain in PREROUTING OUTPUT; do
      iptables -t nat -I "$chain" -d "$node_ip" -p "$proto" --dport 53 \
        -j DNAT --to-destination "$dest"
    done
  done
  resolv=$(sed "s/^nameserver 127\.0\.0\.11/nameserver $node_ip/" /etc/resolv.conf)
  echo "$resolv" > /etc/resolv.conf
fi

exec /sbin/init
"""

KUBELET_UNIT = """[Unit]
Description=kubelet (codemode kind node)
Wants=containerd.service
After=containerd.service

[Service]
Slice=kubelet.slice
Environment="KUBELET_KUBECONFIG_ARGS=--bootstrap-kubeconfig=/etc/kubernetes/bootstrap-kubelet.conf \
--kubeconfig=/etc/kubernetes/kubelet.conf"
Environment="KUBELET_CONFIG_ARGS=--config=/var/lib/kubelet/config.yaml"
EnvironmentFile=-/var/lib/kubelet/kubeadm-flags.env
EnvironmentFile=-/etc/default/kubelet
ExecStart=/usr/bin/kubelet $KUBELET_KUBECONFIG_ARGS $KUBELET_CONFIG_ARGS \
  $KUBELET_KUBEADM_ARGS $KUBELET_EXTRA_ARGS
Restart=always
RestartSec=1s
StartLimitIntervalSec=0

[Install]
WantedBy=multi-user.target
"""

KUBELET_SLICE = """[Unit]
Description=the kubelet and its pods (cgroupRoot)
Before=slices.target

[Slice]
CPUAccounting=yes
MemoryAccounting=yes
TasksAccounting=yes
IOAccounting=yes
"""

CONTAINERD_CONFIG = """version = 2
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{pause}"
  disable_apparmor = true
  enable_selinux = false
  restrict_oom_score_adj = true
[plugins."io.containerd.grpc.v1.cri".containerd]
  snapshotter = "overlayfs"
  default_runtime_name = "runc"
  discard_unpacked_layers = false
[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"
[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
  SystemdCgroup = true
[plugins."io.containerd.grpc.v1.cri".cni]
  bin_dir = "/usr/lib/cni"
  conf_dir = "/etc/cni/net.d"
"""

SYSCTL = """net.ipv4.ip_forward=1
net.ipv4.conf.all.route_localnet=1
net.bridge.bridge-nf-call-iptables=1
net.bridge.bridge-nf-call-ip6tables=1
"""

# kind applies this after kubeadm init, with {{ .PodSubnet }} filled in (the
# marker comment asks it to). One node: a bridge with host-local addresses from
# the pod subnet; kube-router enforces NetworkPolicy (its firewall only).
CNI_MANIFEST = """# would you kindly template this file (kind fills in the pod subnet)
apiVersion: v1
kind: ServiceAccount
metadata: {name: codemode-cni, namespace: kube-system}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: "system:codemode-cni"}
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
metadata: {name: "system:codemode-cni"}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "system:codemode-cni"}
subjects:
- {kind: ServiceAccount, name: codemode-cni, namespace: kube-system}
---
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: codemode-cni, namespace: kube-system, labels: {app: codemode-cni}}
spec:
  selector: {matchLabels: {app: codemode-cni}}
  template:
    metadata: {labels: {app: codemode-cni}}
    spec:
      hostNetwork: true
      serviceAccountName: codemode-cni
      priorityClassName: system-node-critical
      tolerations: [{operator: Exists}]
      initContainers:
      - name: install-cni
        image: {{TOOLS}}
        imagePullPolicy: Never
        command:
        - /bin/sh
        - -c
        - |
          cat > /host/etc/cni/net.d/10-codemode.conflist.tmp <<EOF
          {"cniVersion": "1.0.0", "name": "codemode", "plugins": [
            {"type": "bridge", "bridge": "cm-kind0", "isGateway": true, "ipMasq": true,
             "hairpinMode": true,
             "ipam": {"type": "host-local", "ranges": [[{"subnet": "{{ .PodSubnet }}"}]],
                      "routes": [{"dst": "0.0.0.0/0"}]}},
            {"type": "portmap", "capabilities": {"portMappings": true}}]}
          EOF
          mv /host/etc/cni/net.d/10-codemode.conflist.tmp /host/etc/cni/net.d/10-codemode.conflist
        volumeMounts: [{name: cni-conf, mountPath: /host/etc/cni/net.d}]
      containers:
      - name: kube-router
        image: {{KUBE_ROUTER}}
        imagePullPolicy: Never
        args: [--run-firewall=true, --run-router=false, --run-service-proxy=false,
               --hostname-override=$(NODE_NAME), --health-port=0, --metrics-port=0, --v=1]
        env: [{name: NODE_NAME, valueFrom: {fieldRef: {fieldPath: spec.nodeName}}}]
        securityContext: {privileged: true}
        volumeMounts:
        - {name: lib-modules, mountPath: /lib/modules, readOnly: true}
        - {name: xtables-lock, mountPath: /run/xtables.lock}
      volumes:
      - {name: cni-conf, hostPath: {path: /etc/cni/net.d, type: DirectoryOrCreate}}
      - {name: lib-modules, hostPath: {path: /lib/modules}}
      - {name: xtables-lock, hostPath: {path: /run/xtables.lock, type: FileOrCreate}}
"""

# kind applies this as the default StorageClass: rancher's local-path provisioner,
# folders under /var/local-path-provisioner on the node, deleted with the volume.
STORAGE_MANIFEST = """apiVersion: v1
kind: Namespace
metadata: {name: local-path-storage}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: local-path-provisioner-service-account, namespace: local-path-storage}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: "system:codemode-local-path"}
rules:
- apiGroups: [""]
  resources: [nodes, persistentvolumeclaims, configmaps, pods, pods/log]
  verbs: [get, list, watch]
- apiGroups: [""]
  resources: [persistentvolumes]
  verbs: [get, list, watch, create, patch, update, delete]
- apiGroups: [""]
  resources: [events]
  verbs: [create, patch]
- apiGroups: [""]
  resources: [pods]
  verbs: [create, delete]
- apiGroups: [storage.k8s.io]
  resources: [storageclasses]
  verbs: [get, list, watch]
- apiGroups: [coordination.k8s.io]
  resources: [leases]
  verbs: [get, list, watch, create, update, patch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: "system:codemode-local-path"}
roleRef:
  {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "system:codemode-local-path"}
subjects:
- kind: ServiceAccount
  name: local-path-provisioner-service-account
  namespace: local-path-storage
---
apiVersion: v1
kind: ConfigMap
metadata: {name: local-path-config, namespace: local-path-storage}
data:
  config.json: |
    {"nodePathMap": [{"node": "DEFAULT_PATH_FOR_NON_LISTED_NODES",
                      "paths": ["/var/local-path-provisioner"]}]}
  setup: |
    #!/bin/sh
    set -eu
    mkdir -m 0777 -p "$VOL_DIR"
  teardown: |
    #!/bin/sh
    set -eu
    rm -rf "$VOL_DIR"
  helperPod.yaml: |
    apiVersion: v1
    kind: Pod
    metadata: {name: helper-pod}
    spec:
      priorityClassName: system-node-critical
      tolerations: [{key: node.kubernetes.io/disk-pressure, operator: Exists, effect: NoSchedule}]
      containers:
      - name: helper-pod
        image: {{TOOLS}}
        imagePullPolicy: Never
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: local-path-provisioner, namespace: local-path-storage}
spec:
  replicas: 1
  selector: {matchLabels: {app: local-path-provisioner}}
  template:
    metadata: {labels: {app: local-path-provisioner}}
    spec:
      serviceAccountName: local-path-provisioner-service-account
      tolerations: [{key: node-role.kubernetes.io/control-plane, operator: Exists}]
      containers:
      - name: local-path-provisioner
        image: {{LOCAL_PATH}}
        imagePullPolicy: Never
        args: [--debug, start, --helper-image, {{TOOLS}}, --config, /etc/config/config.json]
        env:
        - {name: POD_NAMESPACE, valueFrom: {fieldRef: {fieldPath: metadata.namespace}}}
        - {name: CONFIG_MOUNT_PATH, value: /etc/config/}
        volumeMounts: [{name: config-volume, mountPath: /etc/config/}]
      volumes:
      - {name: config-volume, configMap: {name: local-path-config}}
---
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata:
  name: standard
  annotations: {storageclass.kubernetes.io/is-default-class: "true"}
provisioner: rancher.io/local-path
volumeBindingMode: WaitForFirstConsumer
reclaimPolicy: Delete
"""


def _manifest(text: str) -> bytes:
    names = image_names()
    return (
        text.replace("{{TOOLS}}", names["tools"])
        .replace("{{KUBE_ROUTER}}", names["kube-router"])
        .replace("{{LOCAL_PATH}}", names["local-path-provisioner"])
        .encode()
    )


# ---- base and node images ---------------------------------------------------------

MASKED_UNITS = (
    "systemd-udevd.service",
    "systemd-udevd-kernel.socket",
    "systemd-udevd-control.socket",
    "systemd-udev-trigger.service",
    "systemd-modules-load.service",
    "systemd-remount-fs.service",
    "systemd-firstboot.service",
    "getty.target",
    "console-getty.service",
    "systemd-logind.service",
    "apt-daily.timer",
    "apt-daily-upgrade.timer",
    "e2scrub_all.timer",
    "fstrim.timer",
)


def _prepare_base(root: Path) -> None:
    """The node's own configuration, on the debootstrapped tree."""
    etc = root / "etc"
    (root / "usr/local/bin/codemode-kind-entrypoint").write_text(ENTRYPOINT)
    (root / "usr/local/bin/codemode-kind-entrypoint").chmod(0o755)
    (etc / "containerd").mkdir(exist_ok=True)
    (etc / "containerd/config.toml").write_text(
        CONTAINERD_CONFIG.format(pause=image_names()["pause"])
    )
    (etc / "crictl.yaml").write_text("runtime-endpoint: unix:///run/containerd/containerd.sock\n")
    (etc / "sysctl.d/90-codemode-kind.conf").write_text(SYSCTL)
    system = etc / "systemd/system"
    (system / "kubelet.service").write_text(KUBELET_UNIT)
    (system / "kubelet.slice").write_text(KUBELET_SLICE)
    wants = system / "multi-user.target.wants"
    wants.mkdir(parents=True, exist_ok=True)
    for unit in ("kubelet.service", "containerd.service"):
        link = wants / unit
        link.unlink(missing_ok=True)
        link.symlink_to(
            f"/etc/systemd/system/{unit}"
            if unit == "kubelet.service"
            else f"/lib/systemd/system/{unit}"
        )
    for unit in MASKED_UNITS:
        link = system / unit
        link.unlink(missing_ok=True)
        link.symlink_to("/dev/null")
    (etc / "machine-id").write_text("")  # systemd makes one per container
    (root / "var/lib/dbus").mkdir(parents=True, exist_ok=True)
    (root / "var/lib/dbus/machine-id").unlink(missing_ok=True)
    (etc / "cni/net.d").mkdir(parents=True, exist_ok=True)
    (root / "kind").mkdir(exist_ok=True)


def base_rootfs() -> Path:
    """The kind base image's tree as a tarball (cached)."""
    out = cache_dir() / "kind-base.tar"
    if out.exists():
        return out
    with tempfile.TemporaryDirectory(dir=paths.cache_root()) as tmp:
        root = Path(tmp) / "rootfs"
        _untar(_debootstrap("node", NODE_PACKAGES), root)
        _prepare_base(root)
        tmp_tar = out.with_suffix(".tmp")
        _tar_dir(root, tmp_tar)
        tmp_tar.rename(out)
    return out


@contextlib.contextmanager
def _containerd_on(root: Path) -> Iterator[list[str]]:
    """A containerd of our own (no CRI) whose store is the node tree's
    ``/var/lib/containerd``; yields the ctr command line that talks to it."""
    state = Path(tempfile.mkdtemp(prefix="codemode-kind-ctrd-", dir="/run"))
    sock = state / "containerd.sock"
    cfg = state / "config.toml"
    cfg.write_text(
        f'version = 2\nroot = "{root}/var/lib/containerd"\nstate = "{state}/state"\n'
        f'disabled_plugins = ["io.containerd.grpc.v1.cri"]\n'
        f'[grpc]\n  address = "{sock}"\n[ttrpc]\n  address = "{state}/ttrpc.sock"\n'
        '[metrics]\n  address = ""\n'
    )
    log = (state / "log").open("w")
    proc = subprocess.Popen(["containerd", f"--config={cfg}"], stdout=log, stderr=log)
    ctr = ["ctr", f"--address={sock}", "--namespace=k8s.io"]
    try:
        deadline = time.monotonic() + 30
        while subprocess.run([*ctr, "version"], capture_output=True).returncode != 0:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"containerd for the node image did not start: {state}/log")
            time.sleep(0.2)
        yield ctr
    finally:
        proc.terminate()
        proc.wait(30)
        log.close()
        shutil.rmtree(state, ignore_errors=True)


def node_archive() -> Path:
    """The node image as a docker-archive (cached): the base image's layer, then
    one with the Kubernetes binaries, kind's files and the cluster images in
    containerd's store."""
    out = cache_dir() / "kind-node.tar"
    if out.exists():
        return out
    build_binaries()
    if not images.archive_path(images.PAUSE).exists():
        images.build_pause()
    cluster = cluster_images_archive()
    base = Layer(base_rootfs())
    with tempfile.TemporaryDirectory(dir=paths.cache_root()) as tmp:
        root = Path(tmp) / "layer"
        (root / "usr/bin").mkdir(parents=True)
        for name in ("kubeadm", "kubelet", "kubectl"):
            shutil.copy2(binary(name), root / "usr/bin" / name)
            (root / "usr/bin" / name).chmod(0o755)
        (root / "kind/manifests").mkdir(parents=True)
        (root / "kind/version").write_text(f"{versions.KUBERNETES}\n")
        (root / "kind/manifests/default-cni.yaml").write_bytes(_manifest(CNI_MANIFEST))
        (root / "kind/manifests/default-storage.yaml").write_bytes(_manifest(STORAGE_MANIFEST))
        (root / "var/lib/containerd").mkdir(parents=True)
        with _containerd_on(root) as ctr:
            for archive in (cluster, images.archive_path(images.PAUSE)):
                subprocess.run(
                    [
                        *ctr,
                        "images",
                        "import",
                        "--no-unpack",
                        "--digests",
                        str(archive),
                    ],
                    check=True,
                    stdout=subprocess.DEVNULL,
                )
        layer_tar = Path(tmp) / "node-layer.tar"
        _tar_dir(root, layer_tar)
        write_archive(out, [_node_image(node_tag(), [base, Layer(layer_tar)])])
    return out


def _node_image(tag: str, layers: list[Layer]) -> Image:
    return Image(
        tag,
        layers,
        entrypoint=["/usr/local/bin/codemode-kind-entrypoint"],
        env=[
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "container=docker",
        ],
        stop_signal="SIGRTMIN+3",
    )


def base_archive() -> Path:
    """The kind base image (no Kubernetes) as a docker-archive, for inspection
    and as the documented first stage."""
    out = cache_dir() / "kind-base-image.tar"
    if not out.exists():
        write_archive(out, [_node_image(base_tag(), [Layer(base_rootfs())])])
    return out
