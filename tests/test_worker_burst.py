"""The worker against a real Redis and the Kimi simulator, in burst mode (process what is queued, return)."""

from __future__ import annotations

from kimi_sim.answers import answer_for
from kimi_sim.server import SimServer
from shared import keys
from shared.schema import Done, Start, TextDelta, Usage
from shared.usage_estimate import estimate_prompt_tokens, estimate_tokens
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


async def test_burst_answers_every_queued_job_and_acks(redis, redis_url: str, kimi_sim: SimServer) -> None:
    """Burst mode answers each queued job (Start, TextDelta*, Usage, Done, the simulator's text), returns."""
    await add_accounts(redis, kimi_sim, 2)
    prompts = [f"question {i}" for i in range(5)]
    job_ids = [await enqueue(redis, chat_request(p)) for p in prompts]
    async with open_worker(worker_settings(redis_url, kimi_sim.url)) as worker:
        await worker.run(burst=True)
    for prompt, job_id in zip(prompts, job_ids, strict=True):
        events = await reply_events(redis, job_id)
        assert isinstance(events[0], Start)
        assert isinstance(events[-1], Done)
        assert text_of(events) == answer_for(prompt)
        usage = events[-2]
        assert usage == Usage(
            prompt_tokens=estimate_prompt_tokens([prompt]),
            completion_tokens=estimate_tokens(answer_for(prompt)),
            estimated=True,
        )
        assert all(isinstance(e, TextDelta) for e in events[1:-2])
        assert 0 < await redis.ttl(keys.reply_key(job_id)) <= keys.REPLY_TTL_S
    assert await pending_count(redis) == 0
