"""Fail before starting anything if a port a component needs is taken.

Without this check the component exits (or, worse, its readiness probe talks to
the stranger on its port) and the user digs "address already in use" out of a
log full of flag dumps. Listeners are read from ``/proc/net`` so ports on the
node address are checked before ``up`` adds that address to ``lo``.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from . import procs, wait
from .layout import NODE_HOST_IP, Layout


@dataclass(frozen=True)
class Port:
    component: str
    ip: str
    port: int
    proto: str = "tcp"

    def __str__(self) -> str:
        return f"{self.ip}:{self.port}/{self.proto}"


def wanted(lay: Layout) -> list[Port]:
    """Every fixed port the mode's components listen on."""
    loopback = "127.0.0.1"
    ports = [
        Port("etcd", loopback, lay.etcd_port),
        Port("etcd", loopback, lay.etcd_peer_port),
        Port("kube-apiserver", lay.api_ip, lay.api_port),
        Port("kube-controller-manager", loopback, lay.controller_manager_port),
        Port("kube-scheduler", loopback, lay.scheduler_port),
    ]
    if lay.mode == "node":
        from .node import COREDNS_HEALTH, COREDNS_READY

        ports += [
            Port("kubelet", loopback, 10248),
            Port("kubelet", NODE_HOST_IP, 10250),
            Port("kube-proxy", loopback, 10256),
            Port("kube-proxy", loopback, 10249),
            Port("coredns", NODE_HOST_IP, 53),
            Port("coredns", NODE_HOST_IP, 53, "udp"),
            Port("coredns", loopback, int(COREDNS_HEALTH.rsplit(":", 1)[1])),
            Port("coredns", loopback, int(COREDNS_READY.rsplit(":", 1)[1])),
        ]
    return ports


# /proc/net socket states: TCP_LISTEN; an unconnected bound UDP socket is TCP_CLOSE.
_LISTENING = {"tcp": "0A", "udp": "07"}


def _address(hex_ip: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    raw = bytes.fromhex(hex_ip)
    # The kernel prints each 32-bit word in host (little-endian) order.
    raw = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    return ipaddress.ip_address(raw)


def listeners(proto: str, proc_net: Path = Path("/proc/net")) -> list[tuple[str, int, int]]:
    """(address, port, socket inode) of every listening ``proto`` socket."""
    found = []
    for name in (proto, f"{proto}6"):
        with contextlib.suppress(OSError):
            for line in (proc_net / name).read_text().splitlines()[1:]:
                fields = line.split()
                if len(fields) < 10 or fields[3] != _LISTENING[proto]:
                    continue
                hex_ip, hex_port = fields[1].split(":")
                ip = _address(hex_ip)
                if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
                    ip = ip.ipv4_mapped
                found.append((str(ip), int(hex_port, 16), int(fields[9])))
    return found


def conflicts(port: Port, listening: list[tuple[str, int, int]]) -> list[int]:
    """Inodes of sockets that keep ``port`` from being bound: the same address,
    or a wildcard one, on the same port."""
    return [
        inode
        for ip, number, inode in listening
        if number == port.port and ip in (port.ip, "0.0.0.0", "::")
    ]


def holder(inode: int) -> str:
    """``pid N (command line)`` of the process owning socket ``inode``, if visible."""
    target = f"socket:[{inode}]"
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            for fd in os.scandir(proc / "fd"):
                with contextlib.suppress(OSError):
                    if os.readlink(fd.path) == target:
                        raw = (proc / "cmdline").read_bytes().decode(errors="replace")
                        cmd = " ".join(raw.replace("\0", " ").split())
                        return f"pid {proc.name} ({cmd[:100]})"
    return "another process"


def ensure_free(lay: Layout) -> None:
    """Raise ComponentFailed naming the component and the port's holder."""
    listening = {proto: listeners(proto) for proto in _LISTENING}
    for port in wanted(lay):
        taken = conflicts(port, listening[port.proto])
        if taken:
            raise wait.ComponentFailed(
                port.component,
                procs.log_file(lay.run, port.component),
                f"port {port} is already in use by {holder(taken[0])}; "
                "stop that process or free the port, then run `up` again",
                tail=False,
            )
