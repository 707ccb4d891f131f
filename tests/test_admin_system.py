"""`GET /admin/system`: the job stream, the workers' heartbeats and the pool by state and kind, against a real
Redis, a real worker and the Kimi simulator; protected like every admin route."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import redis.asyncio as aioredis
from aiohttp import web
from aiohttp.test_utils import TestClient

from kimi_sim.server import SimServer
from shared import keys
from shared.secret import Secret
from shared.settings import CommonSettings, PoolSettings
from tests.stack import StackFactory, sim_regions, stack_factory
from tests.test_admin_api import AUTH, KEY, settings_for
from token_service.accounts import Accounts
from token_service.app import create_app

__all__ = ["stack_factory"]  # the fixture, imported for pytest

Client = TestClient[web.Request, web.Application]
ClientFactory = Callable[..., Awaitable[Client]]
NO_KEY_401 = {
    "success": False,
    "error": "ADMIN_API_KEY is not set, so admin routes answer only to loopback callers;"
    " set it and send it as Authorization: Bearer <key> or X-Admin-Key",
    "type": "authentication",
    "param": None,
}


async def test_system_shows_workers_accounts_and_the_queue_through_the_gateway(
    stack_factory: StackFactory, redis: aioredis.Redis, redis_url: str, kimi_sim: SimServer
) -> None:
    """Through the gateway, with a live in-process worker and a stale heartbeat beside it: the live one is alive,
    the stale one is not; accounts are counted by every state and kind, pass-through ones apart; the dead-letter
    stream's length is shown."""
    common = CommonSettings(redis_url=redis_url, kimi_base_url=kimi_sim.url, admin_api_key=Secret(KEY))
    stack = await stack_factory(common=common, worker_overrides={"consumer_name": "console-live"})
    first = await stack.add("kimi_auth")
    await stack.add("kimi_auth")
    await stack.add("refresh_token")
    async with aiohttp.ClientSession() as session:
        pool = Accounts(redis, PoolSettings(**sim_regions(kimi_sim)), session, kimi_sim.url)
        await pool.add_ephemeral([kimi_sim.state.add_account("kimi_auth").token])
        await pool.disable(first)
        stale_ms = int(time.time() * 1000) - 60_000
        await redis.hset(keys.WORKERS_HASH, "console-gone", stale_ms)
        await redis.xadd(keys.DEAD_LETTER_STREAM, {"job": b"x"})
        async with session.get(f"{stack.url}/admin/system", headers=AUTH) as resp:
            assert resp.status == 200, await resp.text()
            answer: dict[str, Any] = await resp.json()
    now_ms = int(time.time() * 1000)
    assert set(answer) == {"jobs", "workers", "accounts", "stale_after_s", "now_ms"}
    assert now_ms - 5_000 <= answer["now_ms"] <= now_ms
    assert answer["stale_after_s"] == 15.0
    assert answer["jobs"] == {"stream_length": 0, "pending": 0, "dead_letter": 1}
    assert answer["accounts"] == {
        "total": 3,
        "by_state": {"active": 2, "cooling": 0, "invalid": 0, "expired": 0, "disabled": 1},
        "by_kind": {"kimi_auth": 2, "refresh_token": 1, "api_key": 0},
        "passthrough": 1,
    }
    gone, live = answer["workers"]
    assert gone == {
        "name": "console-gone",
        "last_heartbeat_ms": stale_ms,
        "age_s": round((answer["now_ms"] - stale_ms) / 1000, 1),
        "alive": False,
    }
    assert set(live) == {"name", "last_heartbeat_ms", "age_s", "alive"}
    assert live["name"] == "console-live" and live["alive"] is True
    assert 0 <= live["age_s"] <= 1.0
    assert answer["now_ms"] - 1_000 <= live["last_heartbeat_ms"] <= answer["now_ms"]


async def test_system_counts_queued_and_pending_jobs(
    aiohttp_client: ClientFactory, redis: aioredis.Redis, redis_url: str, kimi_sim: SimServer
) -> None:
    """Two jobs on the stream, one of them read by a consumer of the group: stream_length 2, pending 1; with no
    stream or group at all both are 0 and no worker is listed."""
    client = await aiohttp_client(create_app(settings_for(redis_url, kimi_sim.url), background=False))
    empty = await (await client.get("/admin/system", headers=AUTH)).json()
    assert empty["jobs"] == {"stream_length": 0, "pending": 0, "dead_letter": 0}
    assert empty["workers"] == []
    assert empty["accounts"]["total"] == 0
    await redis.xgroup_create(keys.JOBS_STREAM, keys.JOBS_GROUP, id="0", mkstream=True)
    await redis.xadd(keys.JOBS_STREAM, {"job": b"1"})
    await redis.xadd(keys.JOBS_STREAM, {"job": b"2"})
    await redis.xreadgroup(keys.JOBS_GROUP, "reader", {keys.JOBS_STREAM: ">"}, count=1)
    answer = await (await client.get("/admin/system", headers=AUTH)).json()
    assert answer["jobs"] == {"stream_length": 2, "pending": 1, "dead_letter": 0}


async def test_system_is_protected_like_every_admin_route(
    aiohttp_client: ClientFactory, redis_url: str, kimi_sim: SimServer
) -> None:
    """With a key: no key or a wrong one is 401, the key is 200. Without one: a caller relayed by a proxy (a
    remote caller) is 401 with the loopback rule's message; a loopback caller is served."""
    keyed = await aiohttp_client(create_app(settings_for(redis_url, kimi_sim.url), background=False))
    for headers in ({}, {"X-Admin-Key": "wrong"}):
        resp = await keyed.get("/admin/system", headers=headers)
        assert resp.status == 401
        assert (await resp.json())["type"] == "authentication"
    assert (await keyed.get("/admin/system", headers={"X-Admin-Key": KEY})).status == 200
    open_ = await aiohttp_client(
        create_app(settings_for(redis_url, kimi_sim.url, key=None), background=False)
    )
    remote = await open_.get("/admin/system", headers={"X-Forwarded-For": "203.0.113.9"})
    assert remote.status == 401
    assert await remote.json() == NO_KEY_401
    assert (await open_.get("/admin/system")).status == 200
