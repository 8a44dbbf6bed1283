"""Container images without a registry.

Images are built with buildah into a private store under the cache, saved as
docker-archive tarballs in ``images/``, and imported into containerd's
``k8s.io`` namespace under fully qualified ``localhost/...`` names, which pods
use with ``imagePullPolicy: IfNotPresent`` so nothing is ever pulled.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from . import locks, paths, versions

PAUSE = "localhost/codemode/pause:3.10"
SESSION = "localhost/codemode/session:dev"
OPERATOR = "localhost/codemode/operator:dev"
REPO = Path(__file__).resolve().parents[2]
# Our Dockerfiles and the images they make; both install codemode[session,operator] from
# one wheelhouse, which also carries the search extra (the session image installs it).
PROJECT_IMAGES = (
    (REPO / "session-image" / "Dockerfile", SESSION),
    (REPO / "operator" / "Dockerfile", OPERATOR),
)
PROJECT_SOURCES = ("session-image/", "operator/", "pyproject.toml")
BASE = f"localhost/codemode/base:{versions.DEBIAN_SUITE}"
# pip and git because our Dockerfiles install from a wheelhouse with pip and
# skip their apt-get step when git is present (no network inside builds).
BASE_PACKAGES = ("python3", "python3-pip", "python3-venv", "git", "ca-certificates")

# A pause process: PID 1 of every pod sandbox. It only holds the namespaces,
# reaps orphans, and exits cleanly on SIGINT/SIGTERM.
PAUSE_C = r"""
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

static void on_term(int sig) { (void)sig; _exit(0); }
static void on_child(int sig) {
    (void)sig;
    while (waitpid(-1, NULL, WNOHANG) > 0) {}
}

int main(void) {
    struct sigaction term = {.sa_handler = on_term};
    struct sigaction child = {.sa_handler = on_child, .sa_flags = SA_NOCLDSTOP};
    sigaction(SIGINT, &term, NULL);
    sigaction(SIGTERM, &term, NULL);
    sigaction(SIGCHLD, &child, NULL);
    for (;;) pause();
}
"""


def _slug(tag: str) -> str:
    return tag.replace("/", "_").replace(":", "_")


def archive_path(tag: str) -> Path:
    return paths.images_dir() / f"{_slug(tag)}.tar"


def _buildah_prefix() -> list[str]:
    store = paths.cache_root() / "buildah"
    return [
        "buildah",
        f"--root={store / 'storage'}",
        "--runroot=/run/codemode/buildah",
        "--storage-driver=overlay",
    ]


def buildah(*args: str, capture: bool = True) -> str:
    """buildah with a private store, so the machine's own store is untouched;
    chroot isolation works inside unprivileged-looking containers too."""
    cmd = [*_buildah_prefix(), *args]
    print("+", " ".join(cmd), flush=True)
    if not capture:  # long builds: let their output (and errors) show
        subprocess.run(cmd, check=True)
        return ""
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"buildah {args[0]} failed: {proc.stderr.strip()}")
    return proc.stdout.strip()


def _save(tag: str) -> Path:
    out = archive_path(tag)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.unlink(missing_ok=True)
    buildah("push", tag, f"docker-archive:{tmp}:{tag}")
    tmp.rename(out)
    return out


def build_pause() -> Path:
    """A static pause binary in an otherwise empty image."""
    if archive_path(PAUSE).exists():
        return archive_path(PAUSE)
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "pause.c"
        src.write_text(PAUSE_C)
        binary = Path(tmp) / "pause"
        subprocess.run(["gcc", "-static", "-Os", "-s", "-o", str(binary), str(src)], check=True)
        ctr = buildah("from", "scratch")
        try:
            buildah("copy", ctr, str(binary), "/pause")
            buildah("config", "--entrypoint", '["/pause"]', "--user", "65535:65535", ctr)
            buildah("commit", ctr, PAUSE)
        finally:
            buildah("rm", ctr)
    return _save(PAUSE)


def _base_key() -> str:
    spec = f"{versions.DEBIAN_SUITE} {versions.DEBIAN_MIRROR} {' '.join(BASE_PACKAGES)}"
    return hashlib.sha256(spec.encode()).hexdigest()[:12]


def _rootfs_tarball() -> Path:
    """debootstrap once per (suite, mirror, packages); the slow step, so it is cached."""
    tarball = paths.images_dir() / f"rootfs-{versions.DEBIAN_SUITE}-{_base_key()}.tar"
    if tarball.exists():
        return tarball
    tarball.parent.mkdir(parents=True, exist_ok=True)
    for stale in paths.images_dir().glob("rootfs-*.tar"):
        stale.unlink()
    with tempfile.TemporaryDirectory(dir=paths.cache_root()) as tmp:
        root = Path(tmp) / "rootfs"
        subprocess.run(
            [
                "debootstrap",
                "--variant=minbase",
                f"--include={','.join(BASE_PACKAGES)}",
                versions.DEBIAN_SUITE,
                str(root),
                versions.DEBIAN_MIRROR,
            ],
            check=True,
        )
        for junk in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for f in (root / junk).glob("*"):
                if f.is_file():
                    f.unlink()
        tmp_tar = tarball.with_suffix(".tmp")
        subprocess.run(
            ["tar", "-C", str(root), "--numeric-owner", "-cf", str(tmp_tar), "."], check=True
        )
        tmp_tar.rename(tarball)
    return tarball


def build_base() -> Path:
    """Debian with python3: the BASE_IMAGE our Dockerfiles build FROM."""
    key_file = archive_path(BASE).with_suffix(".key")
    if archive_path(BASE).exists() and key_file.exists() and key_file.read_text() == _base_key():
        return archive_path(BASE)
    tarball = _rootfs_tarball()
    ctr = buildah("from", "scratch")
    try:
        buildah("add", ctr, str(tarball), "/")
        buildah(
            "config",
            "--env",
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "--cmd",
            '["python3"]',
            ctr,
        )
        buildah("commit", ctr, BASE)
    finally:
        buildah("rm", ctr)
    saved = _save(BASE)
    key_file.write_text(_base_key())
    return saved


def build_image(
    dockerfile: Path, context: Path, tag: str, build_args: Mapping[str, str] | None = None
) -> Path:
    """Build a Dockerfile on our base image (``BASE_IMAGE`` build arg) and save
    it for import; call again after a source change to rebuild."""
    build_base()
    args = {"BASE_IMAGE": BASE, **(build_args or {})}
    flags = [f"--build-arg={k}={v}" for k, v in args.items()]
    buildah(
        "bud",
        "--isolation=chroot",
        "--pull-never",
        f"--file={dockerfile}",
        f"--tag={tag}",
        *flags,
        str(context),
        capture=False,
    )
    return _save(tag)


def _repo_files() -> list[str]:
    out = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return [f for f in out.splitlines() if (REPO / f).is_file()]


def _sources_mtime() -> float:
    """Newest mtime of anything that goes into our wheels."""
    return max((REPO / f).stat().st_mtime for f in _repo_files() if f.startswith(PROJECT_SOURCES))


def _copy_checkout(dest: Path) -> Path:
    """The working tree's files (tracked and new), so ``pip wheel`` leaves no
    build/ or egg-info behind in the repo."""
    shutil.rmtree(dest, ignore_errors=True)
    for f in _repo_files():
        (dest / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / f, dest / f)
    return dest


def _pip_wheel(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", *args], check=True)


def _complete_for_base(wheelhouse: Path) -> None:
    """Environment markers were evaluated by the host's Python, not the base
    image's (e.g. redis needs async-timeout only below 3.11.3). Resolve offline
    with the base image's pip and add each wheel it misses, until it resolves."""
    ctr = buildah("from", "--pull-never", BASE)
    try:
        for _ in range(20):
            proc = subprocess.run(
                [
                    *_buildah_prefix(),
                    "run",
                    "--isolation=chroot",
                    f"--volume={wheelhouse}:/wheelhouse:ro",
                    ctr,
                    "--",
                    "python3",
                    "-m",
                    "pip",
                    "install",
                    "--break-system-packages",
                    "--dry-run",
                    "--quiet",
                    "--no-index",
                    "--find-links=/wheelhouse",
                    "codemode[session,operator,search]",
                ],
                capture_output=True,
                text=True,
            )
            if proc.returncode == 0:
                return
            missing = re.search(r"No matching distribution found for ([^;\s]+)", proc.stderr)
            if missing is None:
                raise RuntimeError(f"base image cannot install the wheelhouse: {proc.stderr}")
            print(f"wheelhouse: adding {missing.group(1)} for the base image's Python", flush=True)
            _pip_wheel("--wheel-dir", str(wheelhouse), missing.group(1))
        raise RuntimeError("wheelhouse still incomplete for the base image after 20 rounds")
    finally:
        buildah("rm", ctr)


def build_wheelhouse(context: Path) -> Path:
    """Wheels made on the host (TLS inside builds is not trusted here):
    third-party ones cached by the hash of pyproject.toml, ours rebuilt."""
    src = _copy_checkout(context / "src")
    key = hashlib.sha256((REPO / "pyproject.toml").read_bytes()).hexdigest()[:12]
    deps = paths.cache_root() / f"wheelhouse-{key}"
    if not (deps / ".complete").exists():
        _pip_wheel("--wheel-dir", str(deps), f"{src}[session,operator,search]")
        _complete_for_base(deps)
        for own in deps.glob("codemode-*.whl"):
            own.unlink()
        (deps / ".complete").write_text("")
    wheelhouse = context / "wheelhouse"
    shutil.rmtree(wheelhouse, ignore_errors=True)
    shutil.copytree(deps, wheelhouse)
    _pip_wheel("--no-deps", "--wheel-dir", str(wheelhouse), str(src))
    shutil.rmtree(src)
    return wheelhouse


def project_images_stale() -> bool:
    """True if an image archive is missing or older than a source file."""
    newest = _sources_mtime()
    return any(
        not archive_path(tag).exists() or archive_path(tag).stat().st_mtime < newest
        for _, tag in PROJECT_IMAGES
    )


def build_project_images(force: bool = False) -> list[Path]:
    """Wheelhouse, then ``buildah bud`` of session-image/ and operator/
    Dockerfiles on the base image: the one command after a source change.
    Skipped when every archive is newer than every source file."""
    with locks.locked("project-images"):
        if force or project_images_stale():
            with tempfile.TemporaryDirectory(
                prefix="build-context-", dir=paths.cache_root()
            ) as tmp:
                build_wheelhouse(Path(tmp))
                for dockerfile, tag in PROJECT_IMAGES:
                    start = time.monotonic()
                    build_image(dockerfile, Path(tmp), tag)
                    print(f"built {tag} in {time.monotonic() - start:.0f}s", flush=True)
            buildah("rmi", "--prune")  # drop the layers the previous build left dangling
    return [archive_path(tag) for _, tag in PROJECT_IMAGES]


REDIS = "localhost/codemode/redis:7"
REDIS_UID = 999  # the chart's default runAsUser for its bundled Redis


def build_redis() -> Path:
    """Debian's redis-server (7.x on bookworm) in a debootstrapped image, for the
    chart's bundled Redis on the local cluster (no registry here). It runs as
    uid/gid 999 with /data as its working directory; cached like the base."""
    spec = f"{versions.DEBIAN_SUITE} {versions.DEBIAN_MIRROR} redis-server {REDIS_UID}"
    key = hashlib.sha256(spec.encode()).hexdigest()[:12]
    key_file = archive_path(REDIS).with_suffix(".key")
    if archive_path(REDIS).exists() and key_file.exists() and key_file.read_text() == key:
        return archive_path(REDIS)
    with tempfile.TemporaryDirectory(dir=paths.cache_root()) as tmp:
        root = Path(tmp) / "rootfs"
        subprocess.run(
            [
                "debootstrap",
                "--variant=minbase",
                "--include=redis-server",
                versions.DEBIAN_SUITE,
                str(root),
                versions.DEBIAN_MIRROR,
            ],
            check=True,
        )
        for junk in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for f in (root / junk).glob("*"):
                if f.is_file():
                    f.unlink()
        (root / "data").mkdir(exist_ok=True)
        os.chown(root / "data", REDIS_UID, REDIS_UID)
        tarball = Path(tmp) / "rootfs.tar"
        subprocess.run(
            ["tar", "-C", str(root), "--numeric-owner", "-cf", str(tarball), "."], check=True
        )
        ctr = buildah("from", "scratch")
        try:
            buildah("add", ctr, str(tarball), "/")
            buildah(
                "config",
                "--env",
                "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "--workingdir",
                "/data",
                "--user",
                f"{REDIS_UID}:{REDIS_UID}",
                "--port",
                "6379",
                "--entrypoint",
                '["redis-server"]',
                "--cmd",
                "[]",
                ctr,
            )
            buildah("commit", ctr, REDIS)
        finally:
            buildah("rm", ctr)
    saved = _save(REDIS)
    key_file.write_text(key)
    return saved


def build_defaults() -> list[Path]:
    with locks.locked("base-images"):
        return [build_pause(), build_base(), build_redis()]


def import_all(ctr: Callable[..., str]) -> list[str]:
    """Import every saved archive containerd does not have in its current
    version (a stamp next to the archive records what was imported)."""
    imported: list[str] = []
    present = set(ctr("images", "list", "-q").split())
    for archive in sorted(paths.images_dir().glob("*.tar")) if paths.images_dir().exists() else []:
        if archive.name.startswith("rootfs-"):
            continue
        stamp = archive.with_suffix(".imported")
        tag = stamp.read_text().strip() if stamp.exists() else ""
        fresh = stamp.exists() and stamp.stat().st_mtime >= archive.stat().st_mtime
        if fresh and tag in present:
            continue
        start = time.monotonic()
        out = ctr("images", "import", "--snapshotter=overlayfs", str(archive))
        names = [line.split()[1] for line in out.splitlines() if line.startswith("unpacking ")]
        stamp.write_text((names[0] if names else archive.stem) + "\n")
        print(f"imported {archive.name} in {time.monotonic() - start:.1f}s", flush=True)
        imported.append(archive.name)
    return imported


def have_buildah() -> bool:
    return shutil.which("buildah") is not None
