"""Tool calls end to end through the official `openai` SDK, on a Connect and a REST account: real Redis, the
simulator (which calls a tool for each `call NAME {json}` line), the gateway and a worker."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import openai
import pytest
import pytest_asyncio
from openai.types.chat import ChatCompletionMessageParam, ChatCompletionToolParam

from tests.stack import Stack, StackFactory, stack_factory

__all__ = ["stack_factory"]

#: (account kind, model): a Connect lane and a REST lane.
LANES = [("kimi_auth", "kimi-k2.5-instant"), ("refresh_token", "kimi")]
TOOLS: list[ChatCompletionToolParam] = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Current weather for a city.",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "get_time",
            "parameters": {"type": "object", "properties": {"tz": {"type": "string"}}},
        },
    },
]
ASK_WEATHER = 'Weather in Paris?\ncall get_weather {"city": "Paris"}'
ASK_BOTH = 'Weather and time?\ncall get_weather {"city": "Paris"}\ncall get_time {"tz": "Europe/Paris"}'
#: Any piece of K2's call markup (the native markers, the XML form) that must never reach content.
MARKUP = ("<|", "|>", "<tool_call>", "<invoke")

#: What a completion says, ids aside (they are per request): content, calls as (name, arguments), finish.
Answer = tuple[str | None, list[tuple[str, dict[str, Any]]], str]


def _calling(*names: str) -> str:
    """The simulated Kimi's sentence before its calls (kimi_sim/tools.py)."""
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
async def client(lane: tuple[Stack, str]) -> AsyncIterator[openai.AsyncOpenAI]:
    client = openai.AsyncOpenAI(base_url=f"{lane[0].url}/v1", api_key="sk-local", max_retries=0, timeout=30)
    yield client
    await client.close()


def _answer(message: Any, finish: str) -> Answer:
    calls = [(c.function.name, json.loads(c.function.arguments)) for c in message.tool_calls or []]
    return message.content, calls, finish


async def _both(
    client: openai.AsyncOpenAI, model: str, messages: list[ChatCompletionMessageParam], **extra: Any
) -> tuple[Answer, Answer, list[str]]:
    """The non-stream answer, the SDK's accumulated stream, and every call id seen."""
    whole = await client.chat.completions.create(model=model, messages=messages, tools=TOOLS, **extra)
    async with client.chat.completions.stream(model=model, messages=messages, tools=TOOLS, **extra) as stream:
        final = await stream.get_final_completion()
    ids = [c.id for choice in (whole.choices[0], final.choices[0]) for c in choice.message.tool_calls or []]
    streamed = _answer(final.choices[0].message, final.choices[0].finish_reason)
    non_streamed = _answer(whole.choices[0].message, whole.choices[0].finish_reason)
    for content in (streamed[0], non_streamed[0]):
        assert not any(marker in (content or "") for marker in MARKUP)
    return non_streamed, streamed, ids


async def test_single_call(lane: tuple[Stack, str], client: openai.AsyncOpenAI) -> None:
    """One `call` line gives one tool call with finish_reason tool_calls; the stream accumulates to the same."""
    whole, streamed, ids = await _both(client, lane[1], [{"role": "user", "content": ASK_WEATHER}])
    assert whole == streamed == (_calling("get_weather"), [("get_weather", {"city": "Paris"})], "tool_calls")
    assert all(i.startswith("call_") for i in ids) and len(set(ids)) == 2


async def test_parallel_calls(lane: tuple[Stack, str], client: openai.AsyncOpenAI) -> None:
    """Two `call` lines give two calls in one answer, in order, stream and non-stream alike."""
    whole, streamed, ids = await _both(client, lane[1], [{"role": "user", "content": ASK_BOTH}])
    calls = [("get_weather", {"city": "Paris"}), ("get_time", {"tz": "Europe/Paris"})]
    assert whole == streamed == (_calling("get_weather", "get_time"), calls, "tool_calls")
    assert len(set(ids)) == 4


async def test_follow_up_with_the_results(lane: tuple[Stack, str], client: openai.AsyncOpenAI) -> None:
    """The results sent back as tool messages are answered from: the reply quotes each one."""
    messages: list[ChatCompletionMessageParam] = [
        {"role": "user", "content": ASK_BOTH},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_a",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                },
                {
                    "id": "call_b",
                    "type": "function",
                    "function": {"name": "get_time", "arguments": '{"tz":"Europe/Paris"}'},
                },
            ],
        },
        {"role": "tool", "tool_call_id": "call_a", "content": "18 C and sunny"},
        {"role": "tool", "tool_call_id": "call_b", "content": [{"type": "text", "text": "10:15"}]},
    ]
    whole, streamed, _ = await _both(client, lane[1], messages)
    quoted = (
        "Tool results received. 工具结果如下：\n"
        "functions.get_weather:0 returned: 18 C and sunny\n"
        "functions.get_time:1 returned: 10:15"
    )
    assert whole == streamed == (quoted, [], "stop")


@pytest.mark.parametrize(
    ("choice", "ask", "calls"),
    [
        ("required", ASK_WEATHER, [("get_weather", {"city": "Paris"})]),
        (
            {"type": "function", "function": {"name": "get_time"}},
            'What time?\ncall get_time {"tz": "UTC"}',
            [("get_time", {"tz": "UTC"})],
        ),
    ],
    ids=["required", "named"],
)
async def test_tool_choice_required_and_named(
    lane: tuple[Stack, str], client: openai.AsyncOpenAI, choice: Any, ask: str, calls: list[Any]
) -> None:
    """tool_choice required and a named function give that call, stream and non-stream alike."""
    whole, streamed, _ = await _both(client, lane[1], [{"role": "user", "content": ask}], tool_choice=choice)
    assert whole == streamed == (_calling(calls[0][0]), calls, "tool_calls")


async def test_tool_choice_none_answers_in_text(lane: tuple[Stack, str], client: openai.AsyncOpenAI) -> None:
    """tool_choice none: no call although the user asks for one; an ordinary text answer with finish stop."""
    messages: list[ChatCompletionMessageParam] = [{"role": "user", "content": ASK_WEATHER}]
    whole, streamed, ids = await _both(client, lane[1], messages, tool_choice="none")
    assert whole == streamed
    assert (whole[1], whole[2], ids) == ([], "stop", [])
    assert whole[0] is not None and whole[0].startswith("你好！You said: ")
