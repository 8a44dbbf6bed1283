#!/usr/bin/env bash
# The main job on a fresh Debian machine (as root): a real local Kubernetes node,
# codemode installed with Helm (operator + bundled Redis), the example Workspace,
# WorkflowLibrary (served by a local git server) and CodeSession, then code run in
# the session. It leaves everything running; `python -m tests.cluster down` stops it.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v redis-server >/dev/null || missing+=(redis-server)
command -v git >/dev/null || missing+=(git)
if ((${#missing[@]})); then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${missing[@]}" >/dev/null
fi
PY=${PYTHON:-python3}
"$PY" -m pip install --quiet --disable-pip-version-check -e '.[session,operator,dev]'
exec "$PY" examples/quickstart.py "$@"
