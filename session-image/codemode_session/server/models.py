"""Request and response bodies of the HTTP API, as the OpenAPI document shows them.

Names are checked by `codemode_session.names` (a 400 whose `detail` says why, as
before); the patterns and lengths here only put those same rules into the
document, so that what it calls valid is what the server accepts.
"""

from __future__ import annotations

import dataclasses
from typing import Any, get_type_hints

from pydantic import BaseModel, ConfigDict, Field, create_model

from codemode_session.names import (
    ARTIFACT_NAME_RE,
    PACKAGE_SPEC_RE,
    RESERVED_WORKFLOW_NAMES,
    WORKFLOW_NAME_RE,
    WORKSPACE_ID_RE,
)
from codemode_session.results import ExecuteResult
from codemode_session.storage.history import AGENT_ID_RE, HISTORY_ID_RE

# Standard base64 with its padding: what `base64.b64decode(validate=True)` accepts.
BASE64_PATTERN = r"^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$"
RESERVED = ", ".join(sorted(RESERVED_WORKFLOW_NAMES))


def documented(
    pattern: str | None = None, min_length: int | None = None, max_length: int | None = None
) -> dict[str, Any]:
    """JSON Schema keywords for the document only (the server checks the rule itself)."""
    extra: dict[str, Any] = {}
    if pattern is not None:
        extra["pattern"] = pattern
    if min_length is not None:
        extra["minLength"] = min_length
    if max_length is not None:
        extra["maxLength"] = max_length
    return extra


WORKFLOW_NAME = documented(WORKFLOW_NAME_RE.pattern, 1, 128)
WORKFLOW_NAME_HELP = (
    f"A Python identifier; not a keyword, not starting with '__', not one of {RESERVED}"
)
ARTIFACT_NAME = documented(ARTIFACT_NAME_RE.pattern, 1)
ARTIFACT_NAME_HELP = (
    "Parts of letters, digits, '_', '.', '-' joined by '/'; no part starts "
    "with '.' or '-'; not '__index__'"
)


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ErrorResponse(BaseModel):
    """Every 4xx but 422 (and the 503s): `detail` says what is wrong and what to change."""

    detail: str


class ExecuteRequest(Strict):
    code: str = Field(
        description="Python source; a trailing expression's value is returned. "
        "At most MAX_CODE_BYTES (UTF-8), else 413"
    )
    timeout: float | None = Field(
        default=None,
        gt=0,
        strict=True,
        allow_inf_nan=False,
        description="Seconds before the worker is killed (a finite number, at most "
        "MAX_EXECUTION_TIME, else 422)",
    )


def _model_of(name: str, source: type[Any]) -> type[BaseModel]:
    """A pydantic model with the fields (types, defaults) of the dataclass `source`."""
    hints = get_type_hints(source)
    fields: dict[str, Any] = {
        f.name: (hints[f.name], ... if f.default is dataclasses.MISSING else f.default)
        for f in dataclasses.fields(source)
    }
    model: type[BaseModel] = create_model(name, **fields)
    return model


# The answer's shape is ExecuteResult's (codemode_session.results); this is its schema.
ExecuteResponse = _model_of("ExecuteResponse", ExecuteResult)


class CreateSessionRequest(Strict):
    workspace_id: str | None = Field(
        default=None,
        json_schema_extra=documented(WORKSPACE_ID_RE.pattern, 1, 128),
        description="The workspace (default: the server's); a pinned server refuses others "
        "with 403",
    )
    agent_id: str | None = Field(
        default=None,
        json_schema_extra=documented(AGENT_ID_RE.pattern, 1, 128),
        description="The agent whose history index lists this session (default: the "
        "X-Agent-ID header, else the server's AGENT_ID); invalid is 400",
    )


class CreateSessionResponse(BaseModel):
    session_id: str
    workspace_id: str | None
    idle_timeout_seconds: float


class WorkflowCreate(Strict):
    name: str = Field(json_schema_extra=WORKFLOW_NAME, description=WORKFLOW_NAME_HELP)
    source: str = Field(
        json_schema_extra=documented(r"\S", 1),
        description="Python source defining `async def run(...)` (not blank, at most 512 KiB)",
    )
    description: str = ""


class ArtifactCreate(Strict):
    name: str = Field(json_schema_extra=ARTIFACT_NAME, description=ARTIFACT_NAME_HELP)
    data: Any = None
    data_base64: str | None = Field(
        default=None,
        json_schema_extra=documented(BASE64_PATTERN),
        description="Binary data, base64-encoded (standard alphabet, padded)",
    )
    description: str = ""
    metadata: dict[str, Any] | None = None


class PackageRequest(Strict):
    package: str = Field(
        # The server strips surrounding whitespace before it checks the spec.
        json_schema_extra=documented(rf"^\s*(?:{PACKAGE_SPEC_RE.pattern[1:-1]})\s*$", 1),
        description="A PyPI requirement like 'requests' or 'pandas>=2,<3' (no URLs, paths, "
        "options or shell characters; at most 200 characters)",
    )


class PackagesRequest(Strict):
    packages: list[str] = Field(
        description="PyPI requirements, each as `package` in /api/deps/add (py-code-mode's "
        "/install_deps and /uninstall_deps body)"
    )


class PackagesResult(BaseModel):
    """The answer of /install_deps and /uninstall_deps, shaped as py-code-mode's."""

    installed: list[str] = []
    already_present: list[str] = []
    removed: list[str] = []
    not_found: list[str] = []
    failed: list[str] = []


class ReadyResponse(BaseModel):
    ready: bool
    reason: str | None = None


class BindRequest(Strict):
    state_id: str = Field(
        json_schema_extra=documented(HISTORY_ID_RE.pattern, 1, 160),
        description="The CodeSession's state id: where its snapshots and history are kept",
    )
    agent_id: str | None = Field(
        default=None,
        json_schema_extra=documented(AGENT_ID_RE.pattern, 1, 128),
        description="The agent its history is indexed under (default: the server's AGENT_ID)",
    )
    fork_from: str | None = Field(
        default=None,
        json_schema_extra=documented(HISTORY_ID_RE.pattern, 1, 160),
        description="The state a new state starts from (a CodeSession's spec.forkFrom)",
    )


class BindResponse(BaseModel):
    bound: bool
    state_id: str
    agent_id: str
    fork_from: str | None
    restored: dict[str, Any] | None = Field(
        description="What loading the saved state brought back (null: nothing was saved)"
    )
