"""Liveness and readiness: `/ping`, `/healthz` (the process answers), `/readyz` (Redis and a live worker)."""

from __future__ import annotations

import asyncio

import msgspec
from aiohttp import web
from redis.exceptions import RedisError

from gateway.resources import REDIS, SETTINGS
from gateway.workers import live_workers

_encoder = msgspec.json.Encoder()
#: A probe must answer well within a load balancer's own timeout, Redis down or not.
READY_TIMEOUT_S = 1.0


class Readiness(msgspec.Struct):
    status: str
    redis: bool
    live_workers: int


async def ping(request: web.Request) -> web.Response:
    return web.Response(text="pong")


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """200 when Redis answers and at least one worker has a fresh heartbeat, else 503."""
    try:
        async with asyncio.timeout(READY_TIMEOUT_S):
            live = await live_workers(request.app[REDIS], request.app[SETTINGS])
    except (RedisError, TimeoutError):
        return _readiness(Readiness("unavailable", redis=False, live_workers=0))
    return _readiness(Readiness("ready" if live else "no_worker", redis=True, live_workers=live))


def _readiness(state: Readiness) -> web.Response:
    return web.Response(
        status=200 if state.status == "ready" else 503,
        body=_encoder.encode(state),
        content_type="application/json",
    )
