"""The gateway's decisions that need no server: which session a path names, which
headers reach a session, and how long review answers are reused."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from codemode_operator.gateway.auth import (
    CREATE,
    Reviewer,
    claimed_audiences,
    claimed_expiry,
    session_audience,
    workspace_audience,
)
from codemode_operator.gateway.proxy import forwarded_headers
from codemode_operator.gateway.routing import BadRoute, Route, parse


def test_a_path_names_a_session_and_the_servers_path() -> None:
    assert parse("/v1/namespaces/team-a/codesessions/agent.1/execute") == Route(
        "team-a", "agent.1", "/execute"
    )
    assert parse("/v1/namespaces/t/codesessions/s/files/a/b.txt").path == "/files/a/b.txt"
    assert parse("/v1/namespaces/t/codesessions/s").path == "/"


@pytest.mark.parametrize(
    "path",
    [
        "/",
        "/execute",
        "/v1/namespaces/t/pods/s/execute",
        "/v1/namespaces/T/codesessions/s/x",
        "/v1/namespaces/t/codesessions/-s/x",
        "/v1/namespaces//codesessions/s/x",
        "/v1/namespaces/t/codesessions/",
    ],
)
def test_paths_that_name_no_session_are_refused(path: str) -> None:
    with pytest.raises(BadRoute):
        parse(path)


def test_the_callers_credentials_never_reach_the_session() -> None:
    scope = {
        "headers": [
            (b"authorization", b"Bearer caller"),
            (b"cookie", b"s=1"),
            (b"proxy-authorization", b"Basic x"),
            (b"x-codemode-workspace", b"w"),
            (b"host", b"gateway"),
            (b"accept", b"text/event-stream"),
            (b"x-session-id", b"abc"),
        ]
    }
    assert forwarded_headers(scope, "session-token") == [
        (b"accept", b"text/event-stream"),
        (b"x-session-id", b"abc"),
        (b"authorization", b"Bearer session-token"),
    ]


class Reviews:
    """Counts review calls; one valid token, allowed on session `a` only."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []

    async def call(self, method: str, path: str, body: Any = None, **_: Any) -> dict[str, Any]:
        self.bodies.append(body)
        if body["kind"] == "TokenReview":
            ok = body["spec"]["token"] == "good"
            return {"status": {"authenticated": ok, "user": {"username": "u", "groups": ["g"]}}}
        return {"status": {"allowed": body["spec"]["resourceAttributes"].get("name") == "a"}}


async def test_review_answers_are_reused_for_their_ttl_only() -> None:
    now = [0.0]
    api = Reviews()
    reviewer = Reviewer(api, ttl=10, clock=lambda: now[0])  # type: ignore[arg-type]
    user = await reviewer.authenticate("good")
    assert user is not None and user.groups == ("g",)
    assert await reviewer.authenticate("forged") is None
    assert await reviewer.authenticate("good") == user
    assert await reviewer.authenticate("forged") is None
    assert len(api.bodies) == 2  # each token reviewed once
    assert (await reviewer.authorize(user, "t", "a")).allowed
    denied = await reviewer.authorize(user, "t", "b")
    assert not denied.allowed and denied.reason == "u may not create codesessions/exec 'b' in 't'"
    assert (await reviewer.authorize(user, "t", "a")).allowed
    assert len(api.bodies) == 4
    now[0] = 11
    assert await reviewer.authenticate("good") == user
    assert len(api.bodies) == 5


async def test_reviews_ask_about_the_session_exec_subresource_and_creating() -> None:
    api = Reviews()
    reviewer = Reviewer(api)  # type: ignore[arg-type]
    user = await reviewer.authenticate("good")
    assert user is not None
    await reviewer.authorize(user, "t", "a")
    await reviewer.authorize(user, "t", "", CREATE)
    exec_review, create_review = (b["spec"] for b in api.bodies[1:])
    assert exec_review["user"] == "u" and exec_review["groups"] == ["g"]
    assert exec_review["resourceAttributes"] == {
        "namespace": "t",
        "verb": "create",
        "group": "codemode.dev",
        "resource": "codesessions",
        "subresource": "exec",
        "name": "a",
    }
    assert create_review["resourceAttributes"] == {
        "namespace": "t",
        "verb": "create",
        "group": "codemode.dev",
        "resource": "codesessions",
    }


class ScopedReviews:
    """The API server as it answers TokenReviews with audiences: `scoped` was issued for
    session a's audience only, `good` for the API server's."""

    def __init__(self) -> None:
        self.specs: list[dict[str, Any]] = []

    async def call(self, method: str, path: str, body: Any = None, **_: Any) -> dict[str, Any]:
        spec = body["spec"]
        self.specs.append(spec)
        issued: dict[str, list[str | None]] = {
            "good": [None],
            "scoped": [session_audience("t", "a")],
        }
        issued_for = issued.get(spec["token"])
        wanted = spec.get("audiences", [None])
        matching = [a for a in wanted if issued_for and a in issued_for]
        status: dict[str, Any] = {"authenticated": bool(matching), "user": {"username": "u"}}
        if matching and spec.get("audiences"):
            status["audiences"] = matching
        return {"status": status}


async def test_a_token_scoped_to_one_session_is_taken_for_it_alone() -> None:
    api = ScopedReviews()
    reviewer = Reviewer(api)  # type: ignore[arg-type]
    assert await reviewer.authenticate("scoped") is None  # the API server's audience: no
    assert await reviewer.authenticate("scoped", session_audience("t", "a")) is not None
    assert await reviewer.authenticate("scoped", session_audience("t", "b")) is None
    assert await reviewer.authenticate("good") is not None
    assert api.specs[1]["audiences"] == ["codemode.dev/v1/namespaces/t/codesessions/a"]
    assert "audiences" not in api.specs[0]


def test_the_audiences_a_token_claims_are_read_without_trusting_them() -> None:
    def jwt(claims: object) -> str:
        payload = base64.urlsafe_b64encode(json.dumps(claims).encode()).decode().rstrip("=")
        return f"e30.{payload}.sig"

    assert claimed_audiences(jwt({"aud": ["x", "y"]})) == ["x", "y"]
    assert claimed_audiences(jwt({"aud": "x"})) == ["x"]
    assert claimed_audiences(jwt({"sub": "u"})) == []
    assert claimed_audiences(jwt(["aud"])) == []
    for bad in ("not-a-token", "a.!!!.c", "a.e30", ""):
        assert claimed_audiences(bad) == []
    assert workspace_audience("t", "w") == "codemode.dev/v1/namespaces/t/workspaces/w"


def _token(claims: dict[str, Any], name: str = "good") -> str:
    """A JWT-shaped token whose signature part names it for Reviews/ExpiringReviews."""
    payload = base64.urlsafe_b64encode(json.dumps(claims).encode()).decode().rstrip("=")
    return f"e30.{payload}.{name}"


class ExpiringReviews:
    """The API server, taking every token whatever its exp (as it does within its leeway)."""

    def __init__(self) -> None:
        self.reviews = 0

    async def call(self, method: str, path: str, body: Any = None, **_: Any) -> dict[str, Any]:
        self.reviews += 1
        return {"status": {"authenticated": True, "user": {"username": "u"}}}


async def test_a_review_is_never_reused_past_the_tokens_own_exp() -> None:
    """The cache keeps an answer for min(ttl, exp - now): a token that expires in 4 s is
    taken for 4 s, not the 10 s of the cache, and then refused without a review."""
    mono, wall = [100.0], [1_000_000.0]
    api = ExpiringReviews()
    reviewer = Reviewer(api, ttl=10, clock=lambda: mono[0], wall=lambda: wall[0])  # type: ignore[arg-type]

    def later(seconds: float) -> None:
        mono[0] += seconds
        wall[0] += seconds

    short = _token({"exp": wall[0] + 4})
    assert await reviewer.authenticate(short) is not None
    later(3.9)
    assert await reviewer.authenticate(short) is not None
    assert api.reviews == 1  # from the cache
    later(0.1)  # exp itself: no longer valid
    assert await reviewer.authenticate(short) is None
    later(60)
    assert await reviewer.authenticate(short) is None
    assert api.reviews == 1  # an expired token is refused before any review

    # A token that outlives the cache keeps the plain ttl; one without a readable exp too.
    for claims in ({"exp": wall[0] + 3600}, {"sub": "u"}, {"exp": "soon"}, {"exp": True}):
        token = _token(claims, name=str(claims))
        reviews = api.reviews
        assert await reviewer.authenticate(token) is not None
        later(9.9)
        assert await reviewer.authenticate(token) is not None
        assert api.reviews == reviews + 1
        later(0.1)
        assert await reviewer.authenticate(token) is not None
        assert api.reviews == reviews + 2  # reviewed again after ttl
    assert await reviewer.authenticate("not-a-jwt") is not None  # no exp: the API decides


def test_the_expiry_a_token_claims_is_read_without_trusting_it() -> None:
    assert claimed_expiry(_token({"exp": 1700000000})) == 1700000000.0
    assert claimed_expiry(_token({"exp": 1.5})) == 1.5
    for claims in ({}, {"exp": None}, {"exp": "1"}, {"exp": False}, {"exp": [1]}):
        assert claimed_expiry(_token(claims)) is None
    for bad in ("not-a-token", "a.!!!.c", "a.e30", ""):
        assert claimed_expiry(bad) is None
