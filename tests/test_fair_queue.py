"""Waiting for an account: first come first served across processes, a cap per client, a real 429 at the end."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator

import aiohttp
import pytest
import redis.asyncio as aioredis

from kimi_sim.answers import answer_for
from kimi_sim.server import SimServer
from shared.errors import RateLimited
from shared.settings import PoolSettings
from tests.stack import Stack, StackFactory, stack_factory
from token_service.accounts import Accounts
from token_service.leases import Ticket
from token_service.store import now_ms

__all__ = ["stack_factory"]  # the fixture, imported for pytest

ACCOUNTS = 8
CLIENTS = 40
ROUNDS = 3


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


def one_slot_pool(redis: aioredis.Redis, session: aiohttp.ClientSession, url: str) -> Accounts:
    return Accounts(redis, PoolSettings(max_concurrency_per_account=1), session, url)


def ticket(job_id: str, arrival_ms: int, client: str = "", client_max: int = 0) -> Ticket:
    return Ticket(
        job_id=job_id, arrival_ms=arrival_ms, line="kimi_auth", client=client, client_max=client_max
    )


async def test_waiting_jobs_are_served_in_the_order_they_arrived(
    redis: aioredis.Redis, session: aiohttp.ClientSession, kimi_sim: SimServer
) -> None:
    """Five jobs that start waiting in reverse order of arrival on a busy one-slot pool are served oldest first."""
    pool = one_slot_pool(redis, session, kimi_sim.url)
    await pool.add(kimi_sim.state.add_account("kimi_auth").token)
    held = await pool.lease()
    served: list[str] = []

    async def wait(name: str, arrival_ms: int) -> None:
        lease = await pool.lease(wait_s=5.0, ticket=ticket(name, arrival_ms))
        served.append(name)
        await asyncio.sleep(0.03)
        await pool.release(lease, "ok")

    start = now_ms()
    waiters = []
    for n in reversed(range(5)):
        waiters.append(asyncio.create_task(wait(f"job{n}", start + n)))
        await asyncio.sleep(0.02)
    await pool.release(held, "ok")
    await asyncio.gather(*waiters)
    assert served == ["job0", "job1", "job2", "job3", "job4"]
    assert await redis.keys("kimi:acct:{pool}:line*") == []


async def test_a_client_past_its_places_in_line_is_refused_at_once(
    redis: aioredis.Redis, session: aiohttp.ClientSession, kimi_sim: SimServer
) -> None:
    """With a cap of two places, a client's third waiting job gets RateLimited at once; another client waits
    behind the two and is served third."""
    pool = one_slot_pool(redis, session, kimi_sim.url)
    await pool.add(kimi_sim.state.add_account("kimi_auth").token)
    held = await pool.lease()
    served: list[str] = []

    async def wait(name: str, arrival_ms: int, client: str) -> None:
        lease = await pool.lease(wait_s=5.0, ticket=ticket(name, arrival_ms, client, 2))
        served.append(name)
        await asyncio.sleep(0.03)
        await pool.release(lease, "ok")

    start = now_ms()
    waiters = [asyncio.create_task(wait(f"a{n}", start + n, "alice")) for n in range(2)]
    await asyncio.sleep(0.2)
    asked = time.monotonic()
    with pytest.raises(RateLimited, match="too many requests of this client are waiting"):
        await pool.lease(wait_s=5.0, ticket=ticket("a2", start + 2, "alice", 2))
    assert time.monotonic() - asked < 0.2
    waiters.append(asyncio.create_task(wait("b0", start + 3, "bob")))
    await asyncio.sleep(0.1)
    await pool.release(held, "ok")
    await asyncio.gather(*waiters)
    assert served == ["a0", "a1", "b0"]


async def test_a_stopped_wait_ends_at_its_next_poll_and_leaves_the_line(
    redis: aioredis.Redis, session: aiohttp.ClientSession, kimi_sim: SimServer
) -> None:
    """A waiting job whose `stop` is set (its client left) raises within 0.2 s and its ticket is gone."""
    pool = one_slot_pool(redis, session, kimi_sim.url)
    await pool.add(kimi_sim.state.add_account("kimi_auth").token)
    held = await pool.lease()
    stop = asyncio.Event()
    waiting = asyncio.create_task(pool.lease(wait_s=30.0, ticket=ticket("gone", now_ms()), stop=stop))
    await asyncio.sleep(0.2)
    assert await redis.zrange("kimi:acct:{pool}:line:kimi_auth", 0, -1) == [b"gone"]
    stop.set()
    asked = time.monotonic()
    with pytest.raises(RateLimited, match="every Kimi account is busy"):
        await waiting
    assert time.monotonic() - asked < 0.2
    assert await redis.keys("kimi:acct:{pool}:line*") == []
    await pool.release(held, "ok")


async def _stream(session: aiohttp.ClientSession, stack: Stack, prompt: str) -> tuple[int, str, float]:
    """(HTTP status, the streamed text or the error, seconds until the first content or the error)."""
    body = {"model": "kimi-k2.5-instant", "stream": True, "messages": [{"role": "user", "content": prompt}]}
    sent = time.monotonic()
    waited = 0.0
    async with session.post(f"{stack.url}/v1/chat/completions", json=body) as resp:
        if resp.status != 200:
            return resp.status, await resp.text(), time.monotonic() - sent
        text = []
        async for line in resp.content:
            if line.startswith(b"data: {"):
                data = json.loads(line[6:])
                if "error" in data:  # in-band, after the 200
                    return 200, data["error"]["message"], time.monotonic() - sent
                waited = waited or time.monotonic() - sent
                choices = data.get("choices") or [{}]
                text.append(choices[0].get("delta", {}).get("content") or "")
        return 200, "".join(text), waited


@pytest.mark.slow
@pytest.mark.timeout(120)
async def test_a_saturated_pool_serves_every_client_in_turn(stack_factory: StackFactory) -> None:
    """40 clients on 8 one-stream accounts served by two worker processes, answers of about 1 s, 3 rounds: all
    120 get 200 and their text, none waits over 7 s for its first content (FCFS: about 4 answers ahead of each)."""
    stack = await stack_factory(
        worker_processes=2, worker_env={"WORKER_CONCURRENCY": str(CLIENTS), "LOG_LEVEL": "WARNING"}
    )
    await stack.configure_sim(chunk_delay_s=0.25)
    for _ in range(ACCOUNTS):
        await stack.add()
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(
        connector=connector, timeout=aiohttp.ClientTimeout(total=100)
    ) as session:

        async def client(n: int) -> list[tuple[int, str, float]]:
            return [await _stream(session, stack, f"client {n} round {r}") for r in range(ROUNDS)]

        results = await asyncio.gather(*(client(n) for n in range(CLIENTS)))
    flat = [answer for answers in results for answer in answers]
    expected = [answer_for(f"client {n} round {r}") for n in range(CLIENTS) for r in range(ROUNDS)]
    failures = [body for (_, body, _), text in zip(flat, expected, strict=True) if body != text]
    waits = sorted(waited for _, _, waited in flat)
    print(
        f"failures {len(failures)} of {len(flat)}; first content p50 {waits[len(waits) // 2]:.2f} s, "
        f"p95 {waits[int(len(waits) * 0.95)]:.2f} s, max {waits[-1]:.2f} s"
    )
    assert failures == []
    assert [status for status, _, _ in flat] == [200] * len(flat)
    assert waits[-1] < 7.0


@pytest.mark.timeout(60)
async def test_a_wait_past_queue_wait_s_is_an_http_429_with_retry_after(
    stack_factory: StackFactory, session: aiohttp.ClientSession
) -> None:
    """The only account held elsewhere, QUEUE_WAIT_S 1 s and keep-alives every 0.2 s: a streaming request gets
    HTTP 429 with Retry-After 1 after about 1 s of silence, not a 200 with an in-band error."""
    stack = await stack_factory(keepalive_interval_s=0.2, worker_overrides={"queue_wait_s": 1.0})
    await stack.add()
    pool = one_slot_pool(stack.redis, session, stack.sim.url)
    held = await pool.lease()
    body = {
        "model": "kimi-k2.5-instant",
        "stream": True,
        "messages": [{"role": "user", "content": "no room"}],
    }
    sent = time.monotonic()
    async with session.post(f"{stack.url}/v1/chat/completions", json=body) as resp:
        waited = time.monotonic() - sent
        status, retry_after, error = resp.status, resp.headers.get("Retry-After"), await resp.json()
    await pool.release(held, "ok")
    assert (status, retry_after) == (429, "1")
    assert error["error"]["message"] == "every Kimi account is busy"
    assert 1.0 <= waited < 3.0
