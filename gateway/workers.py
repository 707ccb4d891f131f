"""Which workers are alive: their heartbeats in `kimi:workers`, read for /readyz and before each enqueue."""

from __future__ import annotations

import time

import redis.asyncio as aioredis

from shared.keys import WORKERS_HASH
from shared.settings import GatewaySettings


async def live_workers(redis: aioredis.Redis, settings: GatewaySettings) -> int:
    """How many workers wrote a heartbeat within `WORKER_STALE_S`."""
    beats = await redis.hvals(WORKERS_HASH)
    oldest_ms = (time.time() - settings.common.worker_stale_s) * 1000
    return sum(_ms(beat) >= oldest_ms for beat in beats)


class WorkerWatch:
    """Answers "is any worker alive?" for every chat request without a Redis round trip each time.

    A positive answer is trusted for `ttl_s`; a negative one is re-checked on every call, so requests that
    arrive just after a worker starts are not refused from a stale cache.
    """

    def __init__(self, redis: aioredis.Redis, settings: GatewaySettings, ttl_s: float = 1.0) -> None:
        self._redis = redis
        self._settings = settings
        self._ttl_s = ttl_s
        self._alive_until = 0.0

    async def any_alive(self) -> bool:
        now = time.monotonic()
        if now < self._alive_until:
            return True
        if await live_workers(self._redis, self._settings):
            self._alive_until = now + self._ttl_s
            return True
        return False


def _ms(value: bytes | str) -> float:
    try:
        return float(value)
    except ValueError:
        return 0.0
