"""The worker's Redis batcher: many tasks' commands share pipelines, and errors stay with their caller."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from shared import keys
from shared.schema import TextDelta
from tests.test_worker_support import reply_events
from upstream_worker.batcher import RedisBatcher
from upstream_worker.publisher import ReplyPublisher


async def test_concurrent_calls_share_pipelines_and_keep_their_replies(redis: aioredis.Redis) -> None:
    """50 concurrent INCRs each get their own reply, in order, through the one batcher."""
    batcher = RedisBatcher(redis)
    replies = await asyncio.gather(*(batcher.run(lambda pipe: pipe.incr("n"), 1) for _ in range(50)))
    assert [r[0] for r in replies] == list(range(1, 51))


async def test_a_failing_command_fails_only_its_caller(redis: aioredis.Redis) -> None:
    """A Redis error reply raises in the call that sent it; the other calls of the batch succeed."""
    await redis.set("text", "x")
    batcher = RedisBatcher(redis)
    good, bad = await asyncio.gather(
        batcher.run(lambda pipe: pipe.incr("n"), 1),
        batcher.run(lambda pipe: pipe.incr("text"), 1),
        return_exceptions=True,
    )
    assert good == [1]
    assert isinstance(bad, ResponseError)


async def test_publishers_on_a_batcher_keep_each_stream_in_order(redis: aioredis.Redis) -> None:
    """Ten publishers sharing a batcher each get all their events, in order, on their own stream."""
    batcher = RedisBatcher(redis)
    publishers = [ReplyPublisher(redis, keys.reply_key(f"b{i}"), batcher=batcher) for i in range(10)]
    for n in range(20):
        for publisher in publishers:
            publisher.publish(TextDelta(text=str(n)))
        await asyncio.sleep(0)
    await asyncio.gather(*(p.aclose() for p in publishers))
    for i, publisher in enumerate(publishers):
        assert not publisher.failed
        assert await reply_events(redis, f"b{i}") == [TextDelta(text=str(n)) for n in range(20)]
        assert 0 < await redis.ttl(keys.reply_key(f"b{i}")) <= keys.REPLY_TTL_S


@pytest.mark.parametrize("count", [1, 2])
async def test_call_replies_have_the_requested_length(redis: aioredis.Redis, count: int) -> None:
    """A call that adds `count` commands gets exactly `count` replies."""
    batcher = RedisBatcher(redis)

    def fill(pipe: object) -> None:
        for _ in range(count):
            pipe.incr("m")  # type: ignore[attr-defined]

    assert await batcher.run(fill, count) == list(range(1, count + 1))
