"""Length-prefixed JSON frames between the session server and its workers.

A frame may carry one binary attachment (artifact data): its JSON names the
attachment's size in `"blob"` and the raw bytes follow as a second frame, so
storage traffic through the server costs no base64.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import struct
from typing import Any

HEADER = struct.Struct(">I")
MAX_FRAME = 64 * 1024 * 1024
# An attachment may be larger than a frame: a session snapshot of big globals (its
# size is bounded again by SNAPSHOT_MAX_BYTES and the workspace's storage quota).
MAX_ATTACHMENT = 256 * 1024 * 1024
# A frame the worker sends during a streamed run: {"op": OUTPUT_OP, "stream", "text"}.
OUTPUT_OP = "output"


class ProtocolError(Exception):
    """The peer closed the channel or sent something that is not a frame."""


class ChannelClosed(ProtocolError):
    """The peer closed the channel (not a fault of what it sent)."""

    def __init__(self) -> None:
        super().__init__("channel closed")


# Both ends of a worker socket ask for this much kernel buffer, so a large attachment
# goes across in a few sends instead of many 200 KiB ones (the kernel caps it at wmem_max).
SOCKET_BUFFER = 4 * 1024 * 1024


def encode_parts(message: dict[str, Any], blob: bytes | None = None) -> list[bytes]:
    """The frame as pieces to send in order; the attachment is one of them, not copied."""
    if blob is not None:
        message = {**message, "blob": len(blob)}
    body = json.dumps(message, separators=(",", ":")).encode()
    if blob is None:
        return [HEADER.pack(len(body)) + body]
    return [HEADER.pack(len(body)) + body + HEADER.pack(len(blob)), blob]


def encode(message: dict[str, Any], blob: bytes | None = None) -> bytes:
    return b"".join(encode_parts(message, blob))


def send_parts(sock: socket.socket, parts: list[bytes]) -> None:
    """sendall for pieces: one sendmsg (writev) per round, no joined copy."""
    views = [memoryview(p) for p in parts if p]
    while views:
        sent = sock.sendmsg(views)
        while views and sent >= len(views[0]):
            sent -= len(views[0])
            views.pop(0)
        if views and sent:
            views[0] = views[0][sent:]


def widen_buffers(sock: socket.socket) -> None:
    for option in (socket.SO_SNDBUF, socket.SO_RCVBUF):
        with contextlib.suppress(OSError):  # a smaller buffer only costs speed
            sock.setsockopt(socket.SOL_SOCKET, option, SOCKET_BUFFER)


def blob_size(message: dict[str, Any]) -> int | None:
    """The announced attachment size, or None; ProtocolError when it is not a size."""
    size = message.get("blob")
    if size is None:
        return None
    if not isinstance(size, int) or isinstance(size, bool) or not 0 <= size <= MAX_ATTACHMENT:
        raise ProtocolError("frame announces an invalid attachment")
    return size


def decode(body: bytes) -> dict[str, Any]:
    try:
        message = json.loads(body)
    except ValueError:
        raise ProtocolError("frame is not JSON") from None
    if not isinstance(message, dict):
        raise ProtocolError("frame is not a JSON object")
    return message


class FrameReader:
    """Blocking reads of whole messages from one socket, through a buffer: a frame and its
    attachment usually arrive in one recv instead of four, and the attachment is read
    into its bytes object without a second copy. The only reader of its socket."""

    def __init__(self, sock: socket.socket, buffer: int = 256 * 1024) -> None:
        self._file = sock.makefile("rb", buffering=buffer)

    def _exact(self, size: int) -> bytes:
        data: bytes | None = self._file.read(size)
        if data is None or len(data) != size:
            raise ChannelClosed()
        return data

    def _raw(self, limit: int = MAX_FRAME) -> bytes:
        (size,) = HEADER.unpack(self._exact(HEADER.size))
        if size > limit:
            raise ProtocolError(f"frame of {size} bytes is too large")
        return self._exact(size)

    def read(self) -> dict[str, Any]:
        """One message; its attachment, if any, is in `message["blob"]` as bytes."""
        message = decode(self._raw())
        size = blob_size(message)
        if size is not None:
            blob = self._raw(MAX_ATTACHMENT)
            if len(blob) != size:
                raise ProtocolError("attachment size does not match its announcement")
            message["blob"] = blob
        return message

    def close(self) -> None:
        self._file.close()


async def _recv_raw_async(reader: asyncio.StreamReader, limit: int = MAX_FRAME) -> bytes:
    try:
        header = await reader.readexactly(HEADER.size)
        (size,) = HEADER.unpack(header)
        if size > limit:
            raise ProtocolError(f"frame of {size} bytes is too large")
        return await reader.readexactly(size)
    except asyncio.IncompleteReadError:
        raise ChannelClosed() from None


async def recv_async(reader: asyncio.StreamReader) -> dict[str, Any]:
    """One message; its attachment, if any, is in `message["blob"]` as bytes."""
    message = decode(await _recv_raw_async(reader))
    size = blob_size(message)
    if size is not None:
        blob = await _recv_raw_async(reader, MAX_ATTACHMENT)
        if len(blob) != size:
            raise ProtocolError("attachment size does not match its announcement")
        message["blob"] = blob
    return message
