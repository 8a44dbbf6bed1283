from __future__ import annotations

import pytest
from codemode_session.errors import ValidationError
from codemode_session.workflow_model import Workflow, parse_workflow

SOURCE = '''"""Fetch a page and keep it."""

async def run(url: str, retries: int = 3, *, tags: list[str] | None = None, mode="fast"):
    """Fetch.

    Args:
        url: the page to fetch
        retries (int): how often to retry
    """
    return url
'''


def test_parameters_come_from_the_signature() -> None:
    wf = parse_workflow("fetch_page", SOURCE)
    assert wf.description == "Fetch a page and keep it."
    assert [p.to_dict() for p in wf.parameters] == [
        {
            "name": "url",
            "type": "str",
            "description": "the page to fetch",
            "required": True,
            "default": None,
        },
        {
            "name": "retries",
            "type": "int",
            "description": "how often to retry",
            "required": False,
            "default": 3,
        },
        {
            "name": "tags",
            "type": "list[str] | None",
            "description": "",
            "required": False,
            "default": None,
        },
        {"name": "mode", "type": "Any", "description": "", "required": False, "default": "fast"},
    ]
    assert Workflow.from_json(wf.to_json()) == wf


@pytest.mark.parametrize(
    ("name", "source", "message"),
    [
        ("list", "async def run(): pass", "reserved"),
        ("invoke", "async def run(): pass", "reserved"),
        ("class", "async def run(): pass", "reserved"),
        ("1abc", "async def run(): pass", "identifier"),
        ("a-b", "async def run(): pass", "identifier"),
        ("ok", "def run(): pass", "async def run"),
        ("ok", "async def other(): pass", "must define"),
        ("ok", "async def run(:", "syntax error at line 1"),
        ("ok", "   ", "empty"),
    ],
)
def test_invalid_workflows_say_why(name: str, source: str, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        parse_workflow(name, source)


@pytest.mark.parametrize(
    ("source", "message"),
    [
        (
            "async def run(x=" + "+".join(["1"] * 400) + "): pass",
            "the default of parameter 'x' is nested 400 levels deep",
        ),
        (
            "async def run(*, k=" + "-" * 150 + "1): pass",
            "the default of parameter 'k' is nested 151 levels deep",
        ),
        (
            "async def run(x=0x" + "f" * 5000 + "): pass",
            "the default of parameter 'x' cannot be described: Exceeds the limit",
        ),
        (
            "async def run(a: " + "list[" * 120 + "int" + "]" * 120 + "): pass",
            "the annotation of parameter 'a' is nested",
        ),
        (
            "async def run(x=" + "+".join(["1"] * 50_000) + "): pass",
            "source is nested too deeply to parse",
        ),
    ],
    ids=["plus-400", "minus-150-kwonly", "long-int", "annotation", "plus-50000"],
)
def test_what_cannot_be_described_is_a_validation_error(source: str, message: str) -> None:
    with pytest.raises(ValidationError, match=f"^workflow 'flow': .*{message}"):
        parse_workflow("flow", source)


def test_shallow_expressions_are_described_by_their_source() -> None:
    wf = parse_workflow("flow", "async def run(x=" + "+".join(["1"] * 99) + "): pass")
    assert wf.parameters[0].default == " + ".join(["1"] * 99)


def test_a_byte_order_mark_is_dropped() -> None:
    wf = parse_workflow("fetch_page", "\ufeff" + SOURCE)
    assert wf.source == SOURCE and wf == parse_workflow("fetch_page", SOURCE)
