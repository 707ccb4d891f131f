"""End to end through the official `anthropic` SDK: real Redis, the Kimi simulator, the gateway, a worker."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import anthropic
import pytest
import pytest_asyncio

from adapters.anthropic import thinking_signature
from kimi_sim.answers import answer_for, reasoning_for
from shared.secret import Secret
from shared.usage_estimate import estimate_prompt_tokens
from tests.stack import Stack, StackFactory, stack_factory

__all__ = ["stack_factory"]

PROMPT = "hi there"
MESSAGES: list[anthropic.types.MessageParam] = [{"role": "user", "content": PROMPT}]


@pytest_asyncio.fixture
async def stack(stack_factory: StackFactory) -> Stack:
    stack = await stack_factory()
    await stack.add("kimi_auth")
    return stack


@pytest_asyncio.fixture
async def client(stack: Stack) -> AsyncIterator[anthropic.AsyncAnthropic]:
    client = anthropic.AsyncAnthropic(base_url=stack.url, api_key="sk-local", max_retries=0, timeout=30)
    yield client
    await client.close()


async def test_create_returns_exact_text(client: anthropic.AsyncAnthropic) -> None:
    """messages.create answers the simulator's exact text with end_turn and estimated usage."""
    message = await client.messages.create(model="kimi-k2.5-instant", max_tokens=1024, messages=MESSAGES)
    assert [block.type for block in message.content] == ["text"]
    assert message.content[0].text == answer_for(PROMPT)  # type: ignore[union-attr]
    assert (message.role, message.stop_reason, message.stop_sequence) == ("assistant", "end_turn", None)
    assert message.usage.input_tokens > 0 and message.usage.output_tokens > 0


async def test_stream_thinking_then_text(client: anthropic.AsyncAnthropic) -> None:
    """messages.stream: text_stream yields the exact answer; the final message has thinking then text."""
    async with client.messages.stream(
        model="kimi-k2.5-thinking", max_tokens=1024, messages=MESSAGES
    ) as stream:
        text = "".join([chunk async for chunk in stream.text_stream])
        final = await stream.get_final_message()
    assert text == answer_for(PROMPT)
    assert [block.type for block in final.content] == ["thinking", "text"]
    thinking = final.content[0]
    assert thinking.thinking == reasoning_for(PROMPT)  # type: ignore[union-attr]
    assert thinking.signature == thinking_signature(reasoning_for(PROMPT))  # type: ignore[union-attr]
    assert final.content[1].text == answer_for(PROMPT)  # type: ignore[union-attr]
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens > 0


async def test_stop_sequence_and_max_tokens_cut_at_the_gateway(client: anthropic.AsyncAnthropic) -> None:
    """stop_sequences and max_tokens cut the answer with the matching stop reason, stream and non-stream."""
    answer = answer_for(PROMPT)
    message = await client.messages.create(
        model="kimi-k2.5-instant", max_tokens=1024, messages=MESSAGES, stop_sequences=["said"]
    )
    assert message.content[0].text == answer[: answer.index("said")]  # type: ignore[union-attr]
    assert (message.stop_reason, message.stop_sequence) == ("stop_sequence", "said")
    async with client.messages.stream(model="kimi-k2.5-instant", max_tokens=3, messages=MESSAGES) as stream:
        final = await stream.get_final_message()
    assert final.stop_reason == "max_tokens"
    assert answer.startswith(final.content[0].text)  # type: ignore[union-attr]
    assert final.usage.output_tokens == 3


async def test_count_tokens(client: anthropic.AsyncAnthropic) -> None:
    """messages.count_tokens answers the estimator's count."""
    count = await client.messages.count_tokens(
        model="kimi-k2.5-instant", system="Be brief.", messages=MESSAGES
    )
    assert count.input_tokens == estimate_prompt_tokens(["Be brief.", PROMPT]) == 13


async def test_error_types(client: anthropic.AsyncAnthropic, stack: Stack) -> None:
    """Unknown model → NotFoundError, missing max_tokens and image blocks → BadRequestError."""
    with pytest.raises(anthropic.NotFoundError) as missing:
        await client.messages.create(model="claude-x", max_tokens=10, messages=MESSAGES)
    assert missing.value.body == {
        "type": "error",
        "error": {"type": "not_found_error", "message": "model: claude-x"},
        "request_id": missing.value.response.headers["request-id"],
    }
    body = {"model": "kimi", "messages": MESSAGES}  # the SDK itself refuses to send this without max_tokens
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{stack.url}/v1/messages", json=body) as resp,
    ):
        assert resp.status == 400
        assert (await resp.json())["error"] == {
            "type": "invalid_request_error",
            "message": "max_tokens: Field required",
        }
    image = {"type": "image", "source": {"type": "file", "file_id": "file_1"}}
    with pytest.raises(
        anthropic.BadRequestError, match=r"messages\.0\.content\.0: file ids are not supported"
    ):
        await client.messages.create(
            model="kimi",
            max_tokens=10,
            messages=[{"role": "user", "content": [image, {"type": "text", "text": "?"}]}],  # type: ignore[list-item]
        )


async def test_authentication_error(stack_factory: StackFactory) -> None:
    """With GATEWAY_API_KEYS set, a wrong x-api-key is an AuthenticationError of Anthropic's shape."""
    stack = await stack_factory(api_keys=(Secret("sk-right"),))
    async with anthropic.AsyncAnthropic(base_url=stack.url, api_key="sk-wrong", max_retries=0) as client:
        with pytest.raises(anthropic.AuthenticationError) as info:
            await client.messages.create(model="kimi", max_tokens=10, messages=MESSAGES)
    assert info.value.body["error"]["type"] == "authentication_error"  # type: ignore[index]


async def test_upstream_failure_mid_stream_is_an_in_band_error(
    stack: Stack, client: anthropic.AsyncAnthropic
) -> None:
    """An upstream cut after the first token surfaces as an SDK error, never as a made-up end_turn."""
    await stack.arm("cut_mid_stream", after_chunks=1)
    with pytest.raises(anthropic.APIStatusError) as info:
        async with client.messages.stream(
            model="kimi-k2.5-instant", max_tokens=1024, messages=MESSAGES
        ) as stream:
            async for _ in stream.text_stream:
                pass
    assert info.value.body["type"] == "error"  # type: ignore[index]


@pytest.mark.slow
async def test_pings_keep_a_stalled_stream_alive(stack_factory: StackFactory) -> None:
    """SLOW (3 s): while Kimi stalls before its first byte, `event: ping` frames flow, then the answer."""
    stack = await stack_factory(keepalive_interval_s=0.5)
    await stack.add("kimi_auth")
    await stack.arm("stall_first_byte", seconds=3.0, path="Chat")
    body = {"model": "kimi-k2.5-instant", "max_tokens": 100, "stream": True, "messages": MESSAGES}
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{stack.url}/v1/messages", json=body) as resp,
    ):
        raw = (await resp.read()).decode()
    events = [line.removeprefix("event: ") for line in raw.splitlines() if line.startswith("event: ")]
    assert events[0] == "message_start"
    assert events.count("ping") >= 3
    assert events[-2:] == ["message_delta", "message_stop"]
    assert "".join(e for e in events if e != "ping").count("content_block_start") == 1


@pytest.mark.slow
async def test_sdk_stream_survives_a_delayed_first_token(stack_factory: StackFactory) -> None:
    """SLOW (3 s): the SDK's stream reads through the keep-alives and returns the exact answer."""
    stack = await stack_factory(keepalive_interval_s=0.5)
    await stack.add("kimi_auth")
    await stack.arm("stall_first_byte", seconds=3.0, path="Chat")
    async with (
        anthropic.AsyncAnthropic(base_url=stack.url, api_key="k", max_retries=0, timeout=2.0) as client,
        client.messages.stream(model="kimi-k2.5-instant", max_tokens=100, messages=MESSAGES) as stream,
    ):
        text = "".join([chunk async for chunk in stream.text_stream])
    assert text == answer_for(PROMPT)


async def test_upstream_overload_is_529_overloaded_error(
    stack: Stack, client: anthropic.AsyncAnthropic
) -> None:
    """Kimi's "server overloaded" before the first token is an OverloadedError (HTTP 529)."""
    await stack.arm("resource_exhausted", count=5)
    with pytest.raises(anthropic.OverloadedError) as info:
        await client.messages.create(model="kimi-k2.5-instant", max_tokens=10, messages=MESSAGES)
    assert info.value.body["error"]["type"] == "overloaded_error"  # type: ignore[index]
