"""A burst of concurrent clients on a gateway with real Redis, a real worker process and the simulator."""

from __future__ import annotations

import asyncio
import json
from collections import Counter

import aiohttp
import pytest

from kimi_sim.answers import answer_for
from tests.stack import Stack, StackFactory, stack_factory

__all__ = ["stack_factory"]  # the fixture, imported for pytest

BURST = 1_000


async def _stream(session: aiohttp.ClientSession, stack: Stack, prompt: str) -> tuple[int, str]:
    """(HTTP status, the streamed text, or the error body)."""
    body = {"model": "kimi-k2.5-instant", "stream": True, "messages": [{"role": "user", "content": prompt}]}
    async with session.post(f"{stack.url}/v1/chat/completions", json=body) as resp:
        if resp.status != 200:
            return resp.status, await resp.text()
        text = []
        async for line in resp.content:
            if line.startswith(b"data: {"):
                choices = json.loads(line[6:]).get("choices") or [{}]
                text.append(choices[0].get("delta", {}).get("content") or "")
        return 200, "".join(text)


@pytest.mark.slow
@pytest.mark.timeout(150)
async def test_a_burst_of_a_thousand_streams_is_answered_in_full(stack_factory: StackFactory) -> None:
    """1,000 streaming requests sent at once all get 200 and their exact text: none fails for want of a Redis
    connection (the request path waits for one instead of answering 503)."""
    stack = await stack_factory(
        request_timeout_s=120.0,
        worker_processes=1,
        worker_env={"WORKER_CONCURRENCY": "64", "ACCOUNT_MAX_CONCURRENCY": "64", "LOG_LEVEL": "WARNING"},
    )
    await stack.configure_sim(max_streams_per_user=0)
    await stack.add()
    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=140)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        prompts = [f"burst {n}" for n in range(BURST)]
        answers = await asyncio.gather(*(_stream(session, stack, p) for p in prompts))
    statuses = Counter(status for status, _ in answers)
    assert statuses == {200: BURST}, [body for status, body in answers if status != 200][:3]
    assert [text for _, text in answers] == [answer_for(p) for p in prompts]
