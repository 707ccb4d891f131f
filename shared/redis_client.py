"""The one way services build their asyncio Redis client: fail-fast timeouts, a bounded pool that waits.

No `health_check_interval`: it sends a PING before reusing a connection idle that long, a round trip on
the request path. Instead a command that meets a dead connection (Redis restarted, or a proxy closed it
while idle: "Connection closed by server") is sent once more, at once, on a new connection (`_RECONNECT`);
without it the first command on every pooled connection fails after a Redis restart. Only connection errors
are retried, never timeouts, and only once with no pause: a Redis that is down fails the retry's connect at
once. redis-py sets TCP_NODELAY on its sockets itself.

A burst of requests needs more connections at once than the pool holds: a command then waits (up to
`REDIS_POOL_WAIT_S`) for one to come free instead of failing, as redis-py's plain pool does ("Too many
connections"). A wait that runs out raises `PoolExhausted`: this process has more Redis work in flight than
it can send, which is overload, not an outage. `gateway_error` is the one translation of a Redis failure
into what a client is told: 429 with `Retry-After` for overload, 503 when Redis is unreachable.
"""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.connection import AbstractConnection, BlockingConnectionPool
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from shared.errors import GatewayError, RateLimited, ServiceUnavailable
from shared.settings import CommonSettings

#: What a client shed for want of a connection is told to wait: a burst drains in well under a second.
POOL_RETRY_AFTER_S = 1.0
#: One immediate retry of a command whose connection turned out dead (see the module docstring).
_RECONNECT = Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,))


class PoolExhausted(RedisConnectionError):
    """No pooled connection came free within the pool's wait: too much Redis work in flight in this process."""


class WaitingConnectionPool(BlockingConnectionPool):
    """redis-py's blocking pool, whose wait running out raises `PoolExhausted` (a ConnectionError still)."""

    async def get_connection(self, *args: Any, **kwargs: Any) -> AbstractConnection:
        try:
            connection: AbstractConnection = await super().get_connection(*args, **kwargs)  # type: ignore[no-untyped-call]
        except RedisConnectionError as exc:
            # The pool's own wait raises ConnectionError from a TimeoutError; a failed connect does not.
            if isinstance(exc.__cause__, TimeoutError):
                raise PoolExhausted(f"no Redis connection came free within {self.timeout:g} s") from exc
            raise
        return connection


def make_redis(settings: CommonSettings, *, max_connections: int = 256) -> aioredis.Redis:
    """A client for request-path commands. Blocking reads (XREAD BLOCK) use `make_blocking_redis`."""
    pool = WaitingConnectionPool.from_url(
        settings.redis_url,
        socket_connect_timeout=settings.redis_socket_timeout_s,
        socket_timeout=settings.redis_socket_timeout_s,
        max_connections=max_connections,
        timeout=settings.redis_pool_wait_s,
        retry=_RECONNECT,  # each connection takes a copy
    )
    return aioredis.Redis.from_pool(pool)


def make_blocking_redis(
    settings: CommonSettings, block_ms: int, *, max_connections: int = 1024
) -> aioredis.Redis:
    """A client whose socket timeout exceeds BLOCK (redis-py #2807: otherwise blocking reads time out)."""
    return aioredis.Redis.from_url(
        settings.redis_url,
        socket_connect_timeout=settings.redis_socket_timeout_s,
        socket_timeout=block_ms / 1000 + settings.redis_socket_timeout_s,
        max_connections=max_connections,
        retry=_RECONNECT,  # each connection takes a copy
    )


def gateway_error(exc: RedisError) -> GatewayError:
    """What a client is told about a failed Redis command: overload (429) or an unreachable Redis (503)."""
    if isinstance(exc, PoolExhausted):
        return RateLimited(
            "The gateway is at capacity right now; retry shortly.", retry_after_s=POOL_RETRY_AFTER_S
        )
    return ServiceUnavailable("Redis is unreachable; try again shortly.")
