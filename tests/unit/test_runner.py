"""CellRunner: how one cell of agent code runs inside a worker."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from codemode_session.runner import CappedWriter, CellRunner, bounded, clean_text, to_jsonable


@pytest.fixture
def runner() -> CellRunner:
    return CellRunner({"__name__": "__main__"}, output_limit=1000)


def ok(runner: CellRunner, code: str) -> Any:
    result = runner.run(code)
    assert result["error"] is None, result["error"]
    return result["value"]


def test_last_expression_value_is_returned(runner: CellRunner) -> None:
    assert ok(runner, "x = 20\nx * 2 + 2") == 42


def test_statement_only_cell_has_no_value(runner: CellRunner) -> None:
    assert ok(runner, "y = 1") is None
    assert ok(runner, "") is None


def test_globals_persist_between_cells(runner: CellRunner) -> None:
    ok(runner, "import math\ndef area(r):\n    return math.pi * r * r")
    assert ok(runner, "round(area(1), 5)") == 3.14159


def test_top_level_await(runner: CellRunner) -> None:
    code = (
        "import asyncio\nasync def f():\n    await asyncio.sleep(0)\n    return 7\nv = await f()\nv"
    )
    assert ok(runner, code) == 7
    assert ok(runner, "await f()") == 7


def test_event_loop_survives_between_cells(runner: CellRunner) -> None:
    ok(runner, "import asyncio\nq = asyncio.Queue()\nawait q.put(5)")
    assert ok(runner, "await q.get()") == 5


def test_stdout_and_stderr_are_captured(runner: CellRunner) -> None:
    result = runner.run("import sys\nprint('hello')\nprint('oops', file=sys.stderr)\n3")
    assert result == {
        "value": 3,
        "stdout": "hello\n",
        "stderr": "oops\n",
        "error": None,
        "error_type": None,
    }


def test_stdout_is_capped_with_a_marker(runner: CellRunner) -> None:
    result = runner.run("print('x' * 5000)")
    assert result["stdout"].startswith("x" * 1000)
    assert result["stdout"].endswith("[output truncated: 4001 more characters]")
    assert len(result["stdout"]) < 1100


def test_capped_writer_counts_many_small_writes() -> None:
    writer = CappedWriter(10)
    for _ in range(25):
        writer.write("ab")
    assert writer.getvalue() == "ababababab\n[output truncated: 40 more characters]"


def test_exception_shows_the_agents_frames_only(runner: CellRunner) -> None:
    result = runner.run("def check(v):\n    raise ValueError(f'bad value {v}')\n\ncheck(3)")
    assert result["error_type"] == "ValueError"
    assert result["value"] is None
    error = result["error"]
    assert error.startswith("Traceback (most recent call last):")
    assert "line 4, in <module>" in error and "line 2, in check" in error
    assert error.endswith("ValueError: bad value 3")
    assert "runner.py" not in error and "codemode_session" not in error


def test_output_before_an_exception_is_kept(runner: CellRunner) -> None:
    result = runner.run("print('step 1')\n1 / 0")
    assert result["stdout"] == "step 1\n"
    assert result["error_type"] == "ZeroDivisionError"


def test_syntax_error_names_the_line(runner: CellRunner) -> None:
    result = runner.run("x = 1\ny = (\n")
    assert result["error_type"] == "SyntaxError"
    assert "line 2" in result["error"]


def test_system_exit_does_not_end_the_worker(runner: CellRunner) -> None:
    result = runner.run("import sys\nsys.exit(3)")
    assert result["error_type"] == "SystemExit"
    assert "does not end the session" in result["error"]
    assert ok(runner, "1 + 1") == 2


def test_keyboard_interrupt_is_reported(runner: CellRunner) -> None:
    assert runner.run("raise KeyboardInterrupt")["error_type"] == "KeyboardInterrupt"


def test_cells_are_numbered_in_tracebacks(runner: CellRunner) -> None:
    ok(runner, "a = 1")
    assert '"<cell 2>"' in runner.run("a / 0")["error"]


@dataclasses.dataclass
class Point:
    x: int
    y: int


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        (True, True),
        (3, 3),
        (1.5, 1.5),
        # As py-code-mode's server renders them (issue 12, case 7).
        (float("nan"), None),
        (float("inf"), None),
        ("text", "text"),
        ((1, 2), [1, 2]),
        ({"a": [1, {"b": None}]}, {"a": [1, {"b": None}]}),
        ({1: "x"}, {"1": "x"}),
        ({True: 1, None: 2, 1.5: 3}, {"true": 1, "null": 2, "1.5": 3}),
        ({1, 2}, "{1, 2}"),
        (Point(1, 2), {"x": 1, "y": 2}),
        (b"\x00", "b'\\x00'"),
        (frozenset({1}), [1]),
    ],
)
def test_values_become_json(value: Any, expected: Any) -> None:
    assert to_jsonable(value) == expected


def test_huge_values_are_truncated() -> None:
    assert to_jsonable("y" * 2_000_000).endswith("...[truncated]")
    assert len(to_jsonable(list(range(50_000)))) == 10_000


def test_objects_become_their_repr(runner: CellRunner) -> None:
    assert ok(runner, "class A:\n    def __repr__(self):\n        return '<A>'\nA()") == "<A>"


def test_lone_surrogates_are_escaped(runner: CellRunner) -> None:
    assert clean_text("ok \u00e9") == "ok \u00e9"
    assert clean_text("bad \udcff") == "bad \\udcff"
    result = runner.run("print('\\udcff')\n'\\ud800'")
    assert result["stdout"] == "\\udcff\n" and result["value"] == "\\ud800"
    assert runner.run("raise KeyError('\\udcff')")["error"].endswith("KeyError: '\\udcff'")


def test_total_value_size_is_bounded(runner: CellRunner) -> None:
    small = {"a": [1, 2, 3]}
    assert bounded(small) is small
    value = runner.run("['y' * 1000] * 5000")["value"]
    assert isinstance(value, str) and value.startswith('["yyy') and value.endswith("...[truncated]")
    assert len(value) <= 1024 * 1024 + 20


def test_huge_error_keeps_both_ends(runner: CellRunner) -> None:
    error = runner.run("raise RuntimeError('start' + 'z' * 3_000_000 + 'end')")["error"]
    assert error.startswith("Traceback") and error.endswith("zzzend")
    assert "...[truncated]..." in error and len(error) < 1024 * 1024 + 100


def test_values_are_built_within_a_budget(runner: CellRunner) -> None:
    # 10,000 references to one big object must not become 10,000 big reprs.
    value = runner.run("[bytes(1_000_000)] * 10_000")["value"]
    assert isinstance(value, str) and value.endswith("...[truncated]")
    assert len(value) <= 1024 * 1024 + 20
    assert to_jsonable(b"x" * 3_000_000).endswith("...[truncated]")


def test_a_failing_repr_is_the_cells_error(runner: CellRunner) -> None:
    result = runner.run(
        "class A:\n    def __repr__(self):\n        raise ValueError('no repr')\nA()"
    )
    assert result["error_type"] == "ValueError" and result["value"] is None
    assert "line 3, in __repr__" in result["error"]
    assert ok(runner, "1 + 1") == 2


def test_writing_bytes_to_stdout_is_a_type_error(runner: CellRunner) -> None:
    result = runner.run("import sys\nprint('before')\nsys.stdout.write(b'raw')")
    assert result["error_type"] == "TypeError"
    assert "write() argument must be str, not bytes" in result["error"]
    assert result["stdout"] == "before\n"
