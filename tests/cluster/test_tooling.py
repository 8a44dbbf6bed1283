"""Fast checks of the cluster tooling itself (no cluster needed)."""

from __future__ import annotations

import re
import ssl
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from cryptography import x509

from . import kubeconfig, pki, procs, wait
from .build import _ldflags, targets


def test_pki_issues_a_chain_that_tls_accepts(tmp_path: Path) -> None:
    pki.ensure_ca(tmp_path)
    spec = pki.CertSpec(
        "srv", "kube-apiserver", server=True, dns_names=("kubernetes",), ips=("10.96.0.1",)
    )
    pki.ensure_cert(tmp_path, spec)
    pki.ensure_cert(tmp_path, pki.CertSpec("admin", "me", ("system:masters",), client=True))
    cert = x509.load_pem_x509_certificate((tmp_path / "srv.crt").read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["kubernetes"]
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["10.96.0.1"]
    # openssl verifies the leaf against our CA, as the API server's clients will.
    for leaf in ("srv", "admin"):
        out = subprocess.run(
            [
                "openssl",
                "verify",
                "-CAfile",
                str(tmp_path / "ca.crt"),
                str(tmp_path / f"{leaf}.crt"),
            ],
            capture_output=True,
            text=True,
        )
        assert out.returncode == 0, out.stderr
    admin = x509.load_pem_x509_certificate((tmp_path / "admin.crt").read_bytes())
    assert "O=system:masters" in admin.subject.rfc4514_string()
    # Server key and cert load as a TLS identity; private keys are not world-readable.
    ssl.create_default_context().load_cert_chain(tmp_path / "srv.crt", tmp_path / "srv.key")
    assert (tmp_path / "srv.key").stat().st_mode & 0o077 == 0


def test_pki_is_created_once(tmp_path: Path) -> None:
    pki.ensure_ca(tmp_path)
    pki.ensure_service_account_keys(tmp_path)
    first = (tmp_path / "ca.crt").read_bytes(), (tmp_path / "sa.key").read_bytes()
    pki.ensure_ca(tmp_path)
    pki.ensure_service_account_keys(tmp_path)
    assert ((tmp_path / "ca.crt").read_bytes(), (tmp_path / "sa.key").read_bytes()) == first


def test_kubeconfig_points_at_server_and_identity(tmp_path: Path) -> None:
    path = kubeconfig.write(tmp_path / "kc", "https://127.0.0.1:1", tmp_path, "admin", "admin")
    config = yaml.safe_load(path.read_text())
    assert config["clusters"][0]["cluster"]["server"] == "https://127.0.0.1:1"
    assert config["users"][0]["user"]["client-certificate"] == str(tmp_path / "admin.crt")
    assert path.stat().st_mode & 0o077 == 0


def test_procs_stop_kills_the_whole_group_and_forgets_it(tmp_path: Path) -> None:
    # A shell with a child: stopping must take the child down too.
    pid = procs.start(tmp_path, "sleeper", ["sh", "-c", "sleep 300 & echo CHILD=$!; wait"])
    deadline = time.monotonic() + 5
    while (
        found := re.search(r"CHILD=(\d+)", procs.log_file(tmp_path, "sleeper").read_text())
    ) is None:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    child = int(found.group(1))
    assert procs.running_pid(tmp_path, "sleeper") == pid
    procs.stop(tmp_path, "sleeper")
    assert procs.running_pid(tmp_path, "sleeper") is None
    assert not procs.pid_file(tmp_path, "sleeper").exists()
    deadline = time.monotonic() + 5
    while Path(f"/proc/{child}").exists() and _state(child) != "Z":
        assert time.monotonic() < deadline, "child of the stopped process survived"
        time.sleep(0.05)


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "gone"


def test_procs_ignores_a_recycled_pid(tmp_path: Path) -> None:
    """A PID file whose start time does not match is not our process."""
    procs.pid_file(tmp_path, "ghost").parent.mkdir(parents=True)
    procs.pid_file(tmp_path, "ghost").write_text("1 12345\n")
    assert procs.running_pid(tmp_path, "ghost") is None
    procs.stop(tmp_path, "ghost")  # must not signal PID 1


@pytest.mark.parametrize("name", ["kube-apiserver", "kubelet", "kubectl"])
def test_kubernetes_binaries_are_stamped_with_the_pinned_version(name: str) -> None:
    target = next(t for t in targets() if t.name == name)
    flags = _ldflags(target)
    assert f"k8s.io/component-base/version.gitVersion={target.version}" in flags
    assert flags.startswith("-s -w")


def test_wait_names_the_component_and_its_log_when_it_dies(tmp_path: Path) -> None:
    procs.start(tmp_path, "broken", ["sh", "-c", "echo 'bad flag --nope' >&2; exit 3"])
    with pytest.raises(wait.ComponentFailed) as info:
        wait.until(tmp_path, "broken", lambda: False, timeout=10)
    message = str(info.value)
    assert "broken failed: process exited" in message
    assert str(procs.log_file(tmp_path, "broken")) in message
    assert "bad flag --nope" in message  # the log's tail is shown


def test_wait_times_out_with_the_last_probe_error(tmp_path: Path) -> None:
    procs.start(tmp_path, "slow", ["sleep", "30"])

    def probe() -> bool:
        raise OSError("connection refused")

    try:
        with pytest.raises(wait.ComponentFailed, match="connection refused"):
            wait.until(tmp_path, "slow", probe, timeout=0.5)
    finally:
        procs.stop(tmp_path, "slow")


def _claim(**spec: object) -> object:
    from kubernetes import client

    return client.V1PersistentVolumeClaim(
        metadata=client.V1ObjectMeta(name="data-redis-0", namespace="sys", uid="u-1"),
        spec=client.V1PersistentVolumeClaimSpec(**spec),
        status=client.V1PersistentVolumeClaimStatus(phase="Pending"),
    )


def test_provisioner_binds_a_pending_claim_of_its_class_to_a_folder_of_its_own() -> None:
    from kubernetes import client

    from .provisioner import CLASS_NAME, volume_for, wants_volume

    resources = client.V1VolumeResourceRequirements(requests={"storage": "2Gi"})
    claim = _claim(
        storage_class_name=CLASS_NAME, access_modes=["ReadWriteOnce"], resources=resources
    )
    assert wants_volume(claim, existing=set())
    assert not wants_volume(claim, existing={"pvc-u-1"})  # made already
    assert not wants_volume(_claim(storage_class_name="other", resources=resources), set())
    pv = volume_for(claim, Path("/v"))
    assert pv["metadata"]["name"] == "pvc-u-1"
    assert pv["spec"]["capacity"] == {"storage": "2Gi"}
    assert pv["spec"]["claimRef"] == {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "namespace": "sys",
        "name": "data-redis-0",
        "uid": "u-1",
    }
    assert pv["spec"]["hostPath"]["path"] == "/v/sys_data-redis-0_u-1"
    assert pv["spec"]["persistentVolumeReclaimPolicy"] == "Delete"


def test_env_exports_the_kubeconfig_and_a_path_with_kubectl_and_helm(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from . import tools

    kubectl = tmp_path / "k8s" / "kubectl"
    helm = tmp_path / "helm-bin"
    for binary in (kubectl, helm):
        binary.parent.mkdir(parents=True, exist_ok=True)
        binary.write_text("#!/bin/sh\n")
    monkeypatch.setenv("CODEMODE_CACHE", str(tmp_path))
    monkeypatch.setattr(tools.paths, "binary", lambda name: kubectl)
    monkeypatch.setattr(tools, "helm_binary", lambda: helm)
    lines = tools.shell_env("node").splitlines()
    assert lines == [
        f"export KUBECONFIG={tmp_path}/run/node/kubeconfig",
        f'export PATH={tmp_path}/bin:"$PATH"',
    ]
    assert (tmp_path / "bin" / "kubectl").resolve() == kubectl
    assert (tmp_path / "bin" / "helm").resolve() == helm


def _fake_component(run: Path, name: str) -> None:
    """A live process under a component's PID file."""
    procs.start(run, name, ["sleep", "60"])


def test_a_cluster_missing_a_component_is_not_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """An ``up`` killed after the API server started left no PID file for the
    rest: the next ``up`` must not reuse that cluster, and status must say so."""
    from . import lifecycle
    from .layout import layout

    monkeypatch.setenv("CODEMODE_CACHE", str(tmp_path))
    monkeypatch.setattr(lifecycle.wait, "https_get", lambda *a, **k: (200, "ok"))
    lay = layout("control-plane")
    try:
        for name in ("etcd", "kube-apiserver"):
            _fake_component(lay.run, name)
        assert lifecycle.missing(lay) == ["kube-controller-manager", "kube-scheduler", "kwok"]
        assert not lifecycle.is_up(lay)
        assert lifecycle.status("control-plane") is False
        out = capsys.readouterr().out
        assert "control-plane: degraded" in out
        assert re.search(r"kube-scheduler +NOT STARTED", out)
        assert re.search(r"etcd +pid \d+", out)
        for name in ("kube-controller-manager", "kube-scheduler", "kwok"):
            _fake_component(lay.run, name)
        assert lifecycle.is_up(lay)
    finally:
        for name in procs.names(lay.run):
            procs.stop(lay.run, name)


def test_every_component_of_a_mode_is_known_to_lifecycle() -> None:
    from . import lifecycle

    assert set(lifecycle.COMPONENTS["node"]) <= set(lifecycle.STOP_ORDER)
    assert set(lifecycle.COMPONENTS["control-plane"]) <= set(lifecycle.STOP_ORDER)


@pytest.mark.parametrize("bind_ip", ["127.0.0.1", "0.0.0.0"])
def test_a_busy_port_fails_before_starting_naming_component_port_and_holder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, bind_ip: str
) -> None:
    import os
    import socket

    from . import ports
    from .layout import Layout

    monkeypatch.setenv("CODEMODE_CACHE", str(tmp_path))
    with socket.socket() as busy:
        busy.bind((bind_ip, 0))
        busy.listen()
        taken = busy.getsockname()[1]
        lay = Layout("control-plane", "127.0.0.1", 1, 2, 3, taken, 5, "n")
        with pytest.raises(wait.ComponentFailed) as info:
            ports.ensure_free(lay)
    message = str(info.value)
    assert info.value.component == "kube-controller-manager"
    assert f"port 127.0.0.1:{taken}/tcp is already in use by pid {os.getpid()}" in message
    assert "last lines" not in message  # an old log's tail would only mislead
    ports.ensure_free(lay)  # free again once the holder is gone


def test_ports_reads_ipv6_and_udp_listeners(tmp_path: Path) -> None:
    from . import ports

    header = "sl local_address rem_address st queues tr:tm->when retrnsmt uid timeout inode\n"
    rest = "00000000:00000000 00:00000000 00000000 0 0"
    wildcard6 = "0" * 32
    (tmp_path / "tcp").write_text(f"{header}0: 01FAFA0A:1F90 00000000:0000 0A {rest} 11\n")
    (tmp_path / "tcp6").write_text(f"{header}0: {wildcard6}:0035 {wildcard6}:0000 0A {rest} 12\n")
    (tmp_path / "udp").write_text(f"{header}0: 01FAFA0A:0035 00000000:0000 07 {rest} 13\n")
    tcp = ports.listeners("tcp", tmp_path)
    assert tcp == [("10.250.250.1", 8080, 11), ("::", 53, 12)]
    assert ports.listeners("udp", tmp_path) == [("10.250.250.1", 53, 13)]
    assert ports.conflicts(ports.Port("coredns", "10.250.250.1", 53), tcp) == [12]
    assert ports.conflicts(ports.Port("x", "127.0.0.1", 8080), tcp) == []


def test_status_piped_into_head_exits_quietly(tmp_path: Path) -> None:
    import os
    import sys

    root = Path(__file__).resolve().parents[2]
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.cluster", "status"],
        cwd=root,
        env={**os.environ, "CODEMODE_CACHE": str(tmp_path)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # the reader goes away before the first line
    stderr = proc.stderr.read().decode()
    assert proc.wait(timeout=60) in (141, 3)
    assert "Traceback" not in stderr and "BrokenPipe" not in stderr, stderr


def _teardown_in(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, ...]]:
    """Run node.teardown_host against a sandbox; return the host commands it ran."""
    from . import node

    calls: list[tuple[str, ...]] = []
    monkeypatch.setenv("CODEMODE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(node, "NETNS_DIR", tmp_path / "netns")
    monkeypatch.setattr(node, "containerd_state", lambda: tmp_path / "run-containerd")
    monkeypatch.setattr(
        node,
        "_sh",
        lambda *argv: calls.append(argv) or subprocess.CompletedProcess(argv, 1, "", ""),
    )
    monkeypatch.setattr(node, "_kill_shims", lambda: None)
    monkeypatch.setattr(node, "_kill_pod_cgroups", lambda: calls.append(("kill-pod-cgroups",)))
    monkeypatch.setattr(node, "_unmount_under", lambda prefixes: None)
    (tmp_path / "netns").mkdir()
    (tmp_path / "netns" / "cni-someone-else").touch()
    (tmp_path / "run-containerd" / "io.containerd.runtime.v2.task").mkdir(parents=True)
    (tmp_path / "run-containerd" / "ttrpc.sock").touch()
    return calls


def test_down_with_nothing_up_leaves_other_runtimes_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from . import node
    from .layout import layout

    calls = _teardown_in(tmp_path, monkeypatch)
    node.teardown_host(layout("node"))
    assert ("ip", "netns", "delete", "cni-someone-else") not in calls
    assert ("kill-pod-cgroups",) not in calls
    assert not (tmp_path / "run-containerd").exists()  # our runtime state is gone


def test_down_removes_only_the_namespaces_made_while_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import json

    from . import node
    from .layout import layout

    calls = _teardown_in(tmp_path, monkeypatch)
    lay = layout("node")
    lay.run.mkdir(parents=True)
    (lay.run / "host-state.json").write_text(json.dumps({"netns_before": ["cni-someone-else"]}))
    (tmp_path / "netns" / "cni-ours").touch()
    node.teardown_host(lay)
    assert ("ip", "netns", "delete", "cni-ours") in calls
    assert ("ip", "netns", "delete", "cni-someone-else") not in calls
    assert ("kill-pod-cgroups",) in calls
    assert not (lay.run / "host-state.json").exists()


def test_host_changes_are_recorded_before_they_are_made(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An ``up`` killed right after adding the lo address must leave a state
    file saying so, or ``down`` never removes the address."""
    import json

    from . import node
    from .layout import layout

    monkeypatch.setenv("CODEMODE_CACHE", str(tmp_path))
    lay = layout("node")
    seen: dict[str, object] = {}

    def fake_sh(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.CompletedProcess(argv, 0, "1: lo    inet 127.0.0.1/8 scope host lo", "")

    def fake_run(argv: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
        if argv[:3] == ["ip", "addr", "add"]:
            seen.update(json.loads((lay.run / "host-state.json").read_text()))
            raise KeyboardInterrupt  # killed right here
        raise AssertionError(argv)

    monkeypatch.setattr(node, "_sh", fake_sh)
    monkeypatch.setattr(node.subprocess, "run", fake_run)
    monkeypatch.setattr(node, "_bridge_netfilter_before", lambda: "0")
    with pytest.raises(KeyboardInterrupt):
        node.prepare_host(lay)
    assert seen["lo_ip_added"] is True
    assert seen["bridge_nf"] == "0" and "ip_forward" in seen
