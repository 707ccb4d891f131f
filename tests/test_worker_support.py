"""Helpers for the worker tests (no tests here): settings, accounts, jobs, reply streams on a real Redis."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import redis.asyncio as aioredis

from kimi_sim.server import SimServer
from shared import keys
from shared.schema import ChatOptions, ChatRequest, Event, Job, Message, encode_job, events_decoder
from shared.settings import CommonSettings, PoolSettings, UpstreamTimeouts, WorkerSettings
from token_service.accounts import Accounts
from upstream_worker.resources import open_worker

MODEL = "kimi-k2.5-instant"


def worker_settings(redis_url: str, sim_url: str, **overrides: Any) -> WorkerSettings:
    """Small timeouts so reclaim, heartbeats and failures show up within a test's time."""
    values: dict[str, Any] = {
        "common": CommonSettings(redis_url=redis_url, kimi_base_url=sim_url, log_format="console"),
        "pool": PoolSettings(max_concurrency_per_account=8, lease_ttl_s=30),
        "concurrency": 8,
        "consumer_name": f"test-{uuid.uuid4().hex[:6]}",
        "claim_idle_ms": 300,
        "heartbeat_interval_s": 0.1,
        "timeouts": UpstreamTimeouts(connect_s=2.0, first_byte_s=5.0, idle_s=5.0),
    }
    values.update(overrides)
    return WorkerSettings(**values)


async def add_accounts(
    redis: aioredis.Redis, sim: SimServer, count: int, kind: str = "kimi_auth"
) -> list[str]:
    """Mint `count` simulator accounts and save them in the pool; their ids, in order."""
    ids = []
    async with aiohttp.ClientSession() as session:
        pool = Accounts(redis, PoolSettings(), session, sim.url)
        for _ in range(count):
            account, _created = await pool.add(sim.state.add_account(kind).token)  # type: ignore[arg-type]
            ids.append(account.id)
    return ids


def chat_request(
    prompt: str, *, model: str = MODEL, deadline_in_s: float = 30.0, **options: Any
) -> ChatRequest:
    return ChatRequest(
        request_id=uuid.uuid4().hex,
        model=model,
        messages=[Message(role="user", content=prompt)],
        options=ChatOptions(**options),
        deadline_s=time.time() + deadline_in_s,
    )


async def enqueue(redis: aioredis.Redis, request: ChatRequest) -> str:
    """XADD a job as the gateway does; the job id."""
    await ensure_group(redis)
    job = Job(request=request, reply_key=keys.reply_key(request.request_id), enqueued_s=time.time())
    await redis.xadd(keys.JOBS_STREAM, {"job": encode_job(job)})
    return request.request_id


async def ensure_group(redis: aioredis.Redis) -> None:
    groups = await redis.xinfo_groups(keys.JOBS_STREAM) if await redis.exists(keys.JOBS_STREAM) else []
    if not groups:
        await redis.xgroup_create(keys.JOBS_STREAM, keys.JOBS_GROUP, id="0", mkstream=True)


async def reply_events(redis: aioredis.Redis, job_id: str) -> list[Event]:
    entries = await redis.xrange(keys.reply_key(job_id))
    return [event for _id, fields in entries for event in events_decoder.decode(fields[b"e"])]


async def run_burst(redis_url: str, sim_url: str, **overrides: Any) -> None:
    """A real worker with test settings processes whatever is queued, then returns."""
    async with open_worker(worker_settings(redis_url, sim_url, **overrides)) as worker:
        await worker.run(burst=True)


def text_of(events: list[Event]) -> str:
    return "".join(getattr(e, "text", "") for e in events if type(e).__name__ == "TextDelta")


async def wait_until(
    check: Callable[[], Awaitable[bool]], timeout_s: float = 10.0, every_s: float = 0.02
) -> None:
    deadline = time.monotonic() + timeout_s
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(every_s)


async def pending_count(redis: aioredis.Redis) -> int:
    info = await redis.xpending(keys.JOBS_STREAM, keys.JOBS_GROUP)
    return int(info["pending"])
