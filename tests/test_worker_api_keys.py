"""The official API lane in a real worker: an API key of the pool, the registry's `moonshot` driver, the
simulator's official API; the reply carries the API's own usage and native tool calls."""

from __future__ import annotations

from typing import Any

import aiohttp
import msgspec
import redis.asyncio as aioredis

from kimi_sim.answers import answer_for, reasoning_for
from kimi_sim.server import SimServer
from shared.attachments import AttachmentStore, digest
from shared.schema import (
    AttachmentPart,
    Done,
    Message,
    ReasoningDelta,
    Start,
    TextPart,
    ToolCall,
    ToolCallEvent,
    ToolSpec,
    Usage,
)
from shared.settings import PoolSettings
from tests.test_worker_support import chat_request, enqueue, reply_events, text_of, worker_settings
from token_service.accounts import Accounts
from upstream_worker.drivers import DRIVERS, PROMPTED_TOOLS, KeyLane, open_drivers
from upstream_worker.resources import open_worker

WEATHER = ToolSpec(
    name="get_weather",
    description="The weather of a city",
    parameters='{"type":"object","properties":{"city":{"type":"string"}},"required":["city"]}',
)


async def add_key(redis: aioredis.Redis, sim: SimServer, region: str = "global", **mint: Any) -> str:
    """Mint a simulator key and save it in the pool as `key@<sim>/<region prefix>`; its account id."""
    minted = sim.state.official.mint(region, **mint)  # type: ignore[arg-type]
    prefix = "moonshot" if region == "global" else "moonshot-cn"
    async with aiohttp.ClientSession() as session:
        accounts = Accounts(redis, PoolSettings(), session, sim.url)
        account, _ = await accounts.add(f"{minted.key}@{sim.url}/{prefix}")
    return account.id


async def run_worker(redis_url: str, sim: SimServer, **overrides: Any) -> None:
    async with open_worker(worker_settings(redis_url, sim.url, **overrides)) as worker:
        await worker.run(burst=True)


async def test_the_registry_serves_moonshot_with_native_tools(
    redis: aioredis.Redis, kimi_sim: SimServer
) -> None:
    """`moonshot` is a registry entry (KeyLane) whose tools are not emulated in the prompt; the web lanes' are."""
    async with aiohttp.ClientSession() as session:
        drivers = open_drivers(session, worker_settings("redis://unused", kimi_sim.url), redis)
    assert set(drivers) == set(DRIVERS) == {"rest", "connect", "moonshot"}
    assert isinstance(drivers["moonshot"], KeyLane)
    assert {"rest", "connect"} == PROMPTED_TOOLS


async def test_a_key_answers_with_the_apis_exact_usage(redis, redis_url: str, kimi_sim: SimServer) -> None:
    """A key-only pool answers kimi-k3 with its reasoning and text, and the Usage is the API's (not estimated)."""
    account_id = await add_key(redis, kimi_sim)
    prompt = "How far is the moon?"
    job_id = await enqueue(redis, chat_request(prompt, model="kimi-k3"))
    await run_worker(redis_url, kimi_sim)
    events = await reply_events(redis, job_id)
    reasoning = reasoning_for(prompt)
    assert isinstance(events[0], Start) and events[0].account_id == account_id
    assert "".join(e.text for e in events if isinstance(e, ReasoningDelta)) == reasoning
    assert text_of(events) == answer_for(prompt)
    assert events[-2:] == [
        Usage(
            prompt_tokens=len(prompt),
            completion_tokens=len(reasoning) + len(answer_for(prompt)),
            estimated=False,
        ),
        Done(finish_reason="stop"),
    ]
    sent = (await official_calls(kimi_sim))[0]["body"]
    assert (sent["model"], sent["reasoning_effort"], sent["stream"]) == ("kimi-k3", "high", True)


async def test_a_key_makes_a_native_tool_call(redis, redis_url: str, kimi_sim: SimServer) -> None:
    """Tools reach the API as `tools` (no prompt emulation) and its call comes back as one ToolCallEvent."""
    await add_key(redis, kimi_sim)
    prompt = 'call get_weather {"city": "Paris"}'
    request = msgspec.structs.replace(chat_request(prompt, model="kimi-k3"), tools=[WEATHER], stream=False)
    job_id = await enqueue(redis, request)
    await run_worker(redis_url, kimi_sim)
    events = await reply_events(redis, job_id)
    call = ToolCall(id="get_weather:0", name="get_weather", arguments='{"city":"Paris"}')
    assert [e for e in events if isinstance(e, ToolCallEvent)] == [ToolCallEvent(index=0, call=call)]
    completion = len(reasoning_for(prompt)) + len("get_weather") + len('{"city":"Paris"}')
    assert events[-2:] == [
        Usage(prompt_tokens=len(prompt), completion_tokens=completion, estimated=False),
        Done(finish_reason="tool_calls"),
    ]
    sent = (await official_calls(kimi_sim))[0]["body"]
    assert [t["function"]["name"] for t in sent["tools"]] == ["get_weather"]
    assert sent["messages"] == [{"role": "user", "content": prompt}]


async def test_a_key_sends_the_jobs_image_bytes(redis, redis_url: str, kimi_sim: SimServer) -> None:
    """An image attachment reaches a vision model as the bytes the gateway stored for the job."""
    await add_key(redis, kimi_sim)
    image = b"\x89PNG\r\n\x1a\n" + b"\0" * 56
    part = AttachmentPart(
        sha256=digest(image), mime="image/png", name="a.png", size=len(image), kind="image", source="inline"
    )
    request = msgspec.structs.replace(
        chat_request("", model="kimi-k2.6"),
        messages=[Message(role="user", content=[TextPart(text="What is it?"), part])],
    )
    await AttachmentStore(redis).put(request.request_id, {part.sha256: image})
    job_id = await enqueue(redis, request)
    await run_worker(redis_url, kimi_sim)
    events = await reply_events(redis, job_id)
    assert text_of(events).startswith(f"[image 1: {len(image)} bytes, sha256:{part.sha256[:16]}] ")


async def official_calls(sim: SimServer) -> list[dict[str, Any]]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{sim.url}/__sim/requests", params={"path": "/moonshot/v1/chat"}) as resp,
    ):
        calls: list[dict[str, Any]] = await resp.json()
    return calls
