"""The gateway's long-lived resources, each a cleanup_ctx entry under a typed AppKey."""

from __future__ import annotations

from collections.abc import AsyncIterator

import redis.asyncio as aioredis
from aiohttp import web

from gateway.attachments.fetch import open_fetcher
from gateway.attachments.intake import AttachmentIntake, AttachmentLimits
from gateway.replies import ReplyReader
from gateway.workers import WorkerWatch
from shared.keys import REPLY_BLOCK_MS
from shared.metrics import instrument_redis
from shared.redis_client import make_blocking_redis, make_redis
from shared.settings import GatewaySettings
from token_service.client import PassThroughAccounts

SETTINGS = web.AppKey("settings", GatewaySettings)
REDIS = web.AppKey("redis", aioredis.Redis)
#: The one XREAD BLOCK over every open reply stream (gateway/replies.py).
REPLIES = web.AppKey("replies", ReplyReader)
#: Clients' own Kimi tokens (`Bearer T1,T2`), stored as ephemeral accounts.
PASSTHROUGH = web.AppKey("passthrough", PassThroughAccounts)
WORKER_WATCH = web.AppKey("worker_watch", WorkerWatch)
#: Takes in each request's images and documents (URL fetches through the app's one fetcher).
INTAKE = web.AppKey("attachment_intake", AttachmentIntake)


async def redis_clients(app: web.Application) -> AsyncIterator[None]:
    common = app[SETTINGS].common
    app[REDIS] = instrument_redis(make_redis(common), "gateway")
    app[WORKER_WATCH] = WorkerWatch(app[REDIS], app[SETTINGS])
    yield
    await app[REDIS].aclose()


async def reply_reader(app: web.Application) -> AsyncIterator[None]:
    """The reply reader and its task, on a connection of its own whose socket timeout exceeds BLOCK."""
    pool = make_blocking_redis(app[SETTINGS].common, REPLY_BLOCK_MS, max_connections=1)
    blocking = instrument_redis(
        aioredis.Redis(connection_pool=pool.connection_pool, single_connection_client=True), "gateway"
    )
    reader = app[REPLIES] = ReplyReader(blocking, app[REDIS], REPLY_BLOCK_MS)
    reader.start()
    yield
    await reader.aclose()
    await blocking.aclose()
    await pool.aclose()


async def passthrough_accounts(app: web.Application) -> AsyncIterator[None]:
    app[PASSTHROUGH] = PassThroughAccounts(app[REDIS], app[SETTINGS].pool)
    yield


async def attachment_intake(app: web.Application) -> AsyncIterator[None]:
    """The attachment intake and the URL fetcher's session it uses."""
    settings = app[SETTINGS].attachments
    async with open_fetcher(settings) as fetcher:
        app[INTAKE] = AttachmentIntake(fetcher, AttachmentLimits.from_settings(settings))
        yield
