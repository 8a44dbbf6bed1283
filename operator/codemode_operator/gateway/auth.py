"""Who the caller is (TokenReview) and whether RBAC lets it use a session
(SubjectAccessReview), both remembered for a few seconds.

A review is a round trip to the API server; remembering its answer keeps it off the path
of all but the first request of a burst. The price: a token revoked, or a Role removed,
still works for at most `ttl` seconds on a gateway replica that saw it work. A token's
own expiry is never stretched by the cache: an answer is kept until the token's `exp` at
the latest, and a token whose `exp` has passed is refused without a review (the API
server would still take it for a minute: its leeway for clock skew).
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from codemode_operator import GROUP
from codemode_operator.gateway.kubeapi import KubeApi

RESOURCE = "codesessions"
# Using a session is `create` on its `exec` subresource, as `kubectl exec` is for pods: a
# Role can grant it per session (resourceNames) without any right to change the object.
EXEC = ("create", "exec")
CREATE = ("create", "")
MAX_ENTRIES = 10_000  # a flood of forged tokens must not grow memory without bound


def session_audience(namespace: str, name: str) -> str:
    """The audience of a token scoped to one session (`kubectl create token SA --audience
    ...`): the API server refuses it, the gateway takes it for that session only."""
    return f"{GROUP}/v1/namespaces/{namespace}/codesessions/{name}"


def workspace_audience(namespace: str, workspace: str) -> str:
    """The audience of a token scoped to the sessions of one workspace."""
    return f"{GROUP}/v1/namespaces/{namespace}/workspaces/{workspace}"


def _claims(token: str) -> dict[str, Any]:
    """A JWT's payload, unverified ({} when it has none that parses)."""
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError):
        return {}
    return claims if isinstance(claims, dict) else {}


def claimed_audiences(token: str) -> list[str]:
    """The `aud` a JWT says it has, unverified: only to know which audience to ask the
    API server to review it for."""
    aud = _claims(token).get("aud")
    if isinstance(aud, str):
        return [aud]
    return [a for a in aud if isinstance(a, str)] if isinstance(aud, list) else []


def claimed_expiry(token: str) -> float | None:
    """The `exp` a JWT says it has (seconds since the epoch), unverified: it can only
    shorten how long the gateway takes the token, never make a review unnecessary."""
    exp = _claims(token).get("exp")
    if isinstance(exp, bool) or not isinstance(exp, (int, float)):
        return None
    return float(exp)


@dataclass(frozen=True)
class User:
    username: str
    uid: str
    groups: tuple[str, ...]
    extra: tuple[tuple[str, tuple[str, ...]], ...]


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: str


class _Ttl:
    """Answers kept for `ttl` seconds, or less when `put` is given a shorter lifetime."""

    def __init__(self, ttl: float, clock: Callable[[], float]) -> None:
        self.ttl, self.clock = ttl, clock
        self.entries: dict[Any, tuple[float, Any]] = {}

    def get(self, key: Any) -> Any:
        found = self.entries.get(key)
        if found is None or found[0] <= self.clock():
            return None
        return found[1]

    def put(self, key: Any, value: Any, lifetime: float | None = None) -> None:
        if len(self.entries) >= MAX_ENTRIES:
            self.entries.clear()
        ttl = self.ttl if lifetime is None else min(self.ttl, lifetime)
        self.entries[key] = (self.clock() + ttl, value)


def token_key(token: str) -> str:
    """Tokens are never kept, only their hashes."""
    return hashlib.sha256(token.encode()).hexdigest()


class Reviewer:
    def __init__(
        self,
        api: KubeApi,
        ttl: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        """`clock` times the cache; `wall` (the epoch's clock) is what `exp` is read
        against."""
        self.api, self.wall = api, wall
        self._users = _Ttl(ttl, clock)
        self._decisions = _Ttl(ttl, clock)

    async def authenticate(self, token: str, audience: str | None = None) -> User | None:
        """The token's user, or None when the API server does not accept the token
        (forged, expired, of a deleted ServiceAccount); with `audience`, a token issued
        for that audience (and no other check than the API server's own). A token is
        taken until its `exp` at the latest, however long ago it was reviewed."""
        key = (token_key(token), audience)
        cached = self._users.get(key)
        if cached is not None:  # kept no longer than the token's exp (below)
            return cached if isinstance(cached, User) else None
        expiry = claimed_expiry(token)
        left = None if expiry is None else expiry - self.wall()
        if left is not None and left <= 0:
            return None
        spec: dict[str, Any] = {"token": token}
        if audience is not None:
            spec["audiences"] = [audience]
        review = await self.api.call(
            "POST",
            "/apis/authentication.k8s.io/v1/tokenreviews",
            {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": spec},
        )
        status = review.get("status") or {}
        user: User | bool = False
        if status.get("authenticated") and (
            audience is None or audience in (status.get("audiences") or ())
        ):
            info = status.get("user") or {}
            user = User(
                username=str(info.get("username", "")),
                uid=str(info.get("uid", "")),
                groups=tuple(info.get("groups") or ()),
                extra=tuple(sorted((k, tuple(v)) for k, v in (info.get("extra") or {}).items())),
            )
        self._users.put(key, user, left)
        return user if isinstance(user, User) else None

    async def authorize(
        self, user: User, namespace: str, name: str, action: tuple[str, str] = EXEC
    ) -> Decision:
        """Whether RBAC (or any authorizer of the API server) lets `user` do `action` to
        the CodeSession `name` (for CREATE: to CodeSessions of `namespace`)."""
        key = (user, namespace, name, action)
        cached = self._decisions.get(key)
        if cached is not None:
            return cached  # type: ignore[no-any-return]
        verb, subresource = action
        attributes = {"namespace": namespace, "verb": verb, "group": GROUP, "resource": RESOURCE}
        if subresource:
            attributes["subresource"] = subresource
        if name:
            attributes["name"] = name
        spec: dict[str, Any] = {
            "user": user.username,
            "groups": list(user.groups),
            "resourceAttributes": attributes,
        }
        if user.uid:
            spec["uid"] = user.uid
        if user.extra:
            spec["extra"] = {k: list(v) for k, v in user.extra}
        review = await self.api.call(
            "POST",
            "/apis/authorization.k8s.io/v1/subjectaccessreviews",
            {"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview", "spec": spec},
        )
        status = review.get("status") or {}
        what = f"{verb} {RESOURCE}{'/' + subresource if subresource else ''}"
        target = f"{name!r} in {namespace!r}" if name else f"in {namespace!r}"
        decision = Decision(
            allowed=bool(status.get("allowed")),
            reason=(
                f"{user.username} may {what} {target}"
                if status.get("allowed")
                else f"{user.username} may not {what} {target}"
                + (f": {status['reason']}" if status.get("reason") else "")
            ),
        )
        self._decisions.put(key, decision)
        return decision
