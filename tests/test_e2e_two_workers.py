"""The official `openai` SDK against a gateway and two real worker processes (real Redis, the simulator)."""

from __future__ import annotations

import asyncio

from openai import AsyncOpenAI

from kimi_sim.answers import answer_for
from shared import keys
from tests.stack import Stack, StackFactory, WorkerProc, stack_factory
from tests.test_worker_support import wait_until

__all__ = ["stack_factory"]  # the fixture, imported for pytest

CHAT_PATH = "/apiv2/kimi.gateway.chat.v1.ChatService/Chat"
#: A refresh_token account answers `kimi` through REST; a kimi-auth account always speaks Connect.
LANES = [("refresh_token", "kimi", "rest"), ("kimi_auth", "kimi-k2.5-instant", "connect")]
PER_LANE = 3


async def _stream_text(stack: Stack, api_key: str, model: str, prompt: str) -> str:
    client = AsyncOpenAI(base_url=f"{stack.url}/v1", api_key=api_key, max_retries=0)
    try:
        stream = await client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": prompt}], stream=True
        )
        return "".join([chunk.choices[0].delta.content or "" async for chunk in stream if chunk.choices])
    finally:
        await client.close()


def _jobs(worker: WorkerProc) -> list[str]:
    """The outcomes of the jobs a worker process finished, from its canonical `job` log lines."""
    return [str(line["outcome"]) for line in worker.logged("job")]


async def test_concurrent_rest_and_connect_chats_are_shared_by_both_workers(
    stack_factory: StackFactory,
) -> None:
    """Six concurrent streams (REST and Connect pass-through tokens) get their exact text from both workers."""
    stack = await stack_factory(worker_processes=2, worker_env={"WORKER_CONCURRENCY": "2"})
    await stack.configure_sim(chunk_delay_s=0.05)  # each answer takes 0.2 s: the jobs overlap
    chats = [
        (stack.sim.state.add_account(kind).token, model, f"{protocol} chat {n}")
        for kind, model, protocol in LANES
        for n in range(PER_LANE)
    ]
    texts = await asyncio.gather(*(_stream_text(stack, *chat) for chat in chats))
    assert texts == [answer_for(prompt) for _token, _model, prompt in chats]

    streams = (await stack.sim_state())["streams"]
    assert sorted((s["protocol"], s["status"]) for s in streams) == sorted(
        [(protocol, "completed") for _kind, _model, protocol in LANES] * PER_LANE
    )

    async def all_logged() -> bool:
        return sum(len(_jobs(w)) for w in stack.workers) == len(chats)

    await wait_until(all_logged, timeout_s=5.0)
    # Two jobs at a time per worker and six overlapping jobs: neither worker can have served them all.
    assert all(_jobs(w) and set(_jobs(w)) == {"ok"} for w in stack.workers)


async def test_job_of_a_killed_worker_is_finished_by_the_other(stack_factory: StackFactory) -> None:
    """SIGKILL of the worker whose job waits on Kimi's first byte: the other reclaims it, the client gets it all."""
    stack = await stack_factory(worker_processes=2, worker_env={"WORKER_CLAIM_IDLE_MS": "500"})
    await stack.add()
    await stack.add()  # the dead worker's lease holds the first account until it expires
    await stack.arm("stall_first_byte", count=1, path=CHAT_PATH, seconds=3.0)
    answer = asyncio.create_task(_stream_text(stack, "unused", "kimi-k2.5-instant", "survive"))

    async def stalled_on_kimi() -> bool:
        return bool(await stack.sim_requests(CHAT_PATH)) and bool(await _owner(stack))

    await wait_until(stalled_on_kimi, timeout_s=5.0)
    owner = await _owner(stack)
    [doomed] = [w for w in stack.workers if w.name == owner]
    [survivor] = [w for w in stack.workers if w.name != owner]
    doomed.kill()

    assert await asyncio.wait_for(answer, 15.0) == answer_for("survive")
    assert _jobs(doomed) == []

    async def survivor_logged() -> bool:
        return _jobs(survivor) == ["ok"]

    await wait_until(survivor_logged, timeout_s=5.0)
    assert len(await stack.sim_requests(CHAT_PATH)) == 2

    async def acked() -> bool:  # the ack comes right after the job's log line
        return int((await stack.redis.xpending(keys.JOBS_STREAM, keys.JOBS_GROUP))["pending"]) == 0

    await wait_until(acked, timeout_s=2.0)


async def _owner(stack: Stack) -> str | None:
    """The consumer holding the one pending job, if any."""
    pending = await stack.redis.xpending_range(keys.JOBS_STREAM, keys.JOBS_GROUP, "-", "+", 10)
    if len(pending) != 1:
        return None
    consumer = pending[0]["consumer"]
    return consumer.decode() if isinstance(consumer, bytes) else str(consumer)
