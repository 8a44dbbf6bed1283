"""Open the storage a store command reads or writes: Redis or a FileStorage dir.

Defaults come from the same environment the session server uses (REDIS_URL,
STORAGE_PREFIX, WORKSPACE_ID), so a bootstrap Job and the sessions it feeds
agree on the namespace without repeating it.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from codemode_session.errors import NotFoundError, StorageUnavailableError, ValidationError
from codemode_session.names import validate_prefix, validate_workspace_id
from codemode_session.storage import FileStorage, RedisStorage, Storage

DEFAULT_PREFIX = "codemode"
_DB_PATH_RE = re.compile(r"^/?([0-9]{1,5})?/?$")


def _explicit(value: str | None, option: str) -> str | None:
    """An option given on the command line must not be empty (no silent fallback)."""
    if value is not None and not value.strip():
        raise ValidationError(f"{option} is empty")
    return value


def validate_redis_url(url: str) -> str:
    """Refuse what redis-py would silently reinterpret: no host, a non-numeric db."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ValidationError(f"invalid Redis URL: {exc}") from None
    if parts.scheme not in ("redis", "rediss", "unix"):
        raise ValidationError(
            f"invalid Redis URL scheme {parts.scheme!r}: use redis://, rediss:// or unix://"
        )
    if parts.scheme == "unix":
        if not parts.path:
            raise ValidationError("invalid Redis URL: unix:// needs a socket path")
        return url
    if not parts.hostname:
        raise ValidationError(f"invalid Redis URL {parts.scheme}://...: no host")
    if port == 0:
        raise ValidationError("invalid Redis URL: port 0")
    if not _DB_PATH_RE.match(unquote(parts.path)):
        raise ValidationError(
            f"invalid Redis URL: database {parts.path!r} is not a number (use /0, /1, ...)"
        )
    return url


@dataclass(frozen=True)
class TargetSpec:
    redis_url: str | None = None
    directory: str | None = None
    prefix: str | None = None
    workspace_id: str | None = None
    timeout: float = 10.0

    def resolved(self) -> TargetSpec:
        """Fill unset fields from the environment and validate them."""
        _explicit(self.redis_url, "--redis-url")
        _explicit(self.prefix, "--prefix")
        _explicit(self.directory, "--dir")
        workspace = self.workspace_id
        if workspace is None:
            workspace = os.environ.get("WORKSPACE_ID") or None
        validate_workspace_id(workspace)
        if self.directory is not None:
            if self.redis_url is not None:
                raise ValidationError("give either --redis-url or --dir, not both")
            return TargetSpec(None, self.directory, None, workspace, self.timeout)
        url = self.redis_url or os.environ.get("REDIS_URL") or None
        if not url:
            raise ValidationError("no target: pass --redis-url (or set REDIS_URL) or --dir")
        prefix = self.prefix or os.environ.get("STORAGE_PREFIX") or DEFAULT_PREFIX
        validate_prefix(prefix)
        validate_redis_url(url)
        return TargetSpec(url, None, prefix, workspace, self.timeout)


async def open_storage(spec: TargetSpec, create: bool = True) -> Storage:
    """A connected storage (Redis is pinged, so an unreachable server fails here).

    With `create=False` (commands that only read, or only remove) a --dir target
    must already exist and is not written to: a mistyped path is an error, not a
    new empty tree.
    """
    spec = spec.resolved()
    if spec.directory is not None:
        return await _open_folder(spec.directory, spec.workspace_id, create)
    assert spec.redis_url is not None and spec.prefix is not None
    storage: Storage
    try:
        storage = RedisStorage(
            url=spec.redis_url,
            prefix=spec.prefix,
            workspace_id=spec.workspace_id,
            socket_timeout=spec.timeout,
        )
    except ValidationError:
        raise
    except ValueError as exc:  # redis-py's URL parser
        raise ValidationError(f"invalid Redis URL: {exc}") from None
    try:
        await storage.ping()
    except BaseException:
        await storage.close()
        raise
    return storage


async def _open_folder(directory: str, workspace_id: str | None, create: bool) -> Storage:
    base = os.path.expanduser(directory)
    if not create:
        if not os.path.isdir(base):
            raise NotFoundError(f"target folder not found: {base}")
        return FileStorage(base, workspace_id)
    storage = FileStorage(base, workspace_id)
    try:
        await storage.ping()
    except OSError as exc:
        raise StorageUnavailableError(
            f"cannot use target folder {base}: {exc.strerror or exc}"
        ) from None
    return storage
