"""Pure parts of the store: catalogs, digests, plans, git argument checks."""

from __future__ import annotations

import pytest
from codemode_session.errors import ConflictError, ForbiddenError, ValidationError
from codemode_session.store.bootstrap import plan_workflows
from codemode_session.store.catalog import build_catalog, parse_workflows
from codemode_session.store.gitfetch import (
    GitAuth,
    normalize_url,
    redact_url,
    validate_ref,
    validate_subpath,
)
from codemode_session.workflow_model import parse_workflow

SRC = '"""Doc {n}."""\n\n\nasync def run(x: int = {n}) -> int:\n    return x\n'


def src(n: int) -> str:
    return SRC.format(n=n)


def test_workflow_catalog_selects_py_files_and_digests_content() -> None:
    files = {
        "a.py": src(1).encode(),
        "b.py": src(2).encode(),
        "notes.md": b"x",
        "__init__.py": b"",
        ".hidden.py": b"x",
    }
    catalog = build_catalog("workflows", files)
    assert sorted(catalog.texts) == ["a", "b"]
    same = build_catalog("workflows", dict(reversed(list(files.items()))))
    assert same.digest == catalog.digest
    changed = build_catalog("workflows", {**files, "b.py": src(3).encode()})
    assert changed.digest != catalog.digest
    tools = build_catalog("tools", {"a.yaml": b"command: a\n"})
    assert tools.digest != build_catalog("workflows", {"a.py": b"command: a\n"}).digest
    parsed = parse_workflows(catalog)
    assert parsed["a"].description == "Doc 1." and parsed["a"].parameters[0].default == 1


@pytest.mark.parametrize(
    ("filename", "data", "expected"),
    [
        ("bad.py", b"async def run(:", "bad.py: workflow 'bad': syntax error"),
        ("x.py", b"print(1)\n", "x.py: workflow 'x': must define"),
        ("del.py", src(1).encode(), "del.py: invalid workflow name"),
        ("bin.py", b"\xff\xfe", "bin.py: not UTF-8"),
    ],
)
def test_invalid_workflow_names_the_file(filename: str, data: bytes, expected: str) -> None:
    with pytest.raises(ValidationError, match=expected.replace("(", r"\(")):
        parse_workflows(build_catalog("workflows", {"ok.py": src(1).encode(), filename: data}))


def test_tools_catalog() -> None:
    catalog = build_catalog(
        "tools",
        {
            "curl.yaml": b"name: curl\ncommand: curl\n",
            "jq.yml": b"command: jq\n",
            "readme.txt": b"",
        },
    )
    assert sorted(catalog.texts) == ["curl", "jq"]
    for files, expected in [
        ({"a.yaml": b"- 1\n"}, "mapping"),
        ({"a.yaml": b"a: [\n"}, "invalid YAML"),
        ({"a.yaml": b"name: b\n"}, "declares name 'b'"),
        ({"a.yaml": b"x: 1\n", "a.yml": b"x: 1\n"}, "defined twice"),
        ({"my-tool.yaml": b"x: 1\n"}, "invalid tool name"),
    ]:
        with pytest.raises(ValidationError, match=expected):
            build_catalog("tools", files)


def test_deps_catalog() -> None:
    text = b"# comment\nrequests>=2,<3\n\n  pandas[excel]  # why\nrequests>=2,<3\n"
    catalog = build_catalog("deps", {"requirements.txt": text, "other.txt": b"zzz\n"})
    assert sorted(catalog.texts) == ["pandas[excel]", "requests>=2,<3"]
    assert sorted(build_catalog("deps", {"deps.txt": b"flask\n"}).texts) == ["flask"]
    with pytest.raises(ValidationError, match=r"requirements\.txt line 2"):
        build_catalog("deps", {"requirements.txt": b"ok\n-e git+https://x\n"})
    with pytest.raises(ValidationError, match=r"no requirements\.txt"):
        build_catalog("deps", {"a.py": b""})


def test_plan_takes_over_agent_workflows_and_refuses_other_libraries() -> None:
    a1, a2, b, c = (
        parse_workflow("a", src(1)),
        parse_workflow("a", src(2)),
        parse_workflow("b", src(1)),
        parse_workflow("c", src(1)),
    )
    plan = plan_workflows(
        "lib",
        wanted={"a": a2, "b": b, "c": c},
        existing={"a": a1, "b": b, "old": c, "agent": c},
        owners={"a": "lib", "old": "lib", "b": "lib"},
        prune=True,
    )
    assert (plan.added, plan.updated, plan.unchanged, plan.adopted) == (1, 1, 1, 0)
    assert [w.name for w in plan.upserts] == ["a", "c"] and plan.removals == ["old"]
    with pytest.raises(ConflictError, match="an agent created it"):
        plan_workflows("lib", {"agent": c}, {"agent": c}, {}, prune=True)
    adopt = plan_workflows("lib", {"agent": c}, {"agent": c}, {}, prune=True, adopt=True)
    assert (adopt.updated, adopt.adopted, adopt.removals) == (1, 1, [])
    assert plan_workflows("lib", {}, {"old": c}, {"old": "lib"}, prune=False).removals == []
    with pytest.raises(ForbiddenError, match="owned by WorkflowLibrary 'other'"):
        plan_workflows("lib", {"a": a1}, {"a": a1}, {"a": "other"}, prune=True)


def test_git_argument_checks(tmp_path: object) -> None:
    assert normalize_url("https://example.com/x.git") == "https://example.com/x.git"
    assert normalize_url("file:///srv/x.git") == "file:///srv/x.git"
    for bad in ("ssh://git@h/x", "git@github.com:o/r.git", "ext::sh -c x", "-oProxy", "ftp://h/x"):
        with pytest.raises(ValidationError):
            normalize_url(bad)
    with pytest.raises(ValidationError, match="must not embed a password"):
        normalize_url("https://u:secret@example.com/x.git")
    assert redact_url("https://u@example.com:8443/x.git?t=1") == "https://example.com:8443/x.git"
    for ref in ("main", "v1.2.3", "feature/x", "0123abcd", "refs/heads/main"):
        assert validate_ref(ref) == ref
    for ref in ("-x", "a..b", "a b", "x.lock", "a;b"):
        with pytest.raises(ValidationError):
            validate_ref(ref)
    assert validate_subpath("./a//b/") == "a/b" and validate_subpath("") == ""
    with pytest.raises(ValidationError):
        validate_subpath("a/../../etc")


def test_auth_header_and_secrets() -> None:
    assert GitAuth().header() is None
    assert GitAuth(token="t0k", token_scheme="bearer").header() == "Authorization: Bearer t0k"
    assert GitAuth(token="t0k").header() == "Authorization: Basic eC1hY2Nlc3MtdG9rZW46dDBr"
    basic = GitAuth(username="bob", password="pw")
    assert basic.header() == "Authorization: Basic Ym9iOnB3"
    assert "pw" in basic.secrets() and "Ym9iOnB3" in basic.secrets()
