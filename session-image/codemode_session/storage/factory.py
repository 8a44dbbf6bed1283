"""Pick a storage backend from the environment the session server documents."""

from __future__ import annotations

from collections.abc import Mapping

from codemode_session.errors import ValidationError
from codemode_session.storage.base import Storage
from codemode_session.storage.file_storage import FileStorage
from codemode_session.storage.quota import Quota
from codemode_session.storage.redis_storage import RedisStorage


def storage_from_env(env: Mapping[str, str], workspace_id: str | None) -> Storage:
    """REDIS_URL (+ STORAGE_PREFIX) wins; else STORAGE_DIR; else refuse to guess."""
    url = env.get("REDIS_URL")
    quota = Quota.from_env(env)
    if url:
        return RedisStorage(
            url,
            prefix=env.get("STORAGE_PREFIX") or "codemode",
            workspace_id=workspace_id,
            quota=quota,
        )
    base = env.get("STORAGE_DIR")
    if base:
        return FileStorage(base, workspace_id=workspace_id, quota=quota)
    raise ValidationError("no storage configured: set REDIS_URL (or STORAGE_DIR for files)")
