"""The token service (port 8001): the admin API (the gateway forwards to it), `/metrics`, and the prober +
refresher in the background."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import aiohttp
import redis.asyncio as aioredis
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from shared.client_keys import ClientKeys
from shared.metrics import instrument_redis
from shared.redis_client import make_redis
from shared.settings import TokenServiceSettings
from token_service import metrics
from token_service.accounts import Accounts
from token_service.admin import ADMIN_CONTEXT, AdminContext, add_admin_routes
from token_service.migrate import migrate_legacy_accounts
from token_service.prober import Prober

SETTINGS: web.AppKey[TokenServiceSettings] = web.AppKey("settings", TokenServiceSettings)
REDIS: web.AppKey[aioredis.Redis] = web.AppKey("redis", aioredis.Redis)
SESSION: web.AppKey[aiohttp.ClientSession] = web.AppKey("session", aiohttp.ClientSession)
ACCOUNTS: web.AppKey[Accounts] = web.AppKey("accounts", Accounts)
PROBER_TASK: web.AppKey[asyncio.Task[None]] = web.AppKey("prober_task", asyncio.Task)


def create_app(settings: TokenServiceSettings, *, background: bool = True) -> web.Application:
    """The token service app; `background=False` leaves the prober off (tests drive it by hand)."""
    app = web.Application(client_max_size=settings.max_body_bytes)
    app[SETTINGS] = settings
    app.cleanup_ctx.append(_redis_ctx)
    app.cleanup_ctx.append(_session_ctx)
    app.cleanup_ctx.append(_accounts_ctx)
    if background:
        app.cleanup_ctx.append(_prober_ctx)
    app.router.add_get("/metrics", metrics_with_account_gauges)
    app.router.add_get("/healthz", healthz)
    add_admin_routes(app)
    return app


async def _redis_ctx(app: web.Application) -> AsyncIterator[None]:
    app[REDIS] = instrument_redis(make_redis(app[SETTINGS].common), "token_service")
    yield
    await app[REDIS].aclose()


async def _session_ctx(app: web.Application) -> AsyncIterator[None]:
    async with aiohttp.ClientSession() as session:
        app[SESSION] = session
        yield


async def _accounts_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    await migrate_legacy_accounts(app[REDIS])
    accounts = Accounts(app[REDIS], settings.pool, app[SESSION], settings.common.kimi_base_url)
    app[ACCOUNTS] = accounts
    app[ADMIN_CONTEXT] = AdminContext(
        accounts,
        settings.common.admin_api_key,
        settings.max_body_bytes,
        ClientKeys(app[REDIS]),
        worker_stale_s=settings.common.worker_stale_s,
    )
    yield


async def _prober_ctx(app: web.Application) -> AsyncIterator[None]:
    background = Prober(app[ACCOUNTS], app[SETTINGS].pool.probe_interval_s)
    task = asyncio.create_task(background.run())
    app[PROBER_TASK] = task
    yield
    background.stop()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def metrics_with_account_gauges(request: web.Request) -> web.Response:
    """Prometheus exposition; the account gauges are read from Redis at each scrape.

    Pass-through (ephemeral) accounts are clients' own tokens: they are not the pool an operator is paged about.
    """
    stored = [account for account in await request.app[ACCOUNTS].list() if not account.ephemeral]
    metrics.update_account_gauges(stored)
    return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})


async def healthz(request: web.Request) -> web.Response:
    await request.app[REDIS].ping()
    return web.json_response({"ok": True})
