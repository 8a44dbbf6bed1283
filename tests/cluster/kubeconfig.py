"""Kubeconfig files for the admin user and each component identity."""

from __future__ import annotations

from pathlib import Path

import yaml


def write(path: Path, server: str, pki: Path, cert_name: str, user: str) -> Path:
    """Write a kubeconfig authenticating with ``<cert_name>.crt`` from ``pki``."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "codemode",
                "cluster": {"server": server, "certificate-authority": str(pki / "ca.crt")},
            }
        ],
        "users": [
            {
                "name": user,
                "user": {
                    "client-certificate": str(pki / f"{cert_name}.crt"),
                    "client-key": str(pki / f"{cert_name}.key"),
                },
            }
        ],
        "contexts": [{"name": "codemode", "context": {"cluster": "codemode", "user": user}}],
        "current-context": "codemode",
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    path.chmod(0o600)
    return path
