"""The one way services build their asyncio Redis client: fail-fast timeouts, bounded pool.

No `health_check_interval`: it sends a PING before reusing a connection idle that long, a round trip on
the request path; redis-py's default Retry already reconnects and retries on a dead connection. redis-py
sets TCP_NODELAY on its sockets itself.
"""

from __future__ import annotations

import redis.asyncio as aioredis

from shared.settings import CommonSettings


def make_redis(settings: CommonSettings, *, max_connections: int = 256) -> aioredis.Redis:
    """A client for request-path commands. Blocking reads (XREAD BLOCK) use `make_blocking_redis`."""
    return aioredis.Redis.from_url(
        settings.redis_url,
        socket_connect_timeout=settings.redis_socket_timeout_s,
        socket_timeout=settings.redis_socket_timeout_s,
        max_connections=max_connections,
    )


def make_blocking_redis(
    settings: CommonSettings, block_ms: int, *, max_connections: int = 1024
) -> aioredis.Redis:
    """A client whose socket timeout exceeds BLOCK (redis-py #2807: otherwise blocking reads time out)."""
    return aioredis.Redis.from_url(
        settings.redis_url,
        socket_connect_timeout=settings.redis_socket_timeout_s,
        socket_timeout=block_ms / 1000 + settings.redis_socket_timeout_s,
        max_connections=max_connections,
    )
