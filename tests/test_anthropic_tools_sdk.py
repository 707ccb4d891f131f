"""Tool use end to end through the official `anthropic` SDK, on a Connect and a REST account: real Redis, the
simulator (which calls a tool for each `call NAME {json}` line), the gateway and a worker."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import anthropic
import pytest
import pytest_asyncio
from anthropic.types import Message, MessageParam, TextBlock, ToolParam, ToolUseBlock

from tests.stack import Stack, StackFactory, stack_factory

__all__ = ["stack_factory"]

LANES = [("kimi_auth", "kimi-k2.5-instant"), ("refresh_token", "kimi")]
TOOLS: list[ToolParam] = [
    {
        "name": "get_weather",
        "description": "Current weather for a city.",
        "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
    {"name": "get_time", "input_schema": {"type": "object", "properties": {"tz": {"type": "string"}}}},
]
ASK_WEATHER = 'Weather in Paris?\ncall get_weather {"city": "Paris"}'
ASK_BOTH = 'Weather and time?\ncall get_weather {"city": "Paris"}\ncall get_time {"tz": "Europe/Paris"}'
#: Any piece of K2's call markup (the native markers, the XML form) that must never reach content.
MARKUP = ("<|", "|>", "<tool_call>", "<invoke")

#: What a message says, ids aside: the text, the tool_use blocks as (name, input), the stop reason.
Answer = tuple[str, list[tuple[str, dict[str, object]]], str | None]


def _calling(*names: str) -> str:
    return f"好的，我来调用工具 (calling {', '.join(names)})."


@pytest_asyncio.fixture(params=LANES, ids=["connect", "rest"])
async def lane(
    request: pytest.FixtureRequest, stack_factory: StackFactory
) -> AsyncIterator[tuple[Stack, str]]:
    kind, model = request.param
    stack = await stack_factory()
    await stack.add(kind)
    yield stack, model


@pytest_asyncio.fixture
async def client(lane: tuple[Stack, str]) -> AsyncIterator[anthropic.AsyncAnthropic]:
    client = anthropic.AsyncAnthropic(base_url=lane[0].url, api_key="sk-local", max_retries=0, timeout=30)
    yield client
    await client.close()


def _answer(message: Message) -> Answer:
    text = "".join(b.text for b in message.content if isinstance(b, TextBlock))
    assert not any(marker in text for marker in MARKUP)
    calls = [(b.name, b.input) for b in message.content if isinstance(b, ToolUseBlock)]
    return text, calls, message.stop_reason


async def _both(
    client: anthropic.AsyncAnthropic, model: str, messages: list[MessageParam], **extra: Any
) -> tuple[Answer, Answer, list[str]]:
    """The non-stream message, the SDK's accumulated stream, and every tool_use id seen."""
    whole = await client.messages.create(
        model=model, max_tokens=1024, messages=messages, tools=TOOLS, **extra
    )
    async with client.messages.stream(
        model=model, max_tokens=1024, messages=messages, tools=TOOLS, **extra
    ) as stream:
        final = await stream.get_final_message()
    ids = [b.id for m in (whole, final) for b in m.content if isinstance(b, ToolUseBlock)]
    return _answer(whole), _answer(final), ids


async def test_single_call(lane: tuple[Stack, str], client: anthropic.AsyncAnthropic) -> None:
    """One `call` line gives one tool_use block and stop_reason tool_use; the stream accumulates to the same."""
    whole, streamed, ids = await _both(client, lane[1], [{"role": "user", "content": ASK_WEATHER}])
    assert whole == streamed == (_calling("get_weather"), [("get_weather", {"city": "Paris"})], "tool_use")
    assert len(set(ids)) == 2


async def test_parallel_calls(lane: tuple[Stack, str], client: anthropic.AsyncAnthropic) -> None:
    """Two `call` lines give two tool_use blocks in order, stream and non-stream alike."""
    whole, streamed, ids = await _both(client, lane[1], [{"role": "user", "content": ASK_BOTH}])
    calls = [("get_weather", {"city": "Paris"}), ("get_time", {"tz": "Europe/Paris"})]
    assert whole == streamed == (_calling("get_weather", "get_time"), calls, "tool_use")
    assert len(set(ids)) == 4


async def test_follow_up_with_the_results(lane: tuple[Stack, str], client: anthropic.AsyncAnthropic) -> None:
    """tool_result blocks (string content, block content with is_error) are answered from: each is quoted."""
    messages: list[MessageParam] = [
        {"role": "user", "content": ASK_BOTH},
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": _calling("get_weather", "get_time")},
                {"type": "tool_use", "id": "toolu_a", "name": "get_weather", "input": {"city": "Paris"}},
                {"type": "tool_use", "id": "toolu_b", "name": "get_time", "input": {"tz": "Europe/Paris"}},
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_a", "content": "18 C and sunny"},
                {
                    "type": "tool_result",
                    "tool_use_id": "toolu_b",
                    "content": [{"type": "text", "text": "clock broken"}],
                    "is_error": True,
                },
            ],
        },
    ]
    whole, streamed, _ = await _both(client, lane[1], messages)
    quoted = (
        "Tool results received. 工具结果如下：\n"
        "functions.get_weather:0 returned: 18 C and sunny\n"
        "functions.get_time:1 returned: clock broken"
    )
    assert whole == streamed == (quoted, [], "end_turn")


@pytest.mark.parametrize(
    ("choice", "ask", "calls"),
    [
        ({"type": "any"}, ASK_WEATHER, [("get_weather", {"city": "Paris"})]),
        (
            {"type": "tool", "name": "get_time"},
            'What time?\ncall get_time {"tz": "UTC"}',
            [("get_time", {"tz": "UTC"})],
        ),
    ],
    ids=["any", "tool"],
)
async def test_tool_choice_any_and_tool(
    lane: tuple[Stack, str], client: anthropic.AsyncAnthropic, choice: Any, ask: str, calls: list[Any]
) -> None:
    """tool_choice any and a named tool give that call, stream and non-stream alike."""
    whole, streamed, _ = await _both(client, lane[1], [{"role": "user", "content": ask}], tool_choice=choice)
    assert whole == streamed == (_calling(calls[0][0]), calls, "tool_use")


async def test_tool_choice_none_answers_in_text(
    lane: tuple[Stack, str], client: anthropic.AsyncAnthropic
) -> None:
    """tool_choice none: no call although the user asks for one; an ordinary text answer with end_turn."""
    messages: list[MessageParam] = [{"role": "user", "content": ASK_WEATHER}]
    whole, streamed, ids = await _both(client, lane[1], messages, tool_choice={"type": "none"})
    assert whole == streamed
    assert (whole[1], whole[2], ids) == ([], "end_turn", [])
    assert whole[0].startswith("你好！You said: ")


async def test_beta_messages_with_what_claude_code_sends(
    lane: tuple[Stack, str], client: anthropic.AsyncAnthropic
) -> None:
    """client.beta.messages (`?beta=true`, an anthropic-beta header) with a mid-conversation system message,
    adaptive thinking, metadata, cache_control, context_management and output_config gets a tool call."""
    message = await client.beta.messages.create(
        model=lane[1],
        max_tokens=32000,
        betas=["interleaved-thinking-2025-05-14", "context-management-2025-06-27"],
        system=[{"type": "text", "text": "You are terse.", "cache_control": {"type": "ephemeral"}}],
        messages=[
            {
                "role": "user",
                "content": [{"type": "text", "text": ASK_WEATHER, "cache_control": {"type": "ephemeral"}}],
            },
            {"role": "system", "content": [{"type": "text", "text": "Environment: linux"}]},
        ],
        tools=TOOLS,
        metadata={"user_id": "session_1"},
        thinking={"type": "adaptive"},
        extra_body={"context_management": {"edits": []}, "output_config": {"effort": "high"}},
    )
    calls = [(b.name, b.input) for b in message.content if b.type == "tool_use"]
    assert (calls, message.stop_reason) == ([("get_weather", {"city": "Paris"})], "tool_use")
