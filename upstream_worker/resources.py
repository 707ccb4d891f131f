"""Everything one worker process holds: two Redis clients, the one ClientSession, the pool, the drivers and
the chat sweeper.

`open_worker(settings)` builds them and a `Worker` on top, and closes them in reverse order. The app's
cleanup context uses it, and so can tests: `async with open_worker(s) as w: await w.run(burst=True)`.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping

import aiohttp

from shared import keys
from shared.metrics import instrument_redis
from shared.redis_client import make_blocking_redis, make_redis
from shared.settings import WorkerSettings
from token_service.client import AccountPool
from upstream_worker.attachments import Attachments
from upstream_worker.drivers import DRIVERS, DriverFactory, open_drivers
from upstream_worker.runner import KimiRunner
from upstream_worker.sweeper import ChatSweeper
from upstream_worker.worker import Worker

#: Connections kept beyond one per concurrent job, for chat deletions and token refreshes.
_SPARE_CONNECTIONS = 16


@contextlib.asynccontextmanager
async def open_worker(
    settings: WorkerSettings, *, drivers: Mapping[str, DriverFactory] = DRIVERS
) -> AsyncIterator[Worker]:
    """The worker and its resources; `drivers` is the protocol registry (tests may wrap a protocol)."""
    common = settings.common
    redis = instrument_redis(
        make_redis(common, max_connections=2 * settings.concurrency + _SPARE_CONNECTIONS), "upstream_worker"
    )
    blocking = instrument_redis(
        make_blocking_redis(common, keys.JOBS_BLOCK_MS, max_connections=4), "upstream_worker"
    )
    try:
        async with _session(settings) as session:
            pool = AccountPool(redis, settings.pool, session, common.kimi_base_url)
            attachments = Attachments.create(redis, session, common.kimi_base_url, settings.timeouts)
            drivers_ = open_drivers(session, settings, redis, drivers)
            runner = KimiRunner(settings, redis, pool, drivers_, attachments)
            sweeper = ChatSweeper(redis, pool, drivers_, settings.chat_sweep_interval_s)
            yield Worker(settings, redis, blocking, runner, pool, sweeper)
    finally:
        await blocking.aclose()
        await redis.aclose()


def _session(settings: WorkerSettings) -> aiohttp.ClientSession:
    # aiohttp's default cap of 100 connections would queue jobs behind each other at high concurrency.
    connector = aiohttp.TCPConnector(limit=settings.concurrency + _SPARE_CONNECTIONS, ttl_dns_cache=300)
    return aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=None))
