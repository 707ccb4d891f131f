"""End to end through the official `openai` SDK: real Redis, the Kimi simulator, a TCP gateway, a worker."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import anthropic
import jwt
import openai
import pytest
import pytest_asyncio
import redis.asyncio as aioredis
from google import genai
from google.genai import types as genai_types
from prometheus_client import REGISTRY

from kimi_sim.answers import answer_for, reasoning_for, search_results_for
from shared.settings import GatewaySettings, PoolSettings
from tests.stack import Stack, StackFactory, stack_factory
from token_service.accounts import Accounts

__all__ = ["stack_factory"]

PROMPT = "hi there"


@pytest_asyncio.fixture
async def stack(stack_factory: StackFactory) -> Stack:
    return await stack_factory(keepalive_interval_s=0.2, idle_timeout_s=10.0, request_timeout_s=20.0)


@pytest_asyncio.fixture
async def client(stack: Stack) -> AsyncIterator[openai.AsyncOpenAI]:
    client = openai.AsyncOpenAI(base_url=f"{stack.url}/v1", api_key="sk-local", max_retries=0, timeout=15)
    yield client
    await client.close()


async def _stream_text(client: openai.AsyncOpenAI, model: str, **extra: Any) -> tuple[str, str, list[Any]]:
    stream = await client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": PROMPT}], stream=True, **extra
    )
    text, reasoning, chunks = "", "", []
    async for chunk in stream:
        chunks.append(chunk)
        if chunk.choices:
            delta = chunk.choices[0].delta
            text += delta.content or ""
            reasoning += getattr(delta, "reasoning_content", None) or ""
    return text, reasoning, chunks


@pytest.mark.parametrize(("kind", "model"), [("refresh_token", "kimi"), ("kimi_auth", "kimi-k2.5-instant")])
async def test_exact_text_stream_and_non_stream(
    stack: Stack, client: openai.AsyncOpenAI, kind: str, model: str
) -> None:
    """The simulator's exact answer arrives in both modes, on a REST and on a Connect account."""
    await stack.add(kind)
    text, _, chunks = await _stream_text(client, model, stream_options={"include_usage": True})
    assert text == answer_for(PROMPT)
    assert len({c.id for c in chunks}) == 1 and len({c.created for c in chunks}) == 1
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-2].choices[0].finish_reason == "stop"
    assert (
        chunks[-1].choices == [] and chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
    )
    completion = await client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": PROMPT}]
    )
    assert completion.choices[0].message.content == answer_for(PROMPT)
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None and completion.usage.prompt_tokens > 0


async def test_thinking_model_streams_reasoning(stack: Stack, client: openai.AsyncOpenAI) -> None:
    """A thinking model's reasoning arrives as reasoning_content, the answer as content."""
    await stack.add("kimi_auth")
    text, reasoning, _ = await _stream_text(client, "kimi-k2.5-thinking")
    assert (text, reasoning) == (answer_for(PROMPT), reasoning_for(PROMPT))


async def test_search_citations_and_silent(stack: Stack, client: openai.AsyncOpenAI) -> None:
    """A -search model shows citations in the text; a -silent one shows only the answer."""
    await stack.add("refresh_token")
    text, _, _ = await _stream_text(client, "kimi-search")
    for result in search_results_for(PROMPT):
        assert f"[{result['title']}]({result['url']})" in text
    assert text.endswith(answer_for(PROMPT))
    silent, _, _ = await _stream_text(client, "kimi-search-silent")
    assert silent == answer_for(PROMPT)


async def test_conversation_continuation_and_trace_cleanup(stack: Stack, client: openai.AsyncOpenAI) -> None:
    """conversation_id "none" keeps the chat and returns its id; the next turn continues it; others go."""
    await stack.add("refresh_token")
    first = await client.chat.completions.create(
        model="kimi", messages=[{"role": "user", "content": PROMPT}], extra_body={"conversation_id": "none"}
    )
    chat_id = first.id
    second = await client.chat.completions.create(
        model="kimi", messages=[{"role": "user", "content": "again"}], extra_body={"conversation_id": chat_id}
    )
    assert second.id == chat_id
    assert second.choices[0].message.content == answer_for("again")
    throwaway = await client.chat.completions.create(
        model="kimi", messages=[{"role": "user", "content": PROMPT}]
    )
    state = await stack.sim_state()
    assert chat_id in state["chats"] and chat_id not in state["deleted_chats"]
    assert throwaway.id.startswith("chatcmpl-")
    assert len(state["deleted_chats"]) == 1


async def test_failover_before_first_byte(stack: Stack, client: openai.AsyncOpenAI) -> None:
    """A 429 on the first account is retried on the second: two Chat calls on two users, the first account
    cooling, one failover counted, and the client sees a clean answer."""
    ids = [await stack.add("kimi_auth"), await stack.add("kimi_auth")]
    await stack.arm("http_429", count=1, retry_after=30)
    failovers = REGISTRY.get_sample_value("kimi_worker_failovers_total") or 0.0
    text, _, _ = await _stream_text(client, "kimi-k2.5-instant")
    assert text == answer_for(PROMPT)
    calls = await stack.sim_requests("ChatService/Chat")
    users = [_bearer_user(call["headers"]) for call in calls]
    assert len(users) == 2 and users[0] != users[1]
    async with aiohttp.ClientSession() as session:
        pool = Accounts(stack.redis, PoolSettings(), session, stack.sim.url)
        states = {(a.user_id, a.state) for a in [await pool.get(i) for i in ids]}
    assert states == {(users[0], "cooling"), (users[1], "active")}
    assert REGISTRY.get_sample_value("kimi_worker_failovers_total") == failovers + 1


def _bearer_user(headers: dict[str, str]) -> str:
    """The Kimi user (JWT `sub`) a simulator request was made as."""
    token = next(v for k, v in headers.items() if k.lower() == "authorization").removeprefix("Bearer ")
    return str(jwt.decode(token, options={"verify_signature": False})["sub"])


async def test_only_account_401_is_a_clear_error(stack: Stack, client: openai.AsyncOpenAI) -> None:
    """A 401 on the only kimi-auth account: the account turns invalid, the client gets 503, no retry loop."""
    account_id = await stack.add("kimi_auth")
    await stack.arm("http_401", count=100)
    with pytest.raises(openai.APIStatusError) as caught:
        await client.chat.completions.create(
            model="kimi-k2.5-instant", messages=[{"role": "user", "content": "x"}]
        )
    assert caught.value.status_code == 503
    assert isinstance(caught.value.body, dict) and caught.value.body["message"]
    async with aiohttp.ClientSession() as session:
        pool = Accounts(stack.redis, PoolSettings(), session, stack.sim.url)
        assert (await pool.get(account_id)).state == "invalid"
    async with aiohttp.ClientSession() as session, session.get(f"{stack.sim.url}/__sim/requests") as resp:
        chat_calls = [r for r in await resp.json() if "Chat" in r["path"] or "completion" in r["path"]]
    assert len(chat_calls) == 1


async def test_mid_stream_cut_is_an_in_band_error(stack: Stack, client: openai.AsyncOpenAI) -> None:
    """An upstream cut after content reaches the SDK as an APIError, never a finish_reason stop."""
    await stack.add("kimi_auth")
    await stack.arm("cut_mid_stream", after_chunks=2)
    stream = await client.chat.completions.create(
        model="kimi-k2.5-instant", messages=[{"role": "user", "content": PROMPT}], stream=True
    )
    finishes = []
    with pytest.raises(openai.APIError):
        async for chunk in stream:
            finishes += [c.finish_reason for c in chunk.choices]
    assert "stop" not in finishes


async def test_errors_in_openai_shape(stack: Stack, client: openai.AsyncOpenAI) -> None:
    """Unknown model and bad body surface in the SDK as NotFoundError / BadRequestError."""
    with pytest.raises(openai.NotFoundError) as missing:
        await client.chat.completions.create(model="gpt-9", messages=[{"role": "user", "content": "x"}])
    assert missing.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError) as bad:
        await client.chat.completions.create(model="kimi", messages=[])
    assert bad.value.param == "messages"
    models = await client.models.list()
    assert "kimi-k2.5-thinking" in [m.id for m in models.data]


async def test_client_disconnect_closes_upstream_and_frees_the_lease(stack: Stack) -> None:
    """A client that leaves mid-stream: the simulator sees its stream closed and the lease comes back."""
    account = await stack.add("kimi_auth")
    async with aiohttp.ClientSession() as session:
        await session.post(f"{stack.sim.url}/__sim/config", json={"chunk_delay_s": 0.3, "chunk_count": 20})
        resp = await session.post(
            f"{stack.url}/v1/chat/completions",
            json={
                "model": "kimi-k2.5-instant",
                "stream": True,
                "messages": [{"role": "user", "content": PROMPT}],
            },
        )
        await resp.content.readuntil(b'"content":"')
        resp.close()
    pool_redis = stack.redis
    for _ in range(100):
        state = await stack.sim_state()
        streams = state["streams"]
        in_flight = await AccountPoolProbe(pool_redis, stack.sim.url).in_flight(account)
        if streams and streams[-1]["status"] == "client_closed" and in_flight == 0:
            break
        await asyncio.sleep(0.05)
    assert streams[-1]["status"] == "client_closed"
    assert in_flight == 0


@dataclasses.dataclass
class AccountPoolProbe:
    redis: aioredis.Redis
    sim_url: str

    async def in_flight(self, account_id: str) -> int:
        async with aiohttp.ClientSession() as session:
            pool = Accounts(self.redis, PoolSettings(), session, self.sim_url)
            return await pool.in_flight(account_id)


async def test_keepalive_while_kimi_is_silent(stack: Stack) -> None:
    """A stalled first byte upstream: SSE comment keep-alives reach the client, then the exact answer."""
    await stack.add("kimi_auth")
    # Pings start with the worker's first keep-alive, 0.5 s after the lease (FIRST_KEEPALIVE_S), then 0.2 s.
    await stack.arm("stall_first_byte", seconds=1.5)
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"{stack.url}/v1/chat/completions",
            json={
                "model": "kimi-k2.5-instant",
                "stream": True,
                "messages": [{"role": "user", "content": PROMPT}],
            },
        ) as resp,
    ):
        raw = await resp.read()
    assert raw.startswith(b": keep-alive\n\n")
    assert raw.endswith(b"data: [DONE]\n\n")


@pytest.mark.parametrize("stream", [True, False])
async def test_length_is_continued_into_one_whole_answer(
    stack: Stack, client: openai.AsyncOpenAI, stream: bool
) -> None:
    """A REST `length` cut is continued with segment_id: the SDK gets the whole answer and finish_reason stop."""
    await stack.add("refresh_token")
    await stack.arm("length")
    if stream:
        text, _, chunks = await _stream_text(client, "kimi")
        finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    else:
        completion = await client.chat.completions.create(
            model="kimi", messages=[{"role": "user", "content": PROMPT}]
        )
        text, finishes = completion.choices[0].message.content or "", [completion.choices[0].finish_reason]
    assert (text, finishes) == (answer_for(PROMPT), ["stop"])
    calls = await stack.sim_requests("/completion/stream")
    assert len(calls) == 2
    first, second = (call["body"] for call in calls)
    assert "segment_id" not in first and first.get("action") != "continue"
    assert second["action"] == "continue" and isinstance(second["segment_id"], str) and second["segment_id"]
    assert calls[0]["path"] == calls[1]["path"]  # the same chat


#: google-genai subclasses aiohttp's ClientSession, which aiohttp warns about.
GENAI_WARNING = "ignore:Inheritance class AiohttpClientSession:DeprecationWarning"
#: Issue 5: a first token delayed this long must not break any SDK's stream, keep-alives at their defaults.
STALL_S = 20.0


@pytest.mark.slow
@pytest.mark.filterwarnings(GENAI_WARNING)
async def test_every_sdk_survives_a_20_s_first_token_with_default_keepalives(
    stack_factory: StackFactory,
) -> None:
    """SLOW (~20 s): with Kimi silent for 20 s and the default keep-alive interval, the openai, anthropic and
    google-genai streams (run together) each return the exact answer, and raw streams show the keep-alives."""
    interval_s = GatewaySettings().keepalive_interval_s
    stack = await stack_factory(keepalive_interval_s=interval_s, worker_overrides={"concurrency": 8})
    for _ in range(6):
        await stack.add("kimi_auth")
    await stack.arm("stall_first_byte", count=6, seconds=STALL_S, path="Chat")
    started = time.monotonic()
    texts = await asyncio.gather(
        _openai_stream(stack.url),
        _anthropic_stream(stack.url),
        _genai_stream(stack.url),
        _raw_stream(f"{stack.url}/v1/chat/completions", {**_OPENAI_BODY, "stream": True}),
        _raw_stream(f"{stack.url}/v1/messages", {**_ANTHROPIC_BODY, "stream": True}),
        _raw_stream(
            f"{stack.url}/v1beta/models/kimi-k2.5-instant:streamGenerateContent?alt=sse", _GEMINI_BODY
        ),
    )
    assert time.monotonic() - started >= STALL_S
    assert texts[:3] == [answer_for(PROMPT)] * 3
    openai_raw, anthropic_raw, gemini_raw = texts[3:]
    openai_head = openai_raw.partition("data: ")[0]
    assert openai_head and openai_head == ": keep-alive\n\n" * openai_head.count(": keep-alive")
    assert anthropic_raw.split("\n\n")[1] == 'event: ping\ndata: {"type":"ping"}'
    gemini_head = gemini_raw.partition("data: ")[0]
    assert gemini_head and gemini_head.strip("\n") == ""


_OPENAI_BODY: dict[str, Any] = {
    "model": "kimi-k2.5-instant",
    "messages": [{"role": "user", "content": PROMPT}],
}
_ANTHROPIC_BODY: dict[str, Any] = {**_OPENAI_BODY, "max_tokens": 100}
_GEMINI_BODY: dict[str, Any] = {"contents": [{"role": "user", "parts": [{"text": PROMPT}]}]}
#: Each SDK's read timeout sits above one keep-alive interval and well below the stall.
_READ_TIMEOUT_S = 15.0


async def _openai_stream(url: str) -> str:
    async with openai.AsyncOpenAI(
        base_url=f"{url}/v1", api_key="k", max_retries=0, timeout=_READ_TIMEOUT_S
    ) as client:
        text, _, _ = await _stream_text(client, "kimi-k2.5-instant")
    return text


async def _anthropic_stream(url: str) -> str:
    async with (
        anthropic.AsyncAnthropic(base_url=url, api_key="k", max_retries=0, timeout=_READ_TIMEOUT_S) as client,
        client.messages.stream(
            model="kimi-k2.5-instant", max_tokens=100, messages=[{"role": "user", "content": PROMPT}]
        ) as stream,
    ):
        return "".join([chunk async for chunk in stream.text_stream])


async def _genai_stream(url: str) -> str:
    # google-genai's timeout is a total one, which no keep-alive can extend: it must cover the stall.
    client = genai.Client(api_key="k", http_options=genai_types.HttpOptions(base_url=url, timeout=60_000))
    try:
        stream = await client.aio.models.generate_content_stream(model="kimi-k2.5-instant", contents=PROMPT)
        return "".join([chunk.text or "" async for chunk in stream])
    finally:
        await client.aio.aclose()
        client.close()


async def _raw_stream(url: str, body: dict[str, Any]) -> str:
    timeout = aiohttp.ClientTimeout(sock_read=_READ_TIMEOUT_S)
    async with aiohttp.ClientSession(timeout=timeout) as session, session.post(url, json=body) as resp:
        assert resp.status == 200
        return (await resp.read()).decode()
