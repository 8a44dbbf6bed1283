"""Reaching sessions through the gateway, for `Sessions` and `codemode exec`.

With CODEMODE_GATEWAY set (the gateway's URL), a session is reached at
`{gateway}/v1/namespaces/{ns}/codesessions/{name}` with the caller's own Kubernetes token:
CODEMODE_GATEWAY_TOKEN, else the kubeconfig's. No session token or pod address is read,
so the caller needs no right to Secrets or pods, only RBAC on the session.
"""

from __future__ import annotations

import os

import httpx
from codemode_session.errors import CodemodeError

GATEWAY_ENV = "CODEMODE_GATEWAY"
TOKEN_ENV = "CODEMODE_GATEWAY_TOKEN"
WORKSPACE_HEADER = "X-Codemode-Workspace"


def configured() -> str | None:
    return os.environ.get(GATEWAY_ENV, "").rstrip("/") or None


def session_url(gateway: str, namespace: str, name: str) -> str:
    return f"{gateway.rstrip('/')}/v1/namespaces/{namespace}/codesessions/{name}"


def caller_token(explicit: str | None = None) -> str:
    """The caller's bearer token: given, CODEMODE_GATEWAY_TOKEN, or the kubeconfig's."""
    token = explicit or os.environ.get(TOKEN_ENV)
    if token:
        return token
    from kubernetes import client

    from codemode_operator.kube import load_config

    load_config()
    conf = client.Configuration.get_default_copy()
    key = conf.get_api_key_with_prefix("BearerToken", alias="authorization")
    if key and key.lower().startswith("bearer "):
        return str(key[7:])
    raise CodemodeError(
        f"the gateway needs a bearer token and the kubeconfig has none (it may use a client "
        f"certificate): set {TOKEN_ENV}"
    )


def wait_ready(url: str, token: str, workspace: str | None, timeout: float) -> None:
    """Ask the gateway for the session (created in `workspace` if it is missing, resumed
    if suspended); it answers once the session runs."""
    headers = {"Authorization": f"Bearer {token}"}
    if workspace:
        headers[WORKSPACE_HEADER] = workspace
    try:
        response = httpx.get(f"{url}/health", headers=headers, timeout=timeout)
    except httpx.HTTPError as exc:
        raise CodemodeError(f"cannot reach the gateway at {url}: {exc}") from None
    if response.status_code >= 400:
        try:
            detail = response.json().get("detail", response.text)
        except ValueError:
            detail = response.text
        raise CodemodeError(f"the gateway answered {response.status_code}: {detail}")
