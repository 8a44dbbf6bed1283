"""Validation of every name that becomes part of a storage key or file path.

Names are checked once at the edge so that storage code can trust them: a
workspace id or artifact name must never be able to escape its namespace.
"""

from __future__ import annotations

import keyword
import re

from codemode_session.errors import ValidationError

WORKSPACE_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
PREFIX_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}(:[A-Za-z0-9_.-]{1,64}){0,3}$")
WORKFLOW_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
RESERVED_WORKFLOW_NAMES = frozenset({"list", "search", "get", "invoke", "create", "delete"})
_ARTIFACT_PART = r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}"
ARTIFACT_NAME_RE = re.compile(rf"^{_ARTIFACT_PART}(/{_ARTIFACT_PART}){{0,7}}$")
LIBRARY_NAME_RE = re.compile(r"^[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?$|^[A-Za-z0-9_-]{1,128}$")
TOOL_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
# A PEP 508 requirement without URLs, markers or anything a shell would read.
PACKAGE_SPEC_RE = re.compile(
    r"^[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?"  # project name
    r"(\[[A-Za-z0-9._-]+(,[A-Za-z0-9._-]+)*\])?"  # extras
    r"((~=|==|!=|<=|>=|<|>|===)[A-Za-z0-9.*+!_-]+"  # first version clause
    r"(,(~=|==|!=|<=|>=|<|>|===)[A-Za-z0-9.*+!_-]+)*)?$"  # more clauses
)


def validate_workspace_id(value: str | None) -> str | None:
    """Return the id unchanged, or raise: it becomes part of keys and paths."""
    if value is None:
        return None
    if not isinstance(value, str) or not WORKSPACE_ID_RE.match(value):
        raise ValidationError(
            f"invalid workspace_id {value!r}: must match ^[A-Za-z0-9_-]{{1,128}}$"
        )
    return value


def validate_prefix(value: str) -> str:
    if not isinstance(value, str) or not PREFIX_RE.match(value):
        raise ValidationError(
            f"invalid prefix {value!r}: 1-4 ':'-separated parts of [A-Za-z0-9_.-]"
        )
    return value


def validate_workflow_name(value: str) -> str:
    if not isinstance(value, str) or not WORKFLOW_NAME_RE.match(value):
        raise ValidationError(f"invalid workflow name {value!r}: must be a Python identifier")
    if keyword.iskeyword(value) or value in RESERVED_WORKFLOW_NAMES or value.startswith("__"):
        raise ValidationError(
            f"invalid workflow name {value!r}: reserved (Python keywords, dunder names and "
            f"{', '.join(sorted(RESERVED_WORKFLOW_NAMES))})"
        )
    return value


def validate_artifact_name(value: str) -> str:
    if not isinstance(value, str) or not ARTIFACT_NAME_RE.match(value) or value == "__index__":
        raise ValidationError(
            f"invalid artifact name {value!r}: use letters, digits, '_', '.', '-' and '/' "
            "between parts; no part may start with '.' or '-'"
        )
    return value


def validate_library_name(value: str) -> str:
    if not isinstance(value, str) or not LIBRARY_NAME_RE.match(value):
        raise ValidationError(f"invalid library name {value!r}: use a Kubernetes object name")
    return value


def validate_tool_name(value: str) -> str:
    if not isinstance(value, str) or not TOOL_NAME_RE.match(value) or keyword.iskeyword(value):
        raise ValidationError(f"invalid tool name {value!r}: must be a Python identifier")
    return value


def validate_package_spec(value: str) -> str:
    """Accept `name[extras]>=1,<2`; refuse URLs, paths, options and shell syntax."""
    spec = value.strip() if isinstance(value, str) else value
    if not isinstance(spec, str) or len(spec) > 200 or not PACKAGE_SPEC_RE.match(spec):
        raise ValidationError(
            f"invalid package spec {value!r}: expected a PyPI requirement like "
            "'requests' or 'pandas>=2,<3' (no URLs, paths, options or shell characters)"
        )
    return spec
