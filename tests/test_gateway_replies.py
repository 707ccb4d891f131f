"""The gateway's shared reply reader (gateway/replies.py) on a real Redis: one XREAD BLOCK for every stream."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
import pytest_asyncio
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError

from gateway.replies import ReplyReader

ReaderFactory = Callable[..., Awaitable[ReplyReader]]
#: Far longer than any wait below: a test that passes did not wait for a BLOCK to time out.
LONG_BLOCK_MS = 20_000


@pytest_asyncio.fixture
async def reader(redis_url: str, redis: aioredis.Redis) -> AsyncIterator[ReaderFactory]:
    """`await reader(url=…)` → a running ReplyReader; stopped and closed after the test."""
    running: list[tuple[ReplyReader, aioredis.Redis]] = []

    async def factory(url: str = redis_url, block_ms: int = LONG_BLOCK_MS) -> ReplyReader:
        blocking = aioredis.Redis.from_url(
            url, single_connection_client=True, socket_timeout=block_ms / 1000 + 1, socket_connect_timeout=0.5
        )
        instance = ReplyReader(blocking, redis, block_ms)
        instance.start()
        running.append((instance, blocking))
        return instance

    yield factory
    for instance, blocking in running:
        await instance.aclose()
        await blocking.aclose()


async def blocked_readers(redis: aioredis.Redis) -> int:
    """How many clients Redis holds in a BLOCK right now."""
    return sum("b" in client["flags"] for client in await redis.client_list())


async def until(condition: Callable[[], Awaitable[bool]], timeout_s: float = 2.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not await condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


async def test_each_subscription_gets_its_own_entries_in_order(
    reader: ReaderFactory, redis: aioredis.Redis
) -> None:
    """Two streams read by one XREAD: each subscription receives exactly its stream's entries, in order."""
    replies = await reader()
    first, second = replies.subscribe("r:1"), replies.subscribe("r:2")
    ids = [await redis.xadd("r:1", {"e": b"a"}), await redis.xadd("r:2", {"e": b"x"})]
    ids.append(await redis.xadd("r:1", {"e": b"b"}))
    got_first: list[tuple[bytes, dict[bytes, bytes]]] = []
    while len(got_first) < 2:
        got_first += await first.get(1.0)
    assert got_first == [(ids[0], {b"e": b"a"}), (ids[2], {b"e": b"b"})]
    assert await second.get(1.0) == [(ids[1], {b"e": b"x"})]


async def test_get_times_out_empty(reader: ReaderFactory) -> None:
    """A silent stream: get returns [] once its timeout passes, not the reader's BLOCK time."""
    replies = await reader()
    subscription = replies.subscribe("r:silent")
    started = time.monotonic()
    assert await subscription.get(0.1) == []
    assert 0.09 <= time.monotonic() - started < 1.0


async def test_a_stream_subscribed_during_a_block_is_read_at_once(
    reader: ReaderFactory, redis: aioredis.Redis
) -> None:
    """A key subscribed while the reader blocks on others is read within the grace, not after the BLOCK."""
    replies = await reader()
    replies.subscribe("r:idle")
    await until(lambda: _is_blocked(redis))
    late = replies.subscribe("r:late")
    entry_id = await redis.xadd("r:late", {"e": b"hi"})
    started = time.monotonic()
    assert await late.get(5.0) == [(entry_id, {b"e": b"hi"})]
    assert time.monotonic() - started < 1.0


async def test_a_reconnected_reader_is_still_released_for_a_new_stream(
    reader: ReaderFactory, redis: aioredis.Redis
) -> None:
    """The reader's connection is killed mid-BLOCK: it reconnects, and a late key is still read at once."""
    replies = await reader()
    replies.subscribe("r:idle")
    await until(lambda: _is_blocked(redis))
    (blocked,) = [c["id"] for c in await redis.client_list() if "b" in c["flags"]]
    await redis.client_kill_filter(_id=blocked)
    await until(lambda: _blocked_other_than(redis, blocked))
    late = replies.subscribe("r:late")
    entry_id = await redis.xadd("r:late", {"e": b"hi"})
    started = time.monotonic()
    assert await late.get(5.0) == [(entry_id, {b"e": b"hi"})]
    assert time.monotonic() - started < 1.0


async def test_the_last_unsubscribe_releases_the_block(reader: ReaderFactory, redis: aioredis.Redis) -> None:
    """With no stream left to read, the reader's BLOCK is released and it waits without a command."""
    replies = await reader()
    subscription = replies.subscribe("r:gone")
    await until(lambda: _is_blocked(redis))
    replies.unsubscribe(subscription)
    await until(lambda: _not_blocked(redis), timeout_s=1.0)


async def test_a_failed_read_fails_its_subscriptions(reader: ReaderFactory) -> None:
    """Redis unreachable: a waiting subscription raises the connection error instead of waiting it out."""
    replies = await reader(url="redis://127.0.0.1:1/0")
    subscription = replies.subscribe("r:down")
    with pytest.raises(RedisConnectionError):
        await subscription.get(5.0)


async def _is_blocked(redis: aioredis.Redis) -> bool:
    return await blocked_readers(redis) == 1


async def _blocked_other_than(redis: aioredis.Redis, client_id: str) -> bool:
    return [c["id"] for c in await redis.client_list() if "b" in c["flags"]] not in ([], [client_id])


async def _not_blocked(redis: aioredis.Redis) -> bool:
    return await blocked_readers(redis) == 0


async def test_a_reader_whose_redis_is_down_does_not_spin(redis) -> None:
    """Redis unreachable while a subscription stays open (its relay busy writing to a slow client): the
    reader tries again after FAILED_READ_PAUSE_S, so half a second of it costs next to no CPU."""
    blocking = aioredis.Redis.from_url("redis://127.0.0.1:1/0", single_connection_client=True)
    replies = ReplyReader(blocking, redis, LONG_BLOCK_MS)
    replies.start()
    cpu_s = time.process_time()
    try:
        replies.subscribe("r:down")
        await asyncio.sleep(0.5)
        cpu_s = time.process_time() - cpu_s
    finally:
        await replies.aclose()
        await blocking.aclose()
    assert cpu_s < 0.1
