"""`/files`: upload into and download from the session's working folder, streamed.

Bodies here are capped by MAX_FILE_BYTES (and the folder by MAX_FOLDER_BYTES), not by
MAX_REQUEST_BYTES: the body-size middleware leaves `/files/` to these routes.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Path, Request, Response
from fastapi.responses import StreamingResponse

from codemode_session.server.dependencies import (
    Owner,
    SessionHeader,
    State,
    authenticated_router,
)
from codemode_session.server.files import FILE_NAME_HELP, read_chunks
from codemode_session.server.http_errors import UnknownSession
from codemode_session.server.openapi import errors
from codemode_session.server.sessions import Session

router = authenticated_router()

FilePath = Annotated[str, Path(description=FILE_NAME_HELP)]
FILE_BYTES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The file's bytes",
        "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
    },
}
UPLOAD_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "The file's bytes (any length up to MAX_FILE_BYTES; chunked is fine)",
        "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
    }
}


def _session(state: State, session_id: str, owner: str | None) -> Session:
    session = state.sessions.get(session_id, owner)
    if session is None:
        raise UnknownSession(f"no session {session_id!r} of this caller (POST /sessions first)")
    return session


def _declared(request: Request) -> int | None:
    text = request.headers.get("content-length")
    return int(text) if text is not None and text.isdigit() else None


@router.get("/files", responses=errors(404))
async def list_files(state: State, owner: Owner, x_session_id: SessionHeader) -> dict[str, Any]:
    """The regular files in the session's working folder (its code's current directory)."""
    folder = state.sessions.folder(_session(state, x_session_id, owner))
    found = [f.to_dict() for f in await state.sessions.folders.listing(folder)]
    return {"files": found, "bytes": sum(int(str(f["bytes"])) for f in found)}


@router.put(
    "/files/{path:path}", status_code=201, responses=errors(404, 409), openapi_extra=UPLOAD_BODY
)
async def upload_file(
    path: FilePath, request: Request, state: State, owner: Owner, x_session_id: SessionHeader
) -> dict[str, Any]:
    """Store the body as `path` in the session's folder, replacing a file there once the
    whole body has arrived."""
    folders = state.sessions.folders
    folder = state.sessions.folder(_session(state, x_session_id, owner))
    await folders.check_size(folder, _declared(request))
    info = await folders.write(folder, path, request.stream())
    return info.to_dict()


@router.get("/files/{path:path}", responses={**errors(404), **FILE_BYTES})
async def download_file(
    path: FilePath, state: State, owner: Owner, x_session_id: SessionHeader
) -> Response:
    folder = state.sessions.folder(_session(state, x_session_id, owner))
    fd, size = state.sessions.folders.open_file(folder, path)
    return StreamingResponse(
        read_chunks(fd),
        media_type="application/octet-stream",
        headers={"Content-Length": str(size)},
    )


@router.delete("/files/{path:path}", responses=errors(404, 409))
async def delete_file(
    path: FilePath, state: State, owner: Owner, x_session_id: SessionHeader
) -> dict[str, Any]:
    folder = state.sessions.folder(_session(state, x_session_id, owner))
    state.sessions.folders.delete(folder, path)
    return {"deleted": path}
