"""Schemathesis against a real `codemode serve` (real redis-server): every answer to
thousands of generated requests is below 500 and is what /openapi.json documents
(its status code, its content type, its body's schema).

Bounded by case count, not by time: POSITIVE_CASES schema-valid and NEGATIVE_CASES
schema-invalid requests per operation, from a fixed seed (CODEMODE_FUZZ_SEED
changes it), no shrinking. Every request goes to the server on 127.0.0.1 (a requests
session that ignores proxy settings).

What is kept harmless, and why:
- /execute runs Python. Its generated `code` is replaced by `repr(code)`: a string
  literal, valid Python that only evaluates to the generated text, so the request,
  the worker round trip and the answer (any Unicode) are fuzzed but nothing the
  generator writes is ever run. The generated `timeout` is kept (MAX_EXECUTION_TIME
  is 5, so no case can hold a worker long).
- Runtime deps are off (ALLOW_RUNTIME_DEPS unset): /api/deps/add|remove|sync answer
  403 and never run pip.
- Storage is a prefix of its own in the tests' redis-server; MAX_SESSIONS=4 bounds
  the workers generated POST /sessions and /execute calls start.
"""

from __future__ import annotations

import os
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any

import hypothesis
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.conftest import RedisServer
from tests.integration.server_fixture import TOKEN, ServerProcess, base_settings, running_server

pytestmark = [pytest.mark.redis, pytest.mark.fuzz]

POSITIVE_CASES = 120
NEGATIVE_CASES = 80
MIN_CASES = 2000
SEED = int(os.environ.get("CODEMODE_FUZZ_SEED", "1010"))
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
# These end or restart the session they name: given the shared session, they would
# take it away from every later case.
NO_SHARED_SESSION = {("DELETE", "/sessions"), ("POST", "/reset")}


@pytest.fixture(scope="module")
def server(redis_server: RedisServer) -> Iterator[ServerProcess]:
    settings = base_settings(
        redis_server.url,
        f"fuzz{uuid.uuid4().hex[:8]}",
        MAX_SESSIONS="4",
        MAX_EXECUTION_TIME="5",
        DEFAULT_TIMEOUT="5",
        MAX_REQUEST_BYTES=str(1024 * 1024),
    )
    with running_server(settings) as srv:
        yield srv


def harmless(case: schemathesis.Case, shared_session: str) -> None:
    """Make a generated case safe to send (see the module docstring)."""
    body = case.body
    if (
        case.operation.path == "/execute"
        and isinstance(body, dict)
        and isinstance(body.get("code"), str)
    ):
        body["code"] = repr(body["code"])
    # Half the cases that name a session name a real one, so the code behind
    # X-Session-ID (not only its 404) is reached.
    chosen = case.headers.get("X-Session-ID") if case.headers else None
    label = (case.method.upper(), case.operation.path)
    if isinstance(chosen, str) and len(chosen) % 2 == 0 and label not in NO_SHARED_SESSION:
        case.headers["X-Session-ID"] = shared_session


def test_generated_requests_get_documented_answers(server: ServerProcess) -> None:
    schema = schemathesis.openapi.from_url(f"{server.url}/openapi.json")
    http = requests.Session()
    http.trust_env = False  # never a proxy: 127.0.0.1 only
    auth = {"Authorization": f"Bearer {TOKEN}"}
    shared_session = http.post(f"{server.url}/sessions", json={}, headers=auth).json()["session_id"]
    counts: dict[str, int] = {}
    statuses: Counter[int] = Counter()
    failures: list[str] = []
    started = time.monotonic()

    def fuzz(operation: Any, mode: schemathesis.GenerationMode, examples: int) -> None:
        label = f"{operation.label} ({mode.value})"

        @hypothesis.seed(SEED)
        @settings(
            max_examples=examples,
            deadline=None,
            database=None,
            phases=[Phase.explicit, Phase.generate],
            print_blob=False,
            suppress_health_check=list(HealthCheck),
        )
        @given(case=operation.as_strategy(mode))
        def send(case: schemathesis.Case) -> None:
            harmless(case, shared_session)
            counts[label] = counts.get(label, 0) + 1
            response = case.call_and_validate(
                base_url=server.url, session=http, headers=auth, checks=CHECKS
            )
            statuses[response.status_code] += 1

        try:
            send()
        except hypothesis.errors.Unsatisfiable:
            # Only an optional string header to vary: no request can break the schema.
            assert mode is schemathesis.GenerationMode.NEGATIVE, label
        except (Exception, schemathesis.errors.FailureGroup) as exc:  # all are reported
            failures.append(f"{label}: {exc}"[:3000])

    for result in schema.get_all_operations():
        operation = result.ok()
        fuzz(operation, schemathesis.GenerationMode.POSITIVE, POSITIVE_CASES)
        fuzz(operation, schemathesis.GenerationMode.NEGATIVE, NEGATIVE_CASES)

    elapsed = time.monotonic() - started
    total = sum(counts.values())
    load = os.getloadavg()
    print(
        f"\nschemathesis: {total} cases over {len(counts)} operation/mode pairs in "
        f"{elapsed:.1f}s (seed {SEED}, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}); "
        f"statuses {dict(sorted(statuses.items()))}"
    )
    assert failures == [], "\n\n".join(failures) + f"\n\n{server.output()[-3000:]}"
    assert total >= MIN_CASES, counts
    # The server is still answering after all of it.
    assert http.get(f"{server.url}/health").status_code == 200
