"""The main job, step by step (run it through examples/quickstart.sh).

1. a node cluster (`python -m tests.cluster up --mode node`) and our images in it;
2. `helm upgrade --install codemode helm/codemode` (operator + bundled Redis);
3. a git server on the node's host address serving examples/workflows;
4. `kubectl apply` of examples/workspace.yaml, library.yaml and session.yaml;
5. `codemode exec agent-1 ...` and examples/agent.py against the Ready session.

`--git-server` only starts step 3 on a running node cluster and prints the URL,
for following the README's steps by hand.
"""

from __future__ import annotations

import argparse
import base64
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.cluster import images, lifecycle, paths, procs  # noqa: E402
from tests.cluster.helm import helm_binary  # noqa: E402
from tests.cluster.layout import NODE_HOST_IP, layout  # noqa: E402
from tests.integration.gitserver import GitRepo  # noqa: E402

SYSTEM = "codemode-system"
NAMESPACE = "default"


def step(text: str) -> None:
    print(f"\n==> {text}", flush=True)


def run(*argv: str, stdin: str | None = None, env: dict[str, str] | None = None) -> str:
    proc = subprocess.run(
        argv,
        input=stdin,
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        check=False,
    )
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv[:3])} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc.stdout


def git_server(run_dir: Path) -> str:
    """examples/workflows as a git repository, served by a process `down` also stops."""
    state = run_dir / "quickstart"
    served = state / "served" / "workflows.git"
    if not served.exists():
        shutil.rmtree(state, ignore_errors=True)
        repo = GitRepo(state / "work")
        repo.write(
            {p.name: p.read_text() for p in (ROOT / "examples/workflows").glob("*.py")},
            sub="workflows",
        )
        repo.commit("sample workflows")
        repo.bare_copy(served)
    procs.stop(run_dir, "quickstart-gitserver")
    port_file = state / "gitserver.port"
    port_file.unlink(missing_ok=True)
    procs.start(
        run_dir,
        "quickstart-gitserver",
        [
            sys.executable,
            "-m",
            "tests.integration.gitserver",
            str(served.parent),
            "--host",
            NODE_HOST_IP,
            "--port-file",
            str(port_file),
        ],
        env={"PYTHONPATH": str(ROOT)},
    )
    for _ in range(100):
        if port_file.exists() and port_file.read_text().strip():
            break
        time.sleep(0.1)
    return f"http://{NODE_HOST_IP}:{port_file.read_text().strip()}/workflows.git"


def serve_workflows_only() -> int:
    lay = layout("node")
    if not lifecycle.is_up(lay):
        raise SystemExit("error: the node cluster is not up: run `python -m tests.cluster up`")
    print(git_server(lay.run))
    return 0


def wait_ready(kubectl: list[str], kind: str, name: str, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = subprocess.run(
            [
                *kubectl,
                "get",
                kind,
                name,
                "-o",
                'jsonpath={.status.conditions[?(@.type=="Ready")].status}',
            ],
            capture_output=True,
            text=True,
            check=False,
        ).stdout
        if out.strip() == "True":
            return
        time.sleep(1)
    raise SystemExit(
        f"{kind}/{name} not Ready after {timeout:g}s:\n" + run(*kubectl, "describe", kind, name)
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--git-server",
        action="store_true",
        help="only serve examples/workflows over http and print its URL",
    )
    if parser.parse_args().git_server:
        return serve_workflows_only()
    started = time.monotonic()
    lay = layout("node")
    step("local Kubernetes node (etcd, API server, kubelet on containerd, kube-proxy, CoreDNS)")
    if not lifecycle.is_up(lay):
        lifecycle.up("node")
    kubeconfig = str(lay.kubeconfig)
    kubectl = [str(paths.binary("kubectl")), f"--kubeconfig={kubeconfig}"]

    step("images: session, operator and Redis, built from our Dockerfiles and imported")
    images.build_project_images()
    images.build_redis()
    lifecycle.import_images_if_up()

    step("helm upgrade --install codemode helm/codemode -n codemode-system")
    run(
        str(helm_binary()),
        f"--kubeconfig={kubeconfig}",
        "upgrade",
        "--install",
        "codemode",
        str(ROOT / "helm/codemode"),
        "-n",
        SYSTEM,
        "--create-namespace",
        "--wait",
        "--timeout",
        "5m",
        # This cluster's CoreDNS runs on the host, not in kube-dns pods: let sessions reach it.
        "--set",
        f"session.dns.cidrs={{{NODE_HOST_IP}/32}}",
    )

    step("a git server with examples/workflows, and the examples applied")
    url = git_server(lay.run)
    secret: Any = yaml.safe_load(
        run(*kubectl, "-n", SYSTEM, "get", "secret", "codemode-redis", "-o", "yaml")
    )
    admin_url = base64.b64decode(secret["data"]["url"]).decode()
    run(
        *kubectl,
        "-n",
        NAMESPACE,
        "apply",
        "-f",
        "-",
        stdin=yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": "codemode-redis"},
                "stringData": {"url": admin_url},
            }
        ),
    )
    library = yaml.safe_load((ROOT / "examples/library.yaml").read_text())
    library["spec"]["source"]["url"] = url
    manifests = "\n---\n".join(
        [
            (ROOT / "examples/workspace.yaml").read_text(),
            yaml.safe_dump(library),
            (ROOT / "examples/session.yaml").read_text(),
        ]
    )
    print(run(*kubectl, "-n", NAMESPACE, "apply", "-f", "-", stdin=manifests), end="")
    wait_ready(kubectl, "workflowlibrary", "team-workflows")
    wait_ready(kubectl, "codesession", "agent-1")
    print(run(*kubectl, "-n", NAMESPACE, "get", "codemode"), end="")

    step("codemode exec agent-1 'workflows.top_words(text=..., n=2)'")
    env = {"KUBECONFIG": kubeconfig}
    print(
        run(
            "codemode",
            "exec",
            "agent-1",
            "-n",
            NAMESPACE,
            'workflows.top_words(text="the cat and the hat and the bat", n=2)',
            env=env,
        ),
        end="",
    )
    step("python examples/agent.py --session agent-1")
    print(
        run(
            sys.executable,
            str(ROOT / "examples/agent.py"),
            "--session",
            "agent-1",
            "--namespace",
            NAMESPACE,
            env=env,
        ),
        end="",
    )

    print(
        f"\ncodemode is running ({time.monotonic() - started:.0f}s). Try:\n"
        f'  eval "$(python -m tests.cluster env)"   # KUBECONFIG; kubectl and helm on PATH\n'
        f"  kubectl get codemode\n"
        f"  codemode exec agent-1 'artifacts.list()'\n"
        f"  python -m tests.cluster down        # stop everything\n"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
