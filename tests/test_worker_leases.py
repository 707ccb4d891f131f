"""A job cancelled at any await point between its lease and its release never leaks the lease.

The cancel key (as the gateway sets it) stops a job at the await point it is in: stalled by a simulator fault
(the token refresh, Kimi's first byte, the chat deletion), or by `CLIENT PAUSE WRITE` for the release script
itself. The cancel watch keeps seeing the key every CANCEL_POLL_S while the job winds down; a second
cancellation must not cut its release or its cleanup short.
"""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aioredis

from kimi_sim.server import SimServer
from shared import keys
from shared.schema import Done, ErrorEvent, TextDelta
from tests.sim_fixtures import SimFactory
from tests.test_worker_support import (
    add_accounts,
    chat_request,
    enqueue,
    reply_events,
    wait_until,
    worker_settings,
)
from token_service.kimi_auth import REFRESH_PATH
from upstream_worker.kimi.connect import DELETE_CHAT_PATH
from upstream_worker.resources import open_worker
from upstream_worker.worker import Worker

CHAT_PATH = "/apiv2/kimi.gateway.chat.v1.ChatService/Chat"


async def _cancel(redis: aioredis.Redis, job_id: str) -> None:
    await redis.set(keys.cancel_key(job_id), 1, ex=keys.CANCEL_TTL_S)


async def _ended(redis: aioredis.Redis, job_id: str) -> bool:
    events = await reply_events(redis, job_id)
    return bool(events) and isinstance(events[-1], ErrorEvent | Done)


async def _assert_nothing_held(redis: aioredis.Redis, worker: Worker, account_ids: list[str]) -> None:
    """No lease in Redis, no job in the worker's map, no lease's fields kept in the pool's memory."""

    async def released() -> bool:
        return worker.in_flight == 0 and await redis.zcard(keys.ACCOUNT_LEASES) == 0

    await wait_until(released, timeout_s=3.0)
    for account_id in account_ids:
        assert await redis.zcard(keys.lease_key(account_id)) == 0
    assert worker._pool._leased_fields == {}


async def _cancelled_job(redis: aioredis.Redis, job_id: str) -> None:
    await wait_until(lambda: _ended(redis, job_id), timeout_s=5.0)
    events = await reply_events(redis, job_id)
    assert isinstance(events[-1], ErrorEvent) and events[-1].kind == "cancelled"


@pytest.mark.timeout(30)
async def test_cancel_during_the_release_still_releases(
    redis: aioredis.Redis, redis_url: str, kimi_sim_factory: SimFactory
) -> None:
    """The release script held up by CLIENT PAUSE WRITE while the cancel watch asks again: it completes."""
    sim = await kimi_sim_factory(chunk_count=40, chunk_delay_s=0.1)
    ids = await add_accounts(redis, sim, 1)
    job_id = await enqueue(redis, chat_request("cancel me"))
    async with open_worker(worker_settings(redis_url, sim.url)) as worker:
        task = asyncio.create_task(worker.run())

        async def streaming() -> bool:
            return any(isinstance(e, TextDelta) for e in await reply_events(redis, job_id))

        await wait_until(streaming)
        await _cancel(redis, job_id)
        # Reads (the cancel watch's EXISTS) go on; writes (the release script, the reply XADDs) wait 1.5 s,
        # across several polls of the cancel watch.
        await redis.execute_command("CLIENT", "PAUSE", 1500, "WRITE")
        await _cancelled_job(redis, job_id)
        await _assert_nothing_held(redis, worker, ids)
        await worker.aclose()
        await task


@pytest.mark.timeout(30)
async def test_cancel_during_the_chat_cleanup_still_deletes_the_chat(
    redis: aioredis.Redis, redis_url: str, kimi_sim_factory: SimFactory
) -> None:
    """A cancelled job whose chat deletion stalls for a second still deletes the chat and frees the lease."""
    sim = await kimi_sim_factory(chunk_count=40, chunk_delay_s=0.1)
    ids = await add_accounts(redis, sim, 1)
    sim.state.faults.arm("stall_first_byte", count=1, path=DELETE_CHAT_PATH, seconds=1.0)
    job_id = await enqueue(redis, chat_request("cancel me"))
    async with open_worker(worker_settings(redis_url, sim.url)) as worker:
        task = asyncio.create_task(worker.run())

        async def streaming() -> bool:
            return any(isinstance(e, TextDelta) for e in await reply_events(redis, job_id))

        await wait_until(streaming)
        await _cancel(redis, job_id)
        await _cancelled_job(redis, job_id)
        await _assert_nothing_held(redis, worker, ids)
        await wait_until(lambda: _deleted(sim), timeout_s=3.0)
        await worker.aclose()
        await task
    assert [r.path for r in sim.state.requests if r.path == DELETE_CHAT_PATH] == [DELETE_CHAT_PATH]


async def _deleted(sim: SimServer) -> bool:
    return list(sim.state.chats) == [] or set(sim.state.deleted_chats) == set(sim.state.chats)


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    ("kind", "stalled_path"),
    [("kimi_auth", CHAT_PATH), ("refresh_token", REFRESH_PATH)],
    ids=["waiting-for-kimi", "refreshing-the-token"],
)
async def test_cancel_while_stalled_before_the_answer_frees_the_account(
    redis: aioredis.Redis, redis_url: str, kimi_sim: SimServer, kind: str, stalled_path: str
) -> None:
    """Cancelled while Kimi stalls its first byte, or while the account's token refresh stalls: the lease
    is released at once and the same account answers the next job."""
    ids = await add_accounts(redis, kimi_sim, 1, kind=kind)
    kimi_sim.state.faults.arm("stall_first_byte", count=1, path=stalled_path, seconds=3.0)
    job_id = await enqueue(redis, chat_request("stalled", model="kimi"))
    async with open_worker(worker_settings(redis_url, kimi_sim.url)) as worker:
        task = asyncio.create_task(worker.run())

        async def stalled() -> bool:
            return any(r.path == stalled_path for r in kimi_sim.state.requests)

        await wait_until(stalled)
        await _cancel(redis, job_id)
        await _cancelled_job(redis, job_id)
        await _assert_nothing_held(redis, worker, ids)
        next_job = await enqueue(redis, chat_request("next", model="kimi"))
        await wait_until(lambda: _ended(redis, next_job), timeout_s=5.0)
        assert isinstance((await reply_events(redis, next_job))[-1], Done)
        await worker.aclose()
        await task
