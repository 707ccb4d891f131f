"""Keep-alives while a job waits for Kimi's first event, so the gateway's idle timer measures real silence."""

from __future__ import annotations

from openai import AsyncOpenAI

from kimi_sim.answers import answer_for
from kimi_sim.server import SimServer
from shared import keys
from shared.schema import Done, Keepalive, Start, TextDelta, encode_events
from tests.stack import StackFactory, stack_factory
from tests.test_worker_support import (
    add_accounts,
    chat_request,
    enqueue,
    pending_count,
    reply_events,
    text_of,
    worker_settings,
)
from upstream_worker.resources import open_worker

__all__ = ["stack_factory"]  # the fixture, imported for pytest

CHAT_PATH = "/apiv2/kimi.gateway.chat.v1.ChatService/Chat"


async def test_keepalives_flow_while_kimi_stalls_before_its_first_byte(
    redis, redis_url: str, kimi_sim: SimServer
) -> None:
    """A 1 s first-byte stall yields a Keepalive every 0.2 s before Start, then the whole answer, no more pings."""
    await add_accounts(redis, kimi_sim, 1)
    kimi_sim.state.faults.arm("stall_first_byte", count=1, path=CHAT_PATH, seconds=1.0)
    job_id = await enqueue(redis, chat_request("slow start"))
    settings = worker_settings(redis_url, kimi_sim.url, keepalive_interval_s=0.2)
    async with open_worker(settings) as worker:
        await worker.run(burst=True)
    events = await reply_events(redis, job_id)
    first_start = next(i for i, e in enumerate(events) if isinstance(e, Start))
    assert 3 <= first_start <= 5
    assert all(isinstance(e, Keepalive) for e in events[:first_start])
    first_text = next(i for i, e in enumerate(events) if isinstance(e, TextDelta))
    assert not any(isinstance(e, Keepalive) for e in events[first_text:])
    assert isinstance(events[-1], Done) and text_of(events) == answer_for("slow start")


async def test_reclaimed_job_with_only_keepalives_runs_again(
    redis, redis_url: str, kimi_sim: SimServer
) -> None:
    """A dead consumer's reply stream with only Keepalive / Start (no content yet) is answered again in full."""
    await add_accounts(redis, kimi_sim, 1)
    job_id = await enqueue(redis, chat_request("try again"))
    await redis.xadd(keys.reply_key(job_id), {"e": encode_events([Keepalive()])})
    await redis.xadd(keys.reply_key(job_id), {"e": encode_events([Start(account_id="gone"), Keepalive()])})
    reply = await redis.xreadgroup(keys.JOBS_GROUP, "ghost", {keys.JOBS_STREAM: ">"})
    assert reply
    settings = worker_settings(redis_url, kimi_sim.url, claim_idle_ms=0)
    async with open_worker(settings) as worker:
        await worker.run(burst=True)
    events = await reply_events(redis, job_id)
    assert isinstance(events[-1], Done) and text_of(events) == answer_for("try again")
    assert await pending_count(redis) == 0


async def test_gateway_idle_timeout_waits_out_a_first_byte_stall(stack_factory: StackFactory) -> None:
    """Gateway idle timeout 1 s, Kimi silent 2.5 s before its first byte: worker keep-alives keep the request."""
    stack = await stack_factory(
        idle_timeout_s=1.0, keepalive_interval_s=0.3, worker_overrides={"keepalive_interval_s": 0.2}
    )
    await stack.add()
    await stack.arm("stall_first_byte", count=1, path=CHAT_PATH, seconds=2.5)
    client = AsyncOpenAI(base_url=f"{stack.url}/v1", api_key="unused", max_retries=0)
    try:
        stream = await client.chat.completions.create(
            model="kimi-k2.5-instant", messages=[{"role": "user", "content": "patience"}], stream=True
        )
        parts = [chunk.choices[0].delta.content or "" async for chunk in stream if chunk.choices]
    finally:
        await client.close()
    assert "".join(parts) == answer_for("patience")
