"""etcd, kube-apiserver, kube-controller-manager and kube-scheduler as local
processes, the way envtest and local-up-cluster run them."""

from __future__ import annotations

import json
import shutil

from . import kubeconfig, paths, pki, procs, wait
from .layout import CLUSTER_DOMAIN, KUBERNETES_SERVICE_IP, SERVICE_CIDR, Layout

SERVICE_ACCOUNT_ISSUER = f"https://kubernetes.default.svc.{CLUSTER_DOMAIN}"

# (file stem, common name, organisations) of each client identity.
CLIENTS = (
    ("admin", "codemode-admin", ("system:masters",)),
    ("controller-manager", "system:kube-controller-manager", ()),
    ("scheduler", "system:kube-scheduler", ()),
    ("apiserver-kubelet-client", "kube-apiserver-kubelet-client", ("system:masters",)),
)


def make_pki(lay: Layout) -> None:
    """CA, serving and client certificates, kubeconfigs; created once per run dir."""
    pki.ensure_ca(lay.pki)
    pki.ensure_service_account_keys(lay.pki)
    pki.ensure_cert(
        lay.pki,
        pki.CertSpec(
            "apiserver",
            "kube-apiserver",
            server=True,
            dns_names=(
                "localhost",
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                f"kubernetes.default.svc.{CLUSTER_DOMAIN}",
            ),
            ips=tuple(dict.fromkeys(("127.0.0.1", lay.api_ip, KUBERNETES_SERVICE_IP))),
        ),
    )
    for stem, cn, orgs in CLIENTS:
        pki.ensure_cert(lay.pki, pki.CertSpec(stem, cn, orgs, client=True))
    kubeconfig.write(lay.kubeconfig, lay.server, lay.pki, "admin", "admin")
    for stem, cn, _ in CLIENTS[1:3]:
        kubeconfig.write(lay.component_kubeconfig(stem), lay.server, lay.pki, stem, cn)


def start_etcd(lay: Layout) -> None:
    data = lay.run / "etcd"
    shutil.rmtree(data, ignore_errors=True)
    client = f"http://127.0.0.1:{lay.etcd_port}"
    peer = f"http://127.0.0.1:{lay.etcd_peer_port}"
    procs.start(
        lay.run,
        "etcd",
        [
            str(paths.binary("etcd")),
            "--name=codemode",
            f"--data-dir={data}",
            f"--listen-client-urls={client}",
            f"--advertise-client-urls={client}",
            f"--listen-peer-urls={peer}",
            f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster=codemode={peer}",
            # Test data is disposable: trade durability for speed.
            "--unsafe-no-fsync",
            "--log-level=warn",
        ],
    )

    def healthy() -> bool:
        code, body = wait.http_get(f"{client}/health")
        return code == 200 and json.loads(body).get("health") == "true"

    wait.until(lay.run, "etcd", healthy, timeout=30)


def start_apiserver(lay: Layout) -> None:
    p = lay.pki
    procs.start(
        lay.run,
        "kube-apiserver",
        [
            str(paths.binary("kube-apiserver")),
            f"--etcd-servers=http://127.0.0.1:{lay.etcd_port}",
            f"--bind-address={lay.api_ip}",
            f"--advertise-address={lay.api_ip}",
            f"--secure-port={lay.api_port}",
            f"--tls-cert-file={p / 'apiserver.crt'}",
            f"--tls-private-key-file={p / 'apiserver.key'}",
            f"--client-ca-file={p / 'ca.crt'}",
            f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
            f"--service-account-key-file={p / 'sa.pub'}",
            f"--service-account-signing-key-file={p / 'sa.key'}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--authorization-mode=Node,RBAC",
            "--enable-admission-plugins=NodeRestriction",
            "--allow-privileged=true",
            f"--kubelet-client-certificate={p / 'apiserver-kubelet-client.crt'}",
            f"--kubelet-client-key={p / 'apiserver-kubelet-client.key'}",
            "--kubelet-preferred-address-types=InternalIP,Hostname",
            "--profiling=false",
            "--v=1",
        ],
    )
    admin = (p / "admin.crt", p / "admin.key")

    def ready() -> bool:
        code, _ = wait.https_get(f"{lay.server}/readyz", ca=p / "ca.crt", cert=admin)
        return code == 200

    wait.until(lay.run, "kube-apiserver", ready, timeout=90)


def _health(port: int) -> bool:
    code, _ = wait.https_get(f"https://127.0.0.1:{port}/healthz")
    return code == 200


def start_controller_manager(lay: Layout) -> None:
    kc = lay.component_kubeconfig("controller-manager")
    p = lay.pki
    procs.start(
        lay.run,
        "kube-controller-manager",
        [
            str(paths.binary("kube-controller-manager")),
            f"--kubeconfig={kc}",
            f"--authentication-kubeconfig={kc}",
            f"--authorization-kubeconfig={kc}",
            "--bind-address=127.0.0.1",
            f"--secure-port={lay.controller_manager_port}",
            f"--service-account-private-key-file={p / 'sa.key'}",
            f"--root-ca-file={p / 'ca.crt'}",
            f"--cluster-signing-cert-file={p / 'ca.crt'}",
            f"--cluster-signing-key-file={p / 'ca.key'}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--use-service-account-credentials=true",
            "--leader-elect=false",
            "--controllers=*",
            "--v=1",
        ],
    )
    wait.until(
        lay.run, "kube-controller-manager", lambda: _health(lay.controller_manager_port), timeout=60
    )


def start_scheduler(lay: Layout) -> None:
    kc = lay.component_kubeconfig("scheduler")
    procs.start(
        lay.run,
        "kube-scheduler",
        [
            str(paths.binary("kube-scheduler")),
            f"--kubeconfig={kc}",
            f"--authentication-kubeconfig={kc}",
            f"--authorization-kubeconfig={kc}",
            "--bind-address=127.0.0.1",
            f"--secure-port={lay.scheduler_port}",
            "--leader-elect=false",
            "--v=1",
        ],
    )
    wait.until(lay.run, "kube-scheduler", lambda: _health(lay.scheduler_port), timeout=60)


def start(lay: Layout) -> None:
    make_pki(lay)
    start_etcd(lay)
    start_apiserver(lay)
    start_controller_manager(lay)
    start_scheduler(lay)
