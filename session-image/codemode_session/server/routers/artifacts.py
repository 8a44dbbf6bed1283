"""`/api/artifacts`: a workspace's artifacts, JSON or bytes."""

from __future__ import annotations

import base64
from typing import Any

from fastapi import Response

from codemode_session.errors import NotFoundError, ValidationError
from codemode_session.namespaces import artifact_metadata, decode_artifact, encode_artifact
from codemode_session.server.dependencies import (
    ArtifactName,
    CallerWorkspace,
    authenticated_router,
)
from codemode_session.server.models import ArtifactCreate
from codemode_session.server.openapi import errors
from codemode_session.server.responses import AsciiJSONResponse
from codemode_session.storage.base import ArtifactInfo

router = authenticated_router()

BINARY_ANSWER: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The artifact: JSON, or bytes for binary data",
        "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
    },
}


@router.get("/api/artifacts", responses=errors(404, 503))
async def list_artifacts(workspace: CallerWorkspace) -> list[dict[str, Any]]:
    return [i.to_dict() for i in await workspace.storage().list_artifacts()]


@router.get("/api/artifacts/{name:path}", responses={**errors(404, 503), **BINARY_ANSWER})
async def get_artifact(name: ArtifactName, workspace: CallerWorkspace) -> Response:
    found = await workspace.storage().load_artifact(name)
    if found is None:
        raise NotFoundError(f"no artifact named {name!r}")
    value = decode_artifact(*found)
    if isinstance(value, bytes):
        return Response(value, media_type="application/octet-stream")
    return AsciiJSONResponse(value)


def _payload(body: ArtifactCreate) -> tuple[bytes, str]:
    """The bytes to store and their data type: `data_base64` as is, else `data` encoded."""
    if body.data_base64 is None:
        return encode_artifact(body.data)
    try:
        return base64.b64decode(body.data_base64, validate=True), "bytes"
    except ValueError:
        raise ValidationError("data_base64 is not valid base64") from None


@router.post("/api/artifacts", responses=errors(404, 409, 413, 503))
async def save_artifact(body: ArtifactCreate, workspace: CallerWorkspace) -> dict[str, Any]:
    payload, data_type = _payload(body)
    info = ArtifactInfo(
        name=body.name,
        description=body.description,
        metadata=artifact_metadata(body.metadata, data_type),
    )
    await workspace.storage().save_artifact(info, payload)
    return info.to_dict()


@router.delete("/api/artifacts/{name:path}", responses=errors(404, 409, 503))
async def delete_artifact(name: ArtifactName, workspace: CallerWorkspace) -> dict[str, Any]:
    if not await workspace.storage().delete_artifact(name):
        raise NotFoundError(f"no artifact named {name!r}")
    return {"deleted": name}
