"""Build codemode's own images (session and operator) for the local cluster.

`python -m tests.cluster.project_images` rebuilds both after a source change:
a wheelhouse made on the host (TLS inside builds is not trusted here), then
`buildah bud` of session-image/Dockerfile and operator/Dockerfile on the
debootstrapped base, saved for `ctr images import` into containerd's k8s.io
namespace. Third-party wheels are cached by the hash of pyproject.toml.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from . import images, node, paths

ROOT = Path(__file__).resolve().parents[2]
SESSION_IMAGE = "localhost/codemode/session:dev"
OPERATOR_IMAGE = "localhost/codemode/operator:dev"
PIP = [sys.executable, "-m", "pip", "wheel", "--quiet", "--disable-pip-version-check"]
# The Python of the debootstrapped base (Debian bookworm's python3). Wheels are chosen
# for it, not for the host: environment markers differ (redis needs async-timeout
# below 3.11.3) and so would compiled wheels on another minor version.
BASE_PYTHON = "3.11.2"
PLATFORMS = (
    "manylinux2014_x86_64",
    "manylinux_2_17_x86_64",
    "manylinux_2_28_x86_64",
    "manylinux_2_34_x86_64",
    "manylinux_2_36_x86_64",
    "linux_x86_64",
)


def _requirements() -> list[str]:
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    # pip's --python-version does not set python_full_version, so markers such as
    # redis's `async-timeout; python_full_version < "3.11.3"` need naming here.
    return [
        *project["dependencies"],
        *extras["session"],
        *extras["operator"],
        "async-timeout>=4.0.3",
    ]


def _deps_wheelhouse() -> Path:
    """Wheels of every dependency for BASE_PYTHON, cached outside the repo by inputs."""
    spec = " ".join([BASE_PYTHON, *PLATFORMS, *_requirements()]).encode()
    key = hashlib.sha256(spec).hexdigest()[:12]
    cache = paths.cache_root() / f"wheelhouse-{key}"
    if (cache / ".complete").exists():
        return cache
    cache.mkdir(parents=True, exist_ok=True)
    platforms = [arg for p in PLATFORMS for arg in ("--platform", p)]
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--quiet",
            "--disable-pip-version-check",
            "--only-binary=:all:",
            "--python-version",
            BASE_PYTHON,
            "--implementation",
            "cp",
            *platforms,
            "--dest",
            str(cache),
            *_requirements(),
        ],
        check=True,
    )
    (cache / ".complete").write_text("ok\n")
    return cache


def _context() -> Path:
    """A build context holding only wheelhouse/: deps plus a fresh wheel of ours."""
    context = Path(tempfile.mkdtemp(prefix="codemode-build-", dir=paths.cache_root()))
    wheelhouse = context / "wheelhouse"
    shutil.copytree(_deps_wheelhouse(), wheelhouse)
    subprocess.run([*PIP, "--no-deps", "--wheel-dir", str(wheelhouse), str(ROOT)], check=True)
    return context


def build(import_into_containerd: bool = True) -> dict[str, float]:
    """Build both images; import them when containerd is running. Returns seconds each."""
    timings: dict[str, float] = {}
    started = time.monotonic()
    context = _context()
    timings["wheelhouse"] = time.monotonic() - started
    try:
        for dockerfile, tag in (
            (ROOT / "session-image" / "Dockerfile", SESSION_IMAGE),
            (ROOT / "operator" / "Dockerfile", OPERATOR_IMAGE),
        ):
            t0 = time.monotonic()
            images.build_image(dockerfile, context, tag)
            timings[tag] = time.monotonic() - t0
    finally:
        shutil.rmtree(context, ignore_errors=True)
    if import_into_containerd and node.containerd_socket().exists():
        t0 = time.monotonic()
        images.import_all(node.ctr)
        timings["import"] = time.monotonic() - t0
    return timings


def main() -> int:
    import json

    print(json.dumps(build()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
