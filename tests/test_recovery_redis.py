"""Redis loses its data, or restarts with it: the gateway and a real worker process serve again by themselves.

Each test has a Redis of its own (tests/redis_proc.py: persistent, killed with SIGKILL and restarted on the
same port), the simulator, a gateway in-process and one `python -m upstream_worker` process.
"""

from __future__ import annotations

import asyncio
import json
import time

import aiohttp
import pytest
import redis.asyncio as aioredis

from kimi_sim.answers import answer_for
from shared import keys
from tests.redis_proc import RedisProc, redis, redis_proc, redis_url
from tests.stack import Stack, StackFactory, stack_factory
from tests.test_worker_support import wait_until

__all__ = ["redis", "redis_proc", "redis_url", "stack_factory"]  # fixtures, imported for pytest

MODEL = "kimi-k2.5-instant"
#: A client gives up on an answer after this long: a request that would hang fails the test instead.
CLIENT_TIMEOUT_S = 10.0
#: Between the text a client had and the message of the in-band error that ended its stream.
ERROR = " <in-band error> "


async def _chat(stack: Stack, prompt: str) -> tuple[int, str]:
    """(status, streamed text) of one streaming chat; the error's message for a non-200 or in-band error."""
    body = {"model": MODEL, "stream": True, "messages": [{"role": "user", "content": prompt}]}
    timeout = aiohttp.ClientTimeout(total=CLIENT_TIMEOUT_S)
    async with (
        aiohttp.ClientSession(timeout=timeout) as session,
        session.post(f"{stack.url}/v1/chat/completions", json=body) as resp,
    ):
        if resp.status != 200:
            return resp.status, (await resp.json())["error"]["message"]
        return 200, await _text_or_error(resp)


async def _text_or_error(resp: aiohttp.ClientResponse) -> str:
    """The streamed text; when the stream ends with an in-band error, the text so far + `ERROR` + its message."""
    text = []
    async for line in resp.content:
        if not line.startswith(b"data: {"):
            continue
        chunk = json.loads(line[6:])
        if "error" in chunk:
            return "".join(text) + ERROR + chunk["error"]["message"]
        choices = chunk.get("choices") or [{}]
        text.append(choices[0].get("delta", {}).get("content") or "")
    return "".join(text)


async def _readyz(stack: Stack) -> tuple[int, dict[str, object]]:
    async with aiohttp.ClientSession() as session, session.get(f"{stack.url}/readyz") as resp:
        return resp.status, await resp.json()


async def _has_group(redis: aioredis.Redis) -> bool:
    if not await redis.exists(keys.JOBS_STREAM):
        return False
    return any(g["name"] == keys.JOBS_GROUP.encode() for g in await redis.xinfo_groups(keys.JOBS_STREAM))


@pytest.mark.timeout(60)
async def test_after_flushall_workers_recreate_their_group_and_serve_again(
    stack_factory: StackFactory, redis: aioredis.Redis
) -> None:
    """FLUSHALL under a running worker: /readyz is never green without a consumer group and is green again
    within seconds; a chat then gets the pool's own 503 "no usable Kimi account" at once (no timeout), and
    once an account is saved again it is answered in full, with no process restarted."""
    stack = await stack_factory(worker_processes=1, worker_env={"WORKER_HEARTBEAT_INTERVAL_S": "1"})
    await stack.add()
    assert await _chat(stack, "before") == (200, answer_for("before"))
    [worker] = stack.workers

    await redis.flushall()
    flushed = time.monotonic()
    while True:
        status, body = await _readyz(stack)
        if status == 200:
            assert await _has_group(redis), body
            break
        assert body["status"] == "no_worker", body
        assert time.monotonic() - flushed < 5.0, "no worker came back within 5 s"
        await asyncio.sleep(0.02)

    started = time.monotonic()
    status, message = await _chat(stack, "no account")
    assert (status, message) == (
        503,
        "no usable kimi_web or api_key account serves the model 'kimi-k2.5-instant': add one with "
        'POST /auth/save {"token": "<kimi-auth, refresh_token or sk-… API key>"}',
    )
    assert time.monotonic() - started < 2.0

    await stack.add()
    assert await _chat(stack, "after") == (200, answer_for("after"))
    assert worker.proc.process.poll() is None

    async def acked() -> bool:  # the ack (and delete) comes a moment after the client's Done
        return await redis.xlen(keys.JOBS_STREAM) == 0

    await wait_until(acked, timeout_s=2.0)


@pytest.mark.timeout(60)
async def test_after_a_redis_restart_in_flight_streams_end_in_band_and_new_ones_succeed(
    stack_factory: StackFactory, redis: aioredis.Redis, redis_proc: RedisProc
) -> None:
    """Redis SIGKILLed mid-stream and restarted on its port with its data: every in-flight stream ends with
    an in-band error within seconds, the worker stops those jobs and frees their accounts, and new requests
    are answered in full by the same gateway and worker."""
    stack = await stack_factory(
        worker_processes=1, worker_env={"WORKER_CONCURRENCY": "8", "WORKER_CLAIM_IDLE_MS": "1000"}
    )
    await stack.configure_sim(chunk_count=100, chunk_delay_s=0.05)  # each answer streams for 5 s
    for _ in range(3):
        await stack.add()
    chats = [asyncio.create_task(_chat(stack, f"in flight {n}")) for n in range(3)]

    async def streaming() -> bool:
        return sum(s["status"] == "running" for s in (await stack.sim_state())["streams"]) == 3

    deadline = time.monotonic() + 5.0
    while not await streaming():
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.3)  # some content has reached every client

    redis_proc.kill()
    killed = time.monotonic()
    await asyncio.sleep(1.0)
    redis_proc.start()

    ends = await asyncio.gather(*chats)
    assert time.monotonic() - killed < 3.0
    for n, (status, streamed) in enumerate(ends):
        text, error = streamed.split(ERROR)
        assert status == 200 and error == "Redis is unreachable; try again shortly."
        assert text and answer_for(f"in flight {n}").startswith(text)

    async def settled() -> bool:  # the stopped jobs released their accounts and were acked
        return await redis.zcard(keys.ACCOUNT_LEASES) == 0 and await redis.xlen(keys.JOBS_STREAM) == 0

    await wait_until(settled, timeout_s=3.0)
    await stack.configure_sim(chunk_count=4, chunk_delay_s=0.0)
    answers = await asyncio.gather(*(_chat(stack, f"after {n}") for n in range(3)))
    assert answers == [(200, answer_for(f"after {n}")) for n in range(3)]
    assert stack.workers[0].proc.process.poll() is None
