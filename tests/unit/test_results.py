"""The /execute answer has one definition: ExecuteResult; the rest derive from it."""

from __future__ import annotations

import dataclasses

from codemode_session.client import ExecuteResult as ClientResult
from codemode_session.results import RUN_FIELDS, SERVER_FIELDS, ExecuteResult, failed_run
from codemode_session.runner import CellRunner
from codemode_session.server.models import ExecuteResponse

FIELDS = [f.name for f in dataclasses.fields(ExecuteResult)]


def test_the_openapi_model_is_derived_from_the_result() -> None:
    assert list(ExecuteResponse.model_fields) == FIELDS
    schema = ExecuteResponse.model_json_schema()
    assert schema["title"] == "ExecuteResponse"
    assert schema["required"] == ["execution_time_ms", "session_id"]
    assert schema["properties"]["worker_restarted"] == {
        "default": False,
        "title": "Worker Restarted",
        "type": "boolean",
    }


def test_the_client_uses_the_same_class() -> None:
    assert ClientResult is ExecuteResult


def test_worker_and_server_fields_make_up_the_answer() -> None:
    assert sorted(RUN_FIELDS + SERVER_FIELDS) == sorted(FIELDS)
    assert list(CellRunner({}, 100).run("1 + 1")) == list(RUN_FIELDS)


def test_a_failed_run_has_only_an_error() -> None:
    reply = failed_run("TimeoutError", "took too long")
    assert reply == {
        "value": None,
        "stdout": "",
        "stderr": "",
        "error": "TimeoutError: took too long",
        "error_type": "TimeoutError",
    }
    assert list(reply) == list(RUN_FIELDS)


def test_from_json_is_lenient_and_complete() -> None:
    full = {
        "value": [1],
        "stdout": "o",
        "stderr": "e",
        "error": None,
        "error_type": None,
        "execution_time_ms": 3,
        "session_id": "s",
        "worker_restarted": True,
        "state_released": "idle",
        "snapshot": {"saved": ["x"], "unsaved": {}, "bytes": 80, "seconds": 0.0001},
        "state_restored": {"restored": ["x"], "lost": {}, "taken_at": 1.5},
    }
    assert dataclasses.asdict(ExecuteResult.from_json(full)) == {**full, "execution_time_ms": 3.0}
    sparse = ExecuteResult.from_json({"error": "E: x"})
    assert (sparse.session_id, sparse.execution_time_ms, sparse.ok) == ("", 0.0, False)


def test_a_reply_json_cannot_carry_becomes_a_result_error() -> None:
    from codemode_session import protocol
    from codemode_session.worker import _frame

    frame = _frame(
        {"value": {1j}, "stdout": "", "stderr": "", "error": None, "error_type": None, "seq": 7}
    )
    reply = protocol.decode(b"".join(frame)[protocol.HEADER.size :])
    assert reply.pop("seq") == 7
    assert list(reply) == list(RUN_FIELDS) and reply["error_type"] == "ResultError"
    assert reply["error"].startswith("ResultError: the result could not be sent as JSON")
