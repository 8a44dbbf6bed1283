"""Build the pinned cluster binaries from the Go module proxy.

No release tarballs or container registries are reachable, but the Go module
proxy is, so every binary is compiled from source in a throwaway wrapper
module. Results are cached by version; a stamp file marks a finished build.
"""

from __future__ import annotations

import functools
import json
import os
import re
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from . import hostdeps, locks, paths, versions


@functools.cache
def _go() -> str:
    """Resolved on first use only: it may download a Go toolchain."""
    return hostdeps.go_binary()


K8S_COMMANDS = (
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kubectl",
    "kubelet",
    "kube-proxy",
)


@dataclass(frozen=True)
class Target:
    """One binary: the module to require, the package to build, where it goes."""

    name: str
    module: str
    version: str
    package: str
    out_dir: Path
    optional: bool = False


def targets() -> list[Target]:
    k8s = [
        Target(
            n,
            "k8s.io/kubernetes",
            versions.KUBERNETES,
            f"k8s.io/kubernetes/cmd/{n}",
            paths.k8s_bin(),
        )
        for n in K8S_COMMANDS
    ]
    return [
        Target(
            "etcd",
            "go.etcd.io/etcd/server/v3",
            versions.ETCD,
            "go.etcd.io/etcd/server/v3",
            paths.etcd_bin(),
        ),
        Target(
            "kwok", "sigs.k8s.io/kwok", versions.KWOK, "sigs.k8s.io/kwok/cmd/kwok", paths.kwok_bin()
        ),
        *k8s,
        Target(
            "coredns",
            "github.com/coredns/coredns",
            versions.COREDNS,
            "github.com/coredns/coredns",
            paths.coredns_bin(),
            optional=True,
        ),
        Target(
            "kube-router",
            "github.com/cloudnativelabs/kube-router/v2",
            versions.KUBE_ROUTER,
            "github.com/cloudnativelabs/kube-router/v2/cmd/kube-router",
            paths.kube_router_bin(),
        ),
    ]


def _go_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(CGO_ENABLED="0", GOFLAGS="-trimpath -buildvcs=false", GOTOOLCHAIN="local")
    env["PATH"] = f"{Path(_go()).parent}:{env.get('PATH', '')}"
    return env


def _run(cmd: list[str], cwd: Path) -> None:
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, cwd=cwd, env=_go_env(), check=True)


def _staging_replaces(workdir: Path) -> list[str]:
    """k8s.io/kubernetes points its staging modules at ./staging; a wrapper must
    point them at their published v0.x versions instead."""
    out = subprocess.run(
        [_go(), "mod", "download", "-json", f"k8s.io/kubernetes@{versions.KUBERNETES}"],
        cwd=workdir,
        env=_go_env(),
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    gomod = Path(json.loads(out)["GoMod"]).read_text()
    mods = re.findall(r"^\s*(k8s\.io/[\w.\-/]+)\s+=>\s+\./staging/", gomod, flags=re.M)
    return [f"replace {m} => {m} {versions.KUBERNETES_STAGING}" for m in mods]


def _ldflags(t: Target) -> str:
    flags = ["-s", "-w"]
    if t.module == "k8s.io/kubernetes":
        v = versions.KUBERNETES
        major, minor = v.lstrip("v").split(".")[:2]
        for pkg in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
            flags += [
                f"-X {pkg}.gitVersion={v}",
                f"-X {pkg}.gitMajor={major}",
                f"-X {pkg}.gitMinor={minor}",
                f"-X {pkg}.gitTreeState=clean",
                f"-X {pkg}.buildDate=1970-01-01T00:00:00Z",
            ]
    elif t.name == "kube-router":
        # It logs its version at start; without this it says "version , built on ".
        flags.append(f"-X {t.module}/pkg/version.Version={t.version}")
    return " ".join(flags)


KWOK_STAGE_FILES = (
    "node/fast/node-initialize.yaml",
    "node/heartbeat/node-heartbeat.yaml",
    "pod/fast/pod-ready.yaml",
    "pod/fast/pod-complete.yaml",
    "pod/fast/pod-delete.yaml",
)


def kwok_stages_path() -> Path:
    return paths.kwok_bin().parent / "stages.yaml"


def write_kwok_stages(workdir: Path) -> None:
    """The kwok binary has no built-in behaviour; take the upstream "fast"
    stages (node ready + heartbeat, pod ready/complete/delete) from the same
    pinned module so they always match the binary."""
    out = subprocess.run(
        [_go(), "mod", "download", "-json", f"sigs.k8s.io/kwok@{versions.KWOK}"],
        cwd=workdir,
        env=_go_env(),
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    root = Path(json.loads(out)["Dir"]) / "kustomize" / "stage"
    docs = [(root / f).read_text().strip() for f in KWOK_STAGE_FILES]
    kwok_stages_path().write_text("\n---\n".join(docs) + "\n")


def _stamp(t: Target) -> Path:
    return t.out_dir / f".{t.name}.built"


def is_built(name: str) -> bool:
    return any(
        _stamp(t).exists() and (t.out_dir / t.name).exists() for t in targets() if t.name == name
    )


def build_one(t: Target, workdir: Path) -> float:
    """Build one target in a fresh wrapper module; return seconds taken."""
    start = time.monotonic()
    mod = workdir / t.name
    mod.mkdir(parents=True, exist_ok=True)
    lines = [
        "module codemode.local/clusterbuild",
        "",
        "go 1.24",
        "",
        f"require {t.module} {t.version}",
        "",
    ]
    if t.module == "k8s.io/kubernetes":
        lines += _staging_replaces(mod)
    (mod / "go.mod").write_text("\n".join(lines) + "\n")
    _run([_go(), "mod", "download", t.module], mod)
    t.out_dir.mkdir(parents=True, exist_ok=True)
    tmp_out = t.out_dir / f".{t.name}.tmp"
    _run([_go(), "build", "-mod=mod", "-ldflags", _ldflags(t), "-o", str(tmp_out), t.package], mod)
    tmp_out.rename(t.out_dir / t.name)
    if t.name == "kwok":
        write_kwok_stages(mod)
    seconds = time.monotonic() - start
    _stamp(t).write_text(json.dumps({"version": t.version, "seconds": round(seconds, 1)}) + "\n")
    return seconds


def build(names: list[str] | None = None) -> dict[str, float]:
    """Build every missing binary (or only ``names``); return build seconds."""
    times: dict[str, float] = {}
    failed: list[str] = []
    with locks.locked("build"), tempfile.TemporaryDirectory(prefix="codemode-gobuild-") as tmp:
        for t in targets():
            if names and t.name not in names:
                continue
            if is_built(t.name):
                print(f"cached: {t.name} {t.version}", flush=True)
                continue
            try:
                times[t.name] = build_one(t, Path(tmp))
                print(f"built: {t.name} {t.version} in {times[t.name]:.0f}s", flush=True)
            except subprocess.CalledProcessError:
                if not t.optional:
                    raise
                failed.append(t.name)
                print(f"optional build failed: {t.name}", flush=True)
        if is_built("kwok") and not kwok_stages_path().exists():
            write_kwok_stages(Path(tmp))
    log = paths.cache_root() / "build-times.json"
    old = json.loads(log.read_text()) if log.exists() else {}
    old.update({k: round(v, 1) for k, v in times.items()})
    log.write_text(json.dumps(old, indent=2) + "\n")
    return times
