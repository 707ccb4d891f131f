"""The job stream mechanics: reclaim from dead consumers, dead letters, reply coalescing, queue gauges."""

from __future__ import annotations

import asyncio

from kimi_sim.answers import answer_for
from kimi_sim.server import SimServer
from shared import keys
from shared.schema import Done, ErrorEvent, Keepalive, Start, TextDelta, encode_events
from tests.test_worker_support import (
    add_accounts,
    chat_request,
    enqueue,
    ensure_group,
    pending_count,
    reply_events,
    run_burst,
    text_of,
)
from upstream_worker import metrics
from upstream_worker.publisher import ReplyPublisher

CHAT_PATH = "/apiv2/kimi.gateway.chat.v1.ChatService/Chat"
CLAIM_IDLE_MS = 100


async def _deliver_to_dead_consumers(redis, deliveries: int) -> None:
    """Deliver every queued entry `deliveries` times to consumers that then die, and let it go idle."""
    reply = await redis.xreadgroup(keys.JOBS_GROUP, "ghost-1", {keys.JOBS_STREAM: ">"})
    ids = [entry_id for _stream, entries in reply for entry_id, _fields in entries]
    for n in range(2, deliveries + 1):
        await redis.xclaim(keys.JOBS_STREAM, keys.JOBS_GROUP, f"ghost-{n}", 0, ids)
    await asyncio.sleep(CLAIM_IDLE_MS / 1000 + 0.05)


async def _burst(redis_url: str, sim: SimServer) -> None:
    await run_burst(redis_url, sim.url, claim_idle_ms=CLAIM_IDLE_MS)


def _jobs(outcome: str) -> float:
    """kimi_worker_jobs_total{outcome} so far in this process."""
    return float(metrics.JOBS.labels(outcome)._value.get())


def _chat_calls(sim: SimServer) -> int:
    return len([r for r in sim.state.requests if r.path == CHAT_PATH])


async def test_reclaimed_job_with_empty_reply_runs_again(redis, redis_url: str, kimi_sim: SimServer) -> None:
    """A job whose consumer died before publishing anything is claimed and answered in full."""
    await add_accounts(redis, kimi_sim, 1)
    job_id = await enqueue(redis, chat_request("orphan"))
    await _deliver_to_dead_consumers(redis, 1)
    before = metrics.RECLAIMED._value.get()
    await _burst(redis_url, kimi_sim)
    events = await reply_events(redis, job_id)
    assert isinstance(events[-1], Done) and text_of(events) == answer_for("orphan")
    assert metrics.RECLAIMED._value.get() == before + 1
    assert await pending_count(redis) == 0


async def test_reclaimed_job_with_events_ends_with_an_error(
    redis, redis_url: str, kimi_sim: SimServer
) -> None:
    """A job whose dead consumer had published events ends with an ErrorEvent (abandoned), not run again."""
    await add_accounts(redis, kimi_sim, 1)
    job_id = await enqueue(redis, chat_request("half done"))
    await redis.xadd(keys.reply_key(job_id), {"e": encode_events([Start(), TextDelta(text="你好")])})
    await _deliver_to_dead_consumers(redis, 1)
    before = _jobs("abandoned")
    await _burst(redis_url, kimi_sim)
    assert _jobs("abandoned") == before + 1
    events = await reply_events(redis, job_id)
    assert events[:2] == [Start(), TextDelta(text="你好")]
    assert len(events) == 3 and isinstance(events[2], ErrorEvent)
    assert events[2].kind == "unavailable" and events[2].retryable
    assert _chat_calls(kimi_sim) == 0
    assert 0 < await redis.ttl(keys.reply_key(job_id)) <= keys.REPLY_TTL_S
    assert await pending_count(redis) == 0


async def test_reclaimed_job_that_had_ended_is_only_acked(redis, redis_url: str, kimi_sim: SimServer) -> None:
    """A job whose dead consumer published Done but did not ack is acked as ok, its reply left untouched."""
    job_id = await enqueue(redis, chat_request("finished"))
    await redis.xadd(keys.reply_key(job_id), {"e": encode_events([Start(), TextDelta(text="x"), Done()])})
    await _deliver_to_dead_consumers(redis, 1)
    before = _jobs("ok")
    await _burst(redis_url, kimi_sim)
    assert _jobs("ok") == before + 1
    assert await reply_events(redis, job_id) == [Start(), TextDelta(text="x"), Done()]
    assert await pending_count(redis) == 0


async def test_fourth_delivery_after_three_dead_ones_goes_to_the_dead_letter_stream(
    redis, redis_url: str, kimi_sim: SimServer
) -> None:
    """After 3 deliveries that all died, the 4th moves the job to the dead-letter stream, ending its reply."""
    await add_accounts(redis, kimi_sim, 1)
    job_id = await enqueue(redis, chat_request("poison"))
    await _deliver_to_dead_consumers(redis, 3)
    before = _jobs("dead_letter")
    await _burst(redis_url, kimi_sim)
    assert _jobs("dead_letter") == before + 1
    events = await reply_events(redis, job_id)
    assert len(events) == 1 and isinstance(events[0], ErrorEvent) and events[0].kind == "internal"
    dead = await redis.xrange(keys.DEAD_LETTER_STREAM)
    assert len(dead) == 1
    fields = dead[0][1]
    assert fields[b"reason"] == b"max_deliveries" and fields[b"deliveries"] == b"4"
    assert fields[b"job"]  # the original payload, for a human to inspect or re-queue
    assert _chat_calls(kimi_sim) == 0
    assert await pending_count(redis) == 0


async def test_job_delivered_twice_still_runs(redis, redis_url: str, kimi_sim: SimServer) -> None:
    """Two dead deliveries are under the limit: the third delivery answers the job."""
    await add_accounts(redis, kimi_sim, 1)
    job_id = await enqueue(redis, chat_request("second chance"))
    await _deliver_to_dead_consumers(redis, 2)
    await _burst(redis_url, kimi_sim)
    events = await reply_events(redis, job_id)
    assert isinstance(events[-1], Done) and text_of(events) == answer_for("second chance")
    assert await redis.xlen(keys.DEAD_LETTER_STREAM) == 0


async def test_undecodable_job_is_dead_lettered_at_once(redis, redis_url: str, kimi_sim: SimServer) -> None:
    """An entry that is not a msgpack Job can never succeed: it is dead-lettered on its first read."""
    await ensure_group(redis)
    await redis.xadd(keys.JOBS_STREAM, {"job": b"\xc1 not msgpack"})
    await _burst(redis_url, kimi_sim)
    dead = await redis.xrange(keys.DEAD_LETTER_STREAM)
    assert [(f[b"reason"], f[b"job"]) for _i, f in dead] == [(b"undecodable", b"\xc1 not msgpack")]
    assert await pending_count(redis) == 0


async def test_publisher_coalesces_ready_events_and_sets_the_ttl(redis) -> None:
    """Events published in one tick share one stream entry; the reply stream gets REPLY_TTL_S."""
    publisher = ReplyPublisher(redis, keys.reply_key("j1"))
    publisher.publish(Start())
    for i in range(50):
        publisher.publish(TextDelta(text=str(i)))
    publisher.publish(Done())
    await publisher.aclose()
    entries = await redis.xrange(keys.reply_key("j1"))
    assert len(entries) == 1
    assert len(await reply_events(redis, "j1")) == 52
    assert 0 < await redis.ttl(keys.reply_key("j1")) <= keys.REPLY_TTL_S


async def test_publisher_sends_the_first_event_without_waiting(redis) -> None:
    """The first event is on the stream before the publisher is closed: no timer holds it back."""
    publisher = ReplyPublisher(redis, keys.reply_key("j2"))
    publisher.publish(Keepalive())
    for _ in range(100):
        if await redis.xlen(keys.reply_key("j2")):
            break
        await asyncio.sleep(0.001)
    assert await reply_events(redis, "j2") == [Keepalive()]
    publisher.publish(Done())
    await publisher.aclose()
    assert await reply_events(redis, "j2") == [Keepalive(), Done()]


async def test_queue_gauges_from_xinfo(redis) -> None:
    """Length, pending, lag (entries after last-delivered-id on Redis < 7) and dead letters are sampled."""
    await ensure_group(redis)
    for n in range(4):
        await redis.xadd(keys.JOBS_STREAM, {"job": str(n)})
    await redis.xreadgroup(keys.JOBS_GROUP, "c1", {keys.JOBS_STREAM: ">"}, count=1)
    await redis.xadd(keys.DEAD_LETTER_STREAM, {"reason": "x"})
    await metrics.sample_queue(redis)
    assert metrics.QUEUE_LENGTH._value.get() == 4
    assert metrics.QUEUE_PENDING._value.get() == 1
    assert metrics.QUEUE_LAG._value.get() == 3
    assert metrics.DEAD_LETTER_LENGTH._value.get() == 1
