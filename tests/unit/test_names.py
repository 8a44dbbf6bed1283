"""Validation of every name that becomes part of a key, a path or a pip argument."""

from __future__ import annotations

from pathlib import Path

import pytest
from codemode_session.errors import ValidationError
from codemode_session.names import (
    validate_artifact_name,
    validate_package_spec,
    validate_prefix,
    validate_tool_name,
    validate_workflow_name,
    validate_workspace_id,
)
from codemode_session.storage.file_storage import FileStorage
from codemode_session.storage.redis_storage import RedisStorage
from codemode_session.workflow_model import parse_workflow

INVALID_WORKSPACE_IDS = [
    "",
    ".",
    "..",
    "../x",
    "a/b",
    "a\\b",
    "a:b",
    "x" * 129,
    "a b",
    "ä",
    "a\nb",
    "*",
]


@pytest.mark.parametrize("value", ["a", "A-b_9", "x" * 128, "team-42", "_", "-"])
def test_valid_workspace_ids(value: str) -> None:
    assert validate_workspace_id(value) == value


def test_no_workspace_id_means_unscoped() -> None:
    assert validate_workspace_id(None) is None


@pytest.mark.parametrize("value", INVALID_WORKSPACE_IDS)
def test_invalid_workspace_ids(value: str) -> None:
    with pytest.raises(ValidationError, match="invalid workspace_id"):
        validate_workspace_id(value)


@pytest.mark.parametrize("value", INVALID_WORKSPACE_IDS)
def test_redis_storage_refuses_invalid_workspace_ids(value: str) -> None:
    with pytest.raises(ValidationError, match="invalid workspace_id"):
        RedisStorage("redis://127.0.0.1:1/0", prefix="p", workspace_id=value)


@pytest.mark.parametrize("value", INVALID_WORKSPACE_IDS)
def test_file_storage_refuses_invalid_workspace_ids(value: str, tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="invalid workspace_id"):
        FileStorage(tmp_path, workspace_id=value)
    assert list(tmp_path.iterdir()) == []


def test_storages_accept_a_valid_workspace_id(tmp_path: Path) -> None:
    assert FileStorage(tmp_path, workspace_id="ws-1").workspace_id == "ws-1"
    storage = RedisStorage("redis://127.0.0.1:1/0", prefix="p", workspace_id="ws-1")
    assert storage.keys.artifact("a") == "p:ws:ws-1:artifacts:a"
    assert RedisStorage("redis://127.0.0.1:1/0", prefix="p").keys.workflows == (
        "p:workflows:__workflows__"
    )


@pytest.mark.parametrize("value", ["codemode", "team:prod", "a.b-c_d", "a:b:c:d"])
def test_valid_prefixes(value: str) -> None:
    assert validate_prefix(value) == value


@pytest.mark.parametrize("value", ["", "a b", "a::b", ":a", "a:b:c:d:e", "a*", "x" * 65])
def test_invalid_prefixes(value: str) -> None:
    with pytest.raises(ValidationError, match="invalid prefix"):
        validate_prefix(value)


@pytest.mark.parametrize("value", ["summarize", "_private", "fetch_2", "List"])
def test_valid_workflow_names(value: str) -> None:
    assert validate_workflow_name(value) == value


@pytest.mark.parametrize(
    "value", ["list", "search", "get", "invoke", "create", "delete", "class", "import", "__init__"]
)
def test_reserved_workflow_names(value: str) -> None:
    with pytest.raises(ValidationError, match="reserved"):
        validate_workflow_name(value)


@pytest.mark.parametrize("value", ["", "my-flow", "2fast", "a b", "a.b", "../x", "ä"])
def test_non_identifier_workflow_names(value: str) -> None:
    with pytest.raises(ValidationError, match="must be a Python identifier"):
        validate_workflow_name(value)


def test_parse_workflow_checks_the_name_first() -> None:
    with pytest.raises(ValidationError, match="reserved"):
        parse_workflow("delete", "async def run():\n    pass\n")


@pytest.mark.parametrize("value", ["report.txt", "data/2024/q1.json", "a-b_c", "x" * 128])
def test_valid_artifact_names(value: str) -> None:
    assert validate_artifact_name(value) == value


@pytest.mark.parametrize(
    "value",
    [
        "",
        ".hidden",
        "../x",
        "a/../b",
        "/abs",
        "a//b",
        "a b",
        "__index__",
        "a:b",
        "a\\b",
        "-rf",
        "x" * 129,
    ],
)
def test_invalid_artifact_names(value: str) -> None:
    with pytest.raises(ValidationError, match="invalid artifact name"):
        validate_artifact_name(value)


@pytest.mark.parametrize("value", ["curl", "git_2", "_x"])
def test_valid_tool_names(value: str) -> None:
    assert validate_tool_name(value) == value


@pytest.mark.parametrize("value", ["", "my-tool", "def", "a b", "1x"])
def test_invalid_tool_names(value: str) -> None:
    with pytest.raises(ValidationError, match="invalid tool name"):
        validate_tool_name(value)


@pytest.mark.parametrize(
    "value",
    [
        "requests",
        "pandas>=2,<3",
        "Django==4.2.1",
        "uvicorn[standard]>=0.29",
        "a.b-c_d~=1.0",
        " requests ",
    ],
)
def test_valid_package_specs(value: str) -> None:
    assert validate_package_spec(value) == value.strip()


@pytest.mark.parametrize(
    "value",
    [
        "",
        "https://evil.example/pkg.whl",
        "pkg @ https://evil.example/pkg.whl",
        "git+https://github.com/x/y",
        "file:///tmp/pkg",
        "./local",
        "../pkg",
        "/abs/path",
        "-e .",
        "--index-url=http://evil",
        "--extra-index-url http://evil pkg",
        "-r requirements.txt",
        "pkg; rm -rf /",
        "pkg && curl evil",
        "pkg | sh",
        "$(id)",
        "`id`",
        "pkg>1 ; python_version>'3'",
        "pkg\nother",
        "x" * 201,
    ],
)
def test_invalid_package_specs(value: str) -> None:
    with pytest.raises(ValidationError, match="invalid package spec"):
        validate_package_spec(value)
