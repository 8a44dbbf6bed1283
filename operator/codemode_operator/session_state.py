"""A CodeSession's saved state in its workspace's Redis, as the operator sees it.

The session server writes `P:snapshot:{state id}` (codemode_session.storage.snapshots)
and the history `P:session:{id}` / `P:messages:{id}`; the operator never loads a
snapshot, it only deletes a session's state when the session is ended for good
(retention of a suspended session, Terminated), giving its bytes back to the
workspace's usage counter in the same transaction, as the server does.
"""

from __future__ import annotations

import redis
from codemode_session.storage.keys import KeyLayout
from redis.exceptions import WatchError

ATTEMPTS = 5


def state_id_of(uid: str) -> str:
    """The id a CodeSession's snapshots and history are kept under (its uid: a session
    deleted and created again under the same name starts afresh)."""
    return f"cs.{uid}"


def forget_state(
    admin_url: str, prefix: str, workspace_id: str, state_id: str, history: bool = False
) -> bool:
    """Delete the session's snapshot and, with `history`, its history (a suspended
    session past its retention goes with all its data; a Terminated one keeps the record
    of what ran, deleted through the history API), giving their bytes back to the
    workspace's usage. True if there was anything."""
    keys = KeyLayout(prefix=prefix, workspace_id=workspace_id)
    key, index = f"{keys.scope}:snapshot:{state_id}", f"{keys.scope}:snapshots"
    record, messages = keys.history_session(state_id), keys.history_messages(state_id)
    watched = [key, keys.usage, record, f"{messages}:bytes"]
    with redis.Redis.from_url(admin_url, socket_timeout=5, socket_connect_timeout=5) as client:
        for _ in range(ATTEMPTS):
            with client.pipeline(transaction=True) as pipe:
                try:
                    pipe.watch(*watched)
                    size = int(pipe.hstrlen(key, "data")) + int(pipe.hstrlen(key, "meta"))
                    agent = pipe.hget(record, "agent_id") if history else None
                    if history:
                        size += int(pipe.get(f"{messages}:bytes") or 0)
                    found = bool(size) or agent is not None
                    if not found:
                        return False
                    used = pipe.hget(keys.usage, "bytes")
                    pipe.multi()
                    pipe.unlink(key)
                    pipe.hdel(index, state_id)
                    if history:
                        pipe.unlink(record, messages, f"{messages}:count", f"{messages}:bytes")
                        if agent is not None:
                            pipe.zrem(keys.history_index(agent.decode()), state_id)
                    if used is not None:
                        pipe.hincrby(keys.usage, "bytes", -min(size, int(used)))
                    pipe.execute()
                    return True
                except WatchError:
                    continue
    return False
