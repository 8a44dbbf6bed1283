"""CLI tools from YAML: parsing, argv building, running without a shell."""

from __future__ import annotations

from pathlib import Path

import pytest
from codemode_session.errors import NotFoundError, ValidationError
from codemode_session.tools import (
    ToolError,
    get_spec,
    load_tools_dir,
    parse_tool_yaml,
    run_tool,
    search_score,
    tool_specs,
)

SEQ = """
name: seq
description: Print a sequence of numbers
command: seq
timeout: 10
schema:
  options:
    separator:
      type: string
      short: s
      description: string between numbers
    equal-width:
      type: boolean
      short: w
      description: pad with leading zeros
  positional:
    - name: first
      type: integer
    - name: last
      type: integer
recipes:
  csv:
    description: Comma-separated numbers
    preset:
      separator: ","
"""

ECHO = """
name: say
description: Echo words back
command: echo
schema:
  options:
    no_newline:
      type: boolean
      short: n
  positional:
    - name: words
      required: false
"""


def test_parse_full_tool() -> None:
    spec = parse_tool_yaml(SEQ)
    assert spec.name == "seq" and spec.command == "seq" and spec.timeout == 10
    assert [o.name for o in spec.options] == ["separator", "equal_width"]
    assert [p.name for p in spec.positional] == ["first", "last"]
    assert spec.recipes[0].name == "csv" and spec.recipes[0].preset == {"separator": ","}
    summary = spec.summary()
    assert summary["recipes"] == [
        {"name": "csv", "description": "Comma-separated numbers", "params": None}
    ]
    assert summary["options"][0]["description"] == "string between numbers"


def test_argv_options_then_positionals() -> None:
    spec = parse_tool_yaml(SEQ)
    argv = spec.build_argv({"first": 1, "last": 3, "separator": ";", "equal_width": True})
    assert argv == ["seq", "-s", ";", "-w", "1", "3"]
    assert spec.build_argv({"first": 1, "last": 2, "equal_width": False}) == ["seq", "1", "2"]


def test_long_flags_and_repeated_options() -> None:
    spec = parse_tool_yaml(
        "name: t\ncommand: x\nschema:\n  options:\n    header: {type: string}\n"
        "    max-time: {type: number}\n"
    )
    assert spec.build_argv({"header": ["a: 1", "b: 2"], "max_time": 5}) == [
        "x",
        "--header",
        "a: 1",
        "--header",
        "b: 2",
        "--max-time",
        "5",
    ]


def test_unknown_and_missing_arguments_are_explained() -> None:
    spec = parse_tool_yaml(SEQ)
    with pytest.raises(ValidationError, match="has no argument bogus"):
        spec.build_argv({"first": 1, "last": 2, "bogus": 1})
    with pytest.raises(ValidationError, match="'last' is required"):
        spec.build_argv({"first": 1})
    with pytest.raises(ValidationError, match="expected a string or number"):
        spec.build_argv({"first": {"a": 1}, "last": 2})


def test_runs_the_command_and_returns_stdout() -> None:
    spec = parse_tool_yaml(SEQ)
    assert run_tool(spec, {"first": 1, "last": 3}) == "1\n2\n3\n"
    assert run_tool(spec, {"first": 8, "last": 10, "equal_width": True}) == "08\n09\n10\n"
    recipe = spec.recipes[0]
    assert run_tool(spec, {**recipe.preset, "first": 1, "last": 3}) == "1,2,3\n"


@pytest.mark.parametrize(
    "text",
    [
        "$(id)",
        "`id`",
        "a; rm -rf /tmp/nothing",
        "x | cat",
        "$HOME",
        "> /tmp/f",
        "a && b",
        "'quoted' \"double\"",
        "*",
        "-n",
    ],
)
def test_shell_metacharacters_are_passed_literally(text: str) -> None:
    spec = parse_tool_yaml(ECHO)
    assert run_tool(spec, {"no_newline": True, "words": ["--", text]}) in (text, f"-- {text}")
    printf = parse_tool_yaml(
        "name: p\ncommand: printf\nschema:\n  positional:\n    - name: fmt\n    - name: arg\n"
    )
    assert run_tool(printf, {"fmt": "[%s]", "arg": text}) == f"[{text}]"


def test_failures_are_tool_errors() -> None:
    failing = parse_tool_yaml("name: f\ncommand: 'false'\n")
    with pytest.raises(ToolError, match="exited with 1"):
        run_tool(failing, {})
    missing = parse_tool_yaml("name: m\ncommand: no-such-program-codemode\n")
    with pytest.raises(ToolError, match="is not installed"):
        run_tool(missing, {})
    slow = parse_tool_yaml(
        "name: s\ncommand: sleep\ntimeout: 0.2\nschema:\n  positional:\n    - name: seconds\n"
    )
    with pytest.raises(ToolError, match="timed out"):
        run_tool(slow, {"seconds": 5})


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("name: [unclosed", "invalid YAML"),
        ("- a list", "must be a mapping"),
        ("name: ok\n", "'command' must be a program name"),
        ("name: 'bad name'\ncommand: x\n", "invalid tool name"),
        ("name: class\ncommand: x\n", "invalid tool name"),
        ("name: t\ncommand: x\ntimeout: -1\n", "'timeout' must be a positive"),
        ("name: t\ncommand: x\nschema: [1]\n", "'schema' must be a mapping"),
        ("name: t\ncommand: x\nschema:\n  options:\n    '--x;': {}\n", "invalid option"),
        ("name: t\ncommand: x\nschema:\n  positional:\n    - {type: string}\n", "needs a 'name'"),
        ("name: t\ncommand: x\nrecipes:\n  'a-b': {}\n", "invalid recipe"),
    ],
)
def test_invalid_yaml_is_rejected(text: str, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        parse_tool_yaml(text)


def test_tools_dir_and_broken_files(tmp_path: Path) -> None:
    (tmp_path / "seq.yaml").write_text(SEQ)
    (tmp_path / "say.yml").write_text(ECHO)
    (tmp_path / "broken.yaml").write_text("name: [")
    (tmp_path / "notes.txt").write_text("ignored")
    texts = load_tools_dir(tmp_path)
    assert sorted(texts) == ["broken", "say", "seq"]
    specs = tool_specs(texts)
    assert sorted(specs) == ["say", "seq"]
    assert get_spec(specs, "seq").command == "seq"
    with pytest.raises(NotFoundError, match="no tool named 'curl'"):
        get_spec(specs, "curl")
    assert load_tools_dir(None) == {} and load_tools_dir(tmp_path / "missing") == {}


def test_name_defaults_to_the_file_stem() -> None:
    assert parse_tool_yaml("command: ls\n", default_name="listing").name == "listing"


def test_search_score_prefers_name_hits() -> None:
    assert search_score("seq", "seq", "Print numbers") > search_score("seq", "other", "seq x")
    assert search_score("numbers", "seq", "Print a sequence of numbers") > 0
    assert search_score("zzz", "seq", "Print") == 0
    assert search_score("", "seq", "x") == 0


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("name: curl\n", "tool 'curl': command: field required"),
        ("name: t\ncommand: '  '\n", "tool 't': command: 'command' must be a program name"),
        ("name: t\ncommand: x\ndescription: [a]\n", "tool 't': description: must be text"),
        (
            "name: t\ncommand: x\nschema:\n  options:\n    v: {short: [1]}\n",
            "tool 't': schema.options.v.short: must be text",
        ),
        (
            "name: t\ncommand: x\nschema:\n  options:\n    v: 5\n",
            "tool 't': schema.options.v: must be a mapping",
        ),
        (
            "name: t\ncommand: x\nschema:\n  options: [a]\n",
            "tool 't': schema.options: 'options' must be a mapping",
        ),
        (
            "name: t\ncommand: x\nschema:\n  positional: {a: 1}\n",
            "tool 't': schema.positional: 'positional' must be a list",
        ),
        (
            "name: t\ncommand: x\nschema:\n  positional:\n    - name: ok\n    - name: 'a b'\n",
            "tool 't': schema.positional.1.name: invalid positional name 'a b'",
        ),
        (
            "name: t\ncommand: x\nrecipes:\n  get: {preset: 3}\n",
            "tool 't': recipes.get.preset: 'preset' must be a mapping",
        ),
        ("name: t\ncommand: x\ntimeout: null\n", "tool 't': timeout: 'timeout' must be"),
        ("name: [a]\ncommand: x\n", "tool name must be text"),
    ],
)
def test_errors_name_the_field(text: str, message: str) -> None:
    with pytest.raises(ValidationError) as caught:
        parse_tool_yaml(text)
    assert str(caught.value).startswith(message), str(caught.value)


def test_every_error_is_reported_at_once() -> None:
    with pytest.raises(ValidationError) as caught:
        parse_tool_yaml("name: t\ncommand: [x]\ntimeout: 0\nrecipes: 1\n")
    assert str(caught.value) == (
        "tool 't': command: 'command' must be a program name; timeout: 'timeout' must be a "
        "positive number of seconds; recipes: 'recipes' must be a mapping"
    )


def test_the_format_stays_lenient_where_it_always_was() -> None:
    spec = parse_tool_yaml(
        "name: t\ncommand: ' x '\ndescription: 42\nunknown: [ignored]\n"
        "schema:\n  options:\n    quiet:\n    level: {type: null, required: 'no', short: 1}\n"
        "    date: {description: 2024-01-02}\n  positional:\n"
        "recipes:\n  get:\n  post: {params: {a: 1, b: 2}, preset: {1: 2}}\n  put: {params: 7}\n"
    )
    assert (spec.command, spec.description, spec.timeout) == ("x", "42", 60.0)
    quiet, level, date = spec.options
    assert (quiet.type, quiet.short, quiet.required) == ("string", None, False)
    assert (level.type, level.short, level.required) == ("", "1", True)
    assert date.description == "2024-01-02"
    assert spec.positional == ()
    get, post, put = spec.recipes
    assert (get.preset, get.params) == ({}, None)  # no params: any argument of the tool
    assert post.preset == {1: 2}
    assert [(p.name, p.required) for p in post.params or ()] == [("a", True), ("b", True)]
    assert put.params is None
    positional = parse_tool_yaml(
        "name: t\ncommand: x\nschema:\n  positional:\n    - {name: in-file, required: 0}\n"
    ).positional
    assert [(p.name, p.type, p.required) for p in positional] == [("in_file", "string", False)]
