"""The gateway on a real node (issue 15 items 1 and 5), called from the host through its
Service address, with a ServiceAccount token that RBAC allows on session A only.

The gateway runs as a pod of the chart's own gateway manifests (Deployment, Service,
ServiceAccount and RBAC rendered by `helm template`), on the operator image; the
operator runs on the host, as in the other e2e tests."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from codemode_operator.sessions import Sessions
from codemode_session.client import Output, SessionClient, SessionError
from codemode_session.errors import CodemodeError
from codemode_session.results import ExecuteResult
from kubernetes import client

from tests.cluster.pytest_plugin import Cluster
from tests.e2e.gateway_support import (
    agent_token,
    gateway_logs,
    gateway_pod,
    reminted,
    service_account_key,
)
from tests.e2e.host_operator import admin_secret, host_operator, workspace_spec
from tests.e2e.hostredis import HostRedis
from tests.k8s.operator_fixture import Kinds, install_crds, wait_for

pytestmark = pytest.mark.e2e

CHART = Path(__file__).resolve().parents[2] / "helm" / "codemode"
WORKSPACE = "gw"


@pytest.fixture
def env(
    cluster: Cluster,
    namespace: str,
    project_images: dict[str, str],
    host_redis: HostRedis,
    tmp_path: Path,
) -> Iterator[dict[str, Any]]:
    api = cluster.api_client()
    install_crds(cluster.kubeconfig, api)
    kinds = Kinds(api, namespace)
    redis_ref = admin_secret(kinds, host_redis.url)
    operator = host_operator(cluster, namespace, project_images["session"], tmp_path)
    with operator:
        kinds.create("workspaces", WORKSPACE, workspace_spec(redis_ref))
        for name in ("a", "b"):
            kinds.create("codesessions", name, {"workspaceRef": WORKSPACE})
        token = agent_token(cluster.kubeconfig, kinds, "a")
        with gateway_pod(cluster.kubeconfig, kinds, project_images["operator"]) as gateway:
            for name in ("a", "b"):
                wait_for(
                    lambda n=name: _phase(kinds, n, "Ready"),  # type: ignore[misc]
                    180,
                    f"{name} Ready",
                    op=operator,
                )
            yield {
                "kinds": kinds,
                "operator": operator,
                "gateway": gateway["service"],
                "metrics": gateway["metrics"],
                "token": token,
                "namespace": namespace,
                "tmp": tmp_path,
                "kubeconfig": cluster.kubeconfig,
            }


def _phase(kinds: Kinds, name: str, phase: str) -> dict[str, Any] | None:
    obj = kinds.get("codesessions", name)
    return obj if ((obj or {}).get("status") or {}).get("phase") == phase else None


def _url(env: dict[str, Any], name: str) -> str:
    return f"{env['gateway']}/v1/namespaces/{env['namespace']}/codesessions/{name}"


def _forged(token: str) -> str:
    """The same claims with another signature: only the API server's key can sign."""
    head, claims, signature = token.split(".")
    return f"{head}.{claims}.{signature[::-1]}"


def test_gateway_end_to_end(env: dict[str, Any]) -> None:
    """One gateway, one set of sessions (each takes a minute to set up), in order: RBAC,
    streams and files, `codemode exec` and metrics, then a suspended session's resume."""
    rbac_decides(env)
    a_token_scoped_to_one_session_works_there_only(env)
    a_revoked_token_stops_working_within_the_review_cache_time(env)
    streams_and_files_pass_through(env)
    codemode_exec_uses_the_gateway_and_metrics_count(env)
    a_suspended_session_resumes_on_request(env)
    maker = a_session_is_created_on_first_use_when_the_caller_may(env)
    a_deleted_session_is_refused_at_once(env, maker)
    an_expired_token_answers_401(env)  # last: it skips on a cluster whose key is not ours


def rbac_decides(env: dict[str, Any]) -> None:
    token = env["token"]
    with SessionClient(_url(env, "a"), token=token, timeout=120) as client:
        assert client.execute("x = 6 * 7\nx").value == 42

    # b exists and runs, but RBAC does not allow this caller on it.
    refused = httpx.get(_url(env, "b") + "/health", headers={"Authorization": f"Bearer {token}"})
    assert refused.status_code == 403, refused.text
    assert "may not create codesessions/exec 'b'" in refused.json()["detail"]
    with SessionClient(_url(env, "b"), token=token) as client, pytest.raises(SessionError) as err:
        client.execute("1")
    assert err.value.status == 403

    for bad in (_forged(token), "not-a-token"):
        answer = httpx.get(_url(env, "a") + "/health", headers={"Authorization": f"Bearer {bad}"})
        assert answer.status_code == 401, answer.text
        assert "not valid" in answer.json()["detail"]
    assert httpx.get(_url(env, "a") + "/health").status_code == 401


def a_token_scoped_to_one_session_works_there_only(env: dict[str, Any]) -> None:
    """A ServiceAccount RBAC allows on a and b; a short-lived token issued for session a's
    audience reaches a only, and the API server itself does not take it."""
    kinds, namespace = env["kinds"], env["namespace"]
    both = _service_account_token(env, "both", [
        {"apiGroups": ["codemode.dev"], "resources": ["codesessions/exec"],
         "resourceNames": ["a", "b"], "verbs": ["create"]},
    ])  # fmt: skip
    audience = f"codemode.dev/v1/namespaces/{namespace}/codesessions/a"
    scoped = kinds.core.create_namespaced_service_account_token(
        "both", namespace, {"spec": {"audiences": [audience], "expirationSeconds": 600}}
    ).status.token
    for token, session, status in [(both, "b", 200), (scoped, "a", 200), (scoped, "b", 401)]:
        answer = httpx.get(_url(env, session) + "/health", headers=_bearer(token))
        assert answer.status_code == status, (session, answer.text)
    review = client.AuthenticationV1Api(kinds.core.api_client).create_token_review(
        {"spec": {"token": scoped}}
    )
    assert not review.status.authenticated


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def a_revoked_token_stops_working_within_the_review_cache_time(env: dict[str, Any]) -> None:
    """A token bound to a Secret is revoked with it (the API server's own revocation):
    the gateway refuses it once its cached review expires (authCacheSeconds, 10)."""
    kinds, namespace = env["kinds"], env["namespace"]
    secret = kinds.core.create_namespaced_secret(namespace, {"metadata": {"name": "binding"}})
    bound = {"kind": "Secret", "apiVersion": "v1", "name": "binding", "uid": secret.metadata.uid}
    token = kinds.core.create_namespaced_service_account_token(
        "agent", namespace, {"spec": {"expirationSeconds": 3600, "boundObjectRef": bound}}
    ).status.token
    headers = {"Authorization": f"Bearer {token}"}
    assert httpx.get(_url(env, "a") + "/health", headers=headers).status_code == 200
    kinds.core.delete_namespaced_secret("binding", namespace)
    revoked = time.monotonic()
    wait_for(
        lambda: httpx.get(_url(env, "a") + "/health", headers=headers).status_code == 401,
        30,
        "the revoked token refused",
        interval=0.5,
    )
    assert time.monotonic() - revoked < 10 + 5


def an_expired_token_answers_401(env: dict[str, Any]) -> None:
    """Tokens the API server issues live 10 minutes at least, so the agent's token is
    signed again with the cluster's own key and other times. Valid (exp in 10 minutes):
    200. Expired an hour ago: the API server refuses it, and so does the gateway (401).
    Expired 30 s ago: the API server still takes it (a minute's leeway for clock skew),
    the gateway does not. One that expires while its review is cached stops working at
    its exp, not when the cache (10 s) would let it go."""
    key = service_account_key()
    if key is None:
        pytest.skip("expired tokens: the cluster's signing key is not ours (CODEMODE_KUBECONFIG)")
    kinds, token = env["kinds"], env["token"]
    reviews = client.AuthenticationV1Api(kinds.core.api_client)

    def answer(minted: str) -> httpx.Response:
        return httpx.get(_url(env, "a") + "/health", headers=_bearer(minted))

    def api_server_takes(minted: str) -> bool:
        return bool(reviews.create_token_review({"spec": {"token": minted}}).status.authenticated)

    now = int(time.time())
    valid = reminted(token, key, iat=now, nbf=now, exp=now + 600)
    assert api_server_takes(valid)
    assert answer(valid).status_code == 200, answer(valid).text  # the minting is right
    for ago in (3600, 30):
        expired = reminted(token, key, iat=now - 600 - ago, nbf=now - 600 - ago, exp=now - ago)
        assert api_server_takes(expired) == (ago < 60), ago
        refused = answer(expired)
        assert refused.status_code == 401, (ago, refused.text)
        assert "not valid (expired" in refused.json()["detail"]

    now = int(time.time())
    short = reminted(token, key, iat=now, nbf=now, exp=now + 4)
    assert answer(short).status_code == 200  # reviewed, and cached until its exp
    time.sleep(max(0.0, now + 4.2 - time.time()))
    assert api_server_takes(short)
    assert answer(short).status_code == 401


def streams_and_files_pass_through(env: dict[str, Any]) -> None:
    """A 5-second loop's lines arrive one by one, each before the next is printed (the
    run waits for an acknowledgement uploaded through the gateway); 50 MB go up and come
    back identical."""
    code = (
        "import os, time\n"
        "started = time.time()\n"
        "for i in range(5):\n"
        "    print(f'line {i}')\n"
        "    deadline = time.time() + 30\n"
        "    while not os.path.exists(f'ack{i}') and time.time() < deadline:\n"
        "        time.sleep(0.02)\n"
        "    assert os.path.exists(f'ack{i}'), f'line {i} was not received while running'\n"
        "    time.sleep(max(0.0, started + i + 1 - time.time()))\n"
        "'done'"
    )
    token = env["token"]
    arrivals: list[float] = []
    with SessionClient(_url(env, "a"), token=token, timeout=120) as client:
        client.create_session()
        result: ExecuteResult | None = None
        with SessionClient(_url(env, "a"), token=token, session_id=client.session_id) as other:
            for item in client.execute_stream(code):
                if isinstance(item, Output):
                    for line in item.text.splitlines():
                        arrivals.append(time.monotonic())
                        other.upload_file(f"ack{line.split()[-1]}", b"")
                else:
                    result = item
        assert result is not None and result.error is None, result
        assert result.value == "done" and len(arrivals) == 5
        assert arrivals[-1] - arrivals[0] > 3  # one by one, not all at the end

        data = os.urandom(50 * 1024 * 1024)
        client.upload_file("big.bin", data)
        back = client.download_file("big.bin")
        assert isinstance(back, bytes)
        assert hashlib.sha256(back).digest() == hashlib.sha256(data).digest()


def a_suspended_session_resumes_on_request(env: dict[str, Any]) -> None:
    kinds, op = env["kinds"], env["operator"]
    kinds.patch("codesessions", "a", {"spec": {"suspend": True}})
    wait_for(lambda: _phase(kinds, "a", "Suspended"), 180, "a Suspended", op=op)
    with SessionClient(_url(env, "a"), token=env["token"], timeout=180) as client:
        assert client.execute("'awake'").value == "awake"
    assert _phase(kinds, "a", "Ready")
    assert kinds.get("codesessions", "a")["spec"]["suspend"] is False


def codemode_exec_uses_the_gateway_and_metrics_count(env: dict[str, Any]) -> None:
    shell = {
        **{k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")},
        "CODEMODE_GATEWAY": env["gateway"],
        "CODEMODE_GATEWAY_TOKEN": env["token"],
        "KUBECONFIG": str(env["tmp"] / "no-kubeconfig"),  # the gateway is all it needs
        "XDG_CACHE_HOME": str(env["tmp"]),
    }
    argv = [sys.executable, "-m", "codemode_session", "exec", "-n", env["namespace"]]
    done = subprocess.run(
        [*argv, "a", "print('hi')\n1 + 1"], env=shell, capture_output=True, text=True, timeout=120
    )
    assert (done.returncode, done.stdout) == (0, "hi\n2\n"), done.stderr
    denied = subprocess.run(
        [*argv, "b", "1"], env=shell, capture_output=True, text=True, timeout=120
    )
    assert denied.returncode != 0 and "403" in denied.stderr, denied.stderr

    # Metrics are on their own port; the callers' port (an Ingress's) has none.
    assert httpx.get(env["gateway"] + "/metrics").status_code == 400
    metrics = httpx.get(env["metrics"] + "/metrics").text
    for decision in ("allowed", "denied"):
        assert f'codemode_gateway_authorization_total{{decision="{decision}"}}' in metrics
    assert 'codemode_gateway_requests_total{method="POST",status="200"}' in metrics


def a_session_is_created_on_first_use_when_the_caller_may(env: dict[str, Any]) -> str:
    """...and the token of the caller that may (it may use every session)."""
    kinds, namespace = env["kinds"], env["namespace"]
    # The agent may not create CodeSessions: naming a workspace changes nothing.
    agent = Sessions(namespace=namespace, gateway=env["gateway"], token=env["token"])
    with pytest.raises(CodemodeError, match="gateway answered 403"):
        agent.address("d", workspace=WORKSPACE, timeout=30)
    assert kinds.get("codesessions", "d") is None
    # A ServiceAccount whose Role allows creating and using sessions gets one made.
    maker = _service_account_token(env, "maker", [
        {"apiGroups": ["codemode.dev"], "resources": ["codesessions", "codesessions/exec"],
         "verbs": ["create"]},
    ])  # fmt: skip
    sessions = Sessions(namespace=namespace, gateway=env["gateway"], token=maker)
    with sessions.connect("c", workspace=WORKSPACE, timeout=180) as client:
        assert client.execute("'made'").value == "made"
    assert kinds.get("codesessions", "c")["spec"]["workspaceRef"] == WORKSPACE
    return maker


def a_deleted_session_is_refused_at_once(env: dict[str, Any], token: str) -> None:
    """The gateway watches CodeSessions: c is refused as soon as it is deleted (409 while
    the operator's finalizer holds it, then 404), where a lookup cache would have routed
    to it for seconds, to its pod while it lived, then answered 503."""
    url = _url(env, "c") + "/health"
    assert httpx.get(url, headers=_bearer(token)).status_code == 200  # its address known
    env["kinds"].delete("codesessions", "c")
    deleted = time.monotonic()
    wait_for(
        lambda: httpx.get(url, headers=_bearer(token)).status_code in (404, 409),
        10,
        "c refused",
        interval=0.05,
    )
    assert time.monotonic() - deleted < 2
    # ... and that was the watch's doing: it never broke (it needs list and watch).
    assert "the watch broke" not in gateway_logs(env["kubeconfig"], env["namespace"])


def _service_account_token(env: dict[str, Any], name: str, rules: list[Any]) -> str:
    kinds, namespace = env["kinds"], env["namespace"]
    meta = {"name": name, "namespace": namespace}
    kinds.core.create_namespaced_service_account(namespace, {"metadata": meta})
    rbac = client.RbacAuthorizationV1Api(kinds.core.api_client)
    rbac.create_namespaced_role(namespace, {"metadata": meta, "rules": rules})
    rbac.create_namespaced_role_binding(
        namespace,
        {
            "metadata": meta,
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
            "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": namespace}],
        },
    )
    token: str = kinds.core.create_namespaced_service_account_token(
        name, namespace, {"spec": {"expirationSeconds": 3600}}
    ).status.token
    return token
