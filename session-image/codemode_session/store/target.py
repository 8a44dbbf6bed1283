"""Open the storage a store command reads or writes: Redis or a FileStorage dir.

Defaults come from the same environment the session server uses (REDIS_URL,
STORAGE_PREFIX, WORKSPACE_ID), so a bootstrap Job and the sessions it feeds
agree on the namespace without repeating it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from codemode_session.errors import ValidationError
from codemode_session.names import validate_prefix, validate_workspace_id
from codemode_session.storage import FileStorage, RedisStorage, Storage

DEFAULT_PREFIX = "codemode"


@dataclass(frozen=True)
class TargetSpec:
    redis_url: str | None = None
    directory: str | None = None
    prefix: str | None = None
    workspace_id: str | None = None
    timeout: float = 10.0

    def resolved(self) -> TargetSpec:
        """Fill unset fields from the environment and validate them."""
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
        return TargetSpec(url, None, prefix, workspace, self.timeout)


async def open_storage(spec: TargetSpec) -> Storage:
    """A connected storage (Redis is pinged, so an unreachable server fails here)."""
    spec = spec.resolved()
    storage: Storage
    if spec.directory is not None:
        storage = FileStorage(spec.directory, spec.workspace_id)
    else:
        assert spec.redis_url is not None and spec.prefix is not None
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
