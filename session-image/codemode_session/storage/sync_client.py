"""A synchronous redis-py client given to `RedisStorage(redis=...)`, made asynchronous.

py-code-mode's documents build storage as `RedisStorage(redis=Redis.from_url(url))` with a
synchronous client; our storage is asyncio. Rather than wrap every call in a thread, an
equivalent asyncio client is built from the synchronous client's connection parameters
(host, port, db, username, password, TLS settings, unix socket path, timeouts): the same
server, the same credentials, its own pool. The synchronous client itself is left alone
(not used, not closed).
"""

from __future__ import annotations

import inspect
from typing import Any

import redis
import redis.asyncio as aioredis
import redis.asyncio.connection as aioconnection
from redis.asyncio.retry import Retry
from redis.backoff import EqualJitterBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from codemode_session.errors import ValidationError

# The parameters that say where the server is and who we are; the rest (pool size,
# decoding, retries, health checks) is ours, as for a client built from a URL.
_CONNECTION_PARAMETERS = frozenset(
    {
        "host",
        "port",
        "db",
        "username",
        "password",
        "path",
        "socket_timeout",
        "socket_connect_timeout",
        "socket_keepalive",
        "socket_keepalive_options",
        "client_name",
        "credential_provider",
        "protocol",
    }
)


def _accepted(cls: type) -> set[str]:
    names: set[str] = set()
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is not None:
            names.update(inspect.signature(init).parameters)
    return names


def _async_class(sync_class: type) -> type[aioconnection.AbstractConnection]:
    # Subclasses first: SSLConnection is a Connection.
    if issubclass(sync_class, redis.UnixDomainSocketConnection):
        return aioconnection.UnixDomainSocketConnection
    if issubclass(sync_class, redis.SSLConnection):
        return aioconnection.SSLConnection
    if issubclass(sync_class, redis.Connection):
        return aioconnection.Connection
    raise ValidationError(
        f"RedisStorage(redis=...): cannot use a client whose connections are "
        f"{sync_class.__name__}; pass url= or a redis.asyncio.Redis"
    )


def async_client_from_sync(client: redis.Redis, socket_timeout: float) -> aioredis.Redis:
    """An asyncio client for the server and credentials `client` connects with."""
    pool = client.connection_pool
    connection_class = _async_class(pool.connection_class)
    accepted = _accepted(connection_class)
    kwargs: dict[str, Any] = {
        name: value
        for name, value in pool.connection_kwargs.items()
        if (name in _CONNECTION_PARAMETERS or name.startswith("ssl_")) and name in accepted
    }
    kwargs.setdefault("socket_timeout", socket_timeout)
    kwargs.setdefault("socket_connect_timeout", socket_timeout)
    async_pool = aioredis.ConnectionPool(
        connection_class=connection_class,
        retry=Retry(EqualJitterBackoff(cap=1.0, base=0.05), 3),
        retry_on_error=[RedisConnectionError, RedisTimeoutError],
        health_check_interval=10,
        socket_read_size=1 << 20,
        **kwargs,
    )
    return aioredis.Redis.from_pool(async_pool)  # the client owns (and closes) the pool
