"""An async client of the Kubernetes API server, for the gateway's few calls.

The official client is blocking; the gateway serves many requests on one event loop, so
it speaks to the API server with httpx, configured from the same place the official
client is (the pod's ServiceAccount, else the kubeconfig).
"""

from __future__ import annotations

import json
import ssl
from collections.abc import AsyncIterator
from typing import Any

import httpx
from kubernetes import client

from codemode_operator.kube import load_config

Obj = dict[str, Any]


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status, self.message = status, message


class Gone(ApiError):
    """A watch's resourceVersion is too old (410 Gone): list again."""

    def __init__(self, message: str) -> None:
        super().__init__(410, message)


class KubeApi:
    def __init__(self, http: httpx.AsyncClient, conf: client.Configuration) -> None:
        self.http, self.conf = http, conf

    @classmethod
    def from_environment(cls) -> KubeApi:
        load_config()
        conf = client.Configuration.get_default_copy()
        context = ssl.create_default_context(cafile=conf.ssl_ca_cert)
        if not conf.verify_ssl:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        if conf.cert_file:
            context.load_cert_chain(conf.cert_file, conf.key_file)
        http = httpx.AsyncClient(
            base_url=conf.host,
            verify=context,
            timeout=httpx.Timeout(10.0),
            limits=httpx.Limits(max_connections=32, max_keepalive_connections=32),
        )
        return cls(http, conf)

    def _auth(self) -> dict[str, str]:
        # In a pod this re-reads the projected ServiceAccount token when it is rotated.
        key = self.conf.get_api_key_with_prefix("BearerToken", alias="authorization")
        return {"Authorization": key} if key else {}

    async def call(self, method: str, path: str, body: Obj | None = None, **params: Any) -> Obj:
        headers = self._auth()
        if method == "PATCH":
            headers["Content-Type"] = "application/merge-patch+json"
        response = await self.http.request(
            method, path, json=body, headers=headers, params=params or None
        )
        if response.status_code >= 400:
            try:
                message = str(response.json().get("message", ""))
            except ValueError:
                message = response.text[:200]
            raise ApiError(response.status_code, message)
        data: Obj = response.json()
        return data

    async def get_or_none(self, path: str) -> Obj | None:
        try:
            return await self.call("GET", path)
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise

    async def watch(
        self, path: str, params: dict[str, str], timeout: httpx.Timeout
    ) -> AsyncIterator[Obj]:
        """A watch's events as they arrive (one JSON object a line); 410 raises Gone."""
        async with self.http.stream(
            "GET", path, params=params, headers=self._auth(), timeout=timeout
        ) as response:
            if response.status_code >= 400:
                text = (await response.aread()).decode(errors="replace")[:200]
                if response.status_code == 410:
                    raise Gone(text)
                raise ApiError(response.status_code, text)
            async for line in response.aiter_lines():
                if line.strip():
                    event = json.loads(line)
                    if isinstance(event, dict):
                        yield event

    async def close(self) -> None:
        await self.http.aclose()
