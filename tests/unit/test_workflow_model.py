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
        {"name": "url", "type": "str", "description": "the page to fetch", "required": True,
         "default": None},
        {"name": "retries", "type": "int", "description": "how often to retry",
         "required": False, "default": 3},
        {"name": "tags", "type": "list[str] | None", "description": "", "required": False,
         "default": None},
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
