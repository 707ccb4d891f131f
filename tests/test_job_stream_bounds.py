"""The job stream holds only unfinished jobs: workers delete what they ack, the gateway bounds the backlog."""

from __future__ import annotations

import time
from typing import Any

import pytest
import redis.asyncio as aioredis
from aiohttp.test_utils import TestClient

from gateway.app import create_app
from gateway.resources import REDIS
from kimi_sim.server import SimServer
from shared import keys
from shared.schema import Done
from shared.settings import CommonSettings, GatewaySettings
from tests.test_worker_support import add_accounts, chat_request, enqueue, reply_events, run_burst

HI = {"model": "kimi", "messages": [{"role": "user", "content": "hi"}]}


async def _gateway(aiohttp_client: Any, redis_url: str, **overrides: Any) -> TestClient[Any, Any]:
    settings = GatewaySettings(**{"common": CommonSettings(redis_url=redis_url), **overrides})
    client: TestClient[Any, Any] = await aiohttp_client(create_app(settings))
    return client


async def _announce_worker(redis: aioredis.Redis) -> None:
    """A fresh heartbeat, so that the gateway enqueues (no worker reads in these tests)."""
    await redis.hset(keys.WORKERS_HASH, "bounds-test", int(time.time() * 1000))


@pytest.mark.timeout(30)
async def test_finished_and_dead_lettered_jobs_leave_the_job_stream(
    redis: aioredis.Redis, redis_url: str, kimi_sim: SimServer
) -> None:
    """After a worker answered three jobs and dead-lettered a fourth, the job stream is empty: acked entries
    are deleted, not kept until a MAXLEN trim (the dead letter keeps its own copy)."""
    await add_accounts(redis, kimi_sim, 1)
    job_ids = [await enqueue(redis, chat_request(f"job {n}")) for n in range(3)]
    await redis.xadd(keys.JOBS_STREAM, {"job": b"\xc1 not msgpack"})
    await run_burst(redis_url, kimi_sim.url)
    for job_id in job_ids:
        assert isinstance((await reply_events(redis, job_id))[-1], Done)
    assert await redis.xlen(keys.JOBS_STREAM) == 0
    assert (await redis.xpending(keys.JOBS_STREAM, keys.JOBS_GROUP))["pending"] == 0
    assert await redis.xlen(keys.DEAD_LETTER_STREAM) == 1


@pytest.mark.timeout(30)
async def test_a_full_backlog_refuses_new_jobs_and_trims_none(
    redis: aioredis.Redis, redis_url: str, aiohttp_client: Any
) -> None:
    """With JOBS_BACKLOG_MAX jobs queued, a request gets 429 with Retry-After and the queued jobs all stay;
    once one leaves, the next request is queued again."""
    await _announce_worker(redis)
    gateway = await _gateway(aiohttp_client, redis_url, jobs_backlog_max=3, request_timeout_s=0.5)
    queued = [await redis.xadd(keys.JOBS_STREAM, {"job": f"queued {n}"}) for n in range(3)]

    resp = await gateway.post("/v1/chat/completions", json=HI)
    assert resp.status == 429
    assert resp.headers["Retry-After"] == "5"
    error = (await resp.json())["error"]
    assert error["message"] == "The job queue is full (3 requests queued or running); retry later."
    assert [entry_id for entry_id, _ in await redis.xrange(keys.JOBS_STREAM)] == queued

    await redis.xdel(keys.JOBS_STREAM, queued[0])
    resp = await gateway.post("/v1/chat/completions", json=HI)
    assert resp.status == 504  # queued, then nobody answered within REQUEST_TIMEOUT_S
    entries = await redis.xrange(keys.JOBS_STREAM)
    assert [entry_id for entry_id, _ in entries[:2]] == queued[1:] and len(entries) == 3


@pytest.mark.timeout(30)
async def test_a_request_that_finds_no_free_redis_connection_is_shed_with_429(
    redis: aioredis.Redis, redis_url: str, aiohttp_client: Any
) -> None:
    """When every pooled connection stays busy past REDIS_POOL_WAIT_S the request is overload (429 with
    Retry-After), not "Redis is unreachable" (503); once connections come free, requests are queued again."""
    await _announce_worker(redis)
    gateway = await _gateway(
        aiohttp_client,
        redis_url,
        common=CommonSettings(redis_url=redis_url, redis_pool_wait_s=0.2),
        request_timeout_s=0.5,
    )
    pool = gateway.app[REDIS].connection_pool
    held = [await pool.get_connection() for _ in range(pool.max_connections)]
    started = time.monotonic()
    resp = await gateway.post("/v1/chat/completions", json=HI)
    waited_s = time.monotonic() - started
    assert resp.status == 429, await resp.text()
    assert resp.headers["Retry-After"] == "1"
    assert (await resp.json())["error"]["message"] == "The gateway is at capacity right now; retry shortly."
    assert 0.2 <= waited_s < 1.5
    for connection in held:
        await pool.release(connection)
    resp = await gateway.post("/v1/chat/completions", json=HI)
    assert resp.status == 504
    assert await redis.xlen(keys.JOBS_STREAM) == 1
