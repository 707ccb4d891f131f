"""OpenAI tool calling as tables: `tools`, `tool_choice` and tool history in → canonical request; calls out →
exact bytes, and openai-python's own stream accumulator rebuilds the non-stream message from them."""

from __future__ import annotations

import json
from typing import Any

import pytest
from openai.lib.streaming.chat import ChatCompletionStreamState
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from adapters.base import Parsed, RequestContext
from adapters.openai import DIALECT
from shared.errors import BadRequest
from shared.schema import (
    Done,
    Event,
    Message,
    TextDelta,
    TextPart,
    ToolCall,
    ToolCallEvent,
    ToolChoice,
    ToolSpec,
    Usage,
)

CREATED = 1_700_000_000
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
        "strict": True,
    },
}
TIME = {"type": "function", "function": {"name": "get_time"}}
WEATHER_SPEC = ToolSpec(
    "get_weather",
    "Current weather",
    '{"type":"object","properties":{"city":{"type":"string"}},"required":["city"]}',
)


def _parse(**fields: Any) -> Parsed:
    body: dict[str, Any] = {"model": "kimi", "messages": [{"role": "user", "content": "hi"}], **fields}
    return DIALECT.parse(json.dumps(body).encode(), RequestContext("r1", now_s=CREATED))


def _render(events: list[Event], *, stream: bool) -> bytes:
    request, reply = _parse(tools=[WEATHER, TIME], stream=stream)
    renderer = DIALECT.renderer(request, reply, RequestContext("r1", now_s=CREATED))
    out = b"".join(renderer.feed(e) for e in events)
    return out if stream else renderer.body()


def _chunk(delta: str, finish: str = "null") -> bytes:
    return (
        f'data: {{"id":"chatcmpl-r1","object":"chat.completion.chunk","created":{CREATED},"model":"kimi",'
        f'"choices":[{{"index":0,"delta":{delta},"logprobs":null,"finish_reason":{finish}}}]}}\n\n'
    ).encode()


CALL_A = ToolCall("call_r1_0", "get_weather", '{"city":"Paris"}')
CALL_B = ToolCall("call_r1_1", "get_time", '{"tz":"Europe/Paris"}')
TWO_CALLS: list[Event] = [
    TextDelta("Checking."),
    ToolCallEvent(0, CALL_A),
    ToolCallEvent(1, CALL_B),
    Usage(5, 7),
    Done(finish_reason="tool_calls"),
]

# ---------------------------------------------------------------- parse


def test_parse_tools_choice_and_parallel_flag() -> None:
    """Function tools become ToolSpecs with compact JSON parameters; `parallel_tool_calls: false` is kept."""
    request = _parse(tools=[WEATHER, TIME], tool_choice="required", parallel_tool_calls=False).request
    assert request.tools == [WEATHER_SPEC, ToolSpec("get_time")]
    assert request.tool_choice == ToolChoice("required")
    assert request.parallel_tool_calls is False
    assert _parse(tools=[WEATHER]).request.parallel_tool_calls is True


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        (None, ToolChoice("auto")),
        ("auto", ToolChoice("auto")),
        ("none", ToolChoice("none")),
        ("required", ToolChoice("required")),
        ({"type": "function", "function": {"name": "get_time"}}, ToolChoice("named", "get_time")),
        (
            {"type": "allowed_tools", "allowed_tools": {"mode": "required", "tools": [TIME]}},
            ToolChoice("required", allowed=["get_time"]),
        ),
    ],
)
def test_parse_every_tool_choice_form(choice: Any, expected: ToolChoice) -> None:
    """Each `tool_choice` form maps to its canonical ToolChoice."""
    fields: dict[str, Any] = {"tools": [WEATHER, TIME]}
    if choice is not None:
        fields["tool_choice"] = choice
    assert _parse(**fields).request.tool_choice == expected


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"tools": [WEATHER], "tool_choice": "sometimes"}, "tool_choice"),
        (
            {"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "nope"}}},
            "tool_choice",
        ),
        ({"tools": [WEATHER], "tool_choice": {"type": "custom", "custom": {"name": "x"}}}, "tool_choice"),
    ],
)
def test_parse_refuses_a_bad_tool_choice(fields: dict[str, Any], param: str) -> None:
    """An unknown mode, an undeclared named tool or a custom choice is a 400 naming `tool_choice`."""
    with pytest.raises(BadRequest) as caught:
        _parse(**fields)
    assert caught.value.param == param


def test_parse_history_with_calls_and_results() -> None:
    """Assistant tool_calls (content null) and tool messages (string or text parts) become canonical messages;
    a request whose last message is a tool result is not refused for want of text."""
    messages = [
        {"role": "user", "content": "Weather?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_a",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                }
            ],
        },
        {
            "role": "tool",
            "tool_call_id": "call_a",
            "name": "get_weather",
            "content": [{"type": "text", "text": "18C"}],
        },
        {"role": "tool", "tool_call_id": "call_b", "content": ""},
    ]
    request = _parse(messages=messages, tools=[WEATHER]).request
    assert request.messages == [
        Message("user", "Weather?"),
        Message("assistant", "", tool_calls=[ToolCall("call_a", "get_weather", '{"city":"Paris"}')]),
        Message("tool", [TextPart("18C")], tool_call_id="call_a", name="get_weather"),
        Message("tool", "", tool_call_id="call_b"),
    ]


# ---------------------------------------------------------------- render


def test_stream_tool_call_fragments_exact_bytes() -> None:
    """Each call is two delta.tool_calls fragments (id, type, name once; then the arguments) and the stream
    ends with finish_reason tool_calls."""
    out = _render(TWO_CALLS, stream=True)
    assert out == (
        _chunk('{"role":"assistant","content":""}')
        + _chunk('{"content":"Checking."}')
        + _chunk(
            '{"tool_calls":[{"index":0,"id":"call_r1_0","type":"function",'
            '"function":{"name":"get_weather","arguments":""}}]}'
        )
        + _chunk('{"tool_calls":[{"index":0,"function":{"arguments":"{\\"city\\":\\"Paris\\"}"}}]}')
        + _chunk(
            '{"tool_calls":[{"index":1,"id":"call_r1_1","type":"function",'
            '"function":{"name":"get_time","arguments":""}}]}'
        )
        + _chunk('{"tool_calls":[{"index":1,"function":{"arguments":"{\\"tz\\":\\"Europe/Paris\\"}"}}]}')
        + _chunk("{}", '"tool_calls"')
        + b"data: [DONE]\n\n"
    )


def test_non_stream_message_tool_calls_exact_bytes() -> None:
    """The body has message.tool_calls (arguments as a string) and finish_reason tool_calls."""
    out = _render(TWO_CALLS, stream=False)
    assert json.loads(out)["choices"] == [
        {
            "index": 0,
            "message": {
                "role": "assistant",
                "content": "Checking.",
                "tool_calls": [
                    {
                        "id": "call_r1_0",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                    },
                    {
                        "id": "call_r1_1",
                        "type": "function",
                        "function": {"name": "get_time", "arguments": '{"tz":"Europe/Paris"}'},
                    },
                ],
            },
            "logprobs": None,
            "finish_reason": "tool_calls",
        }
    ]


def test_non_stream_content_is_null_when_the_answer_is_only_calls() -> None:
    """An answer of calls alone has `"content":null`."""
    out = _render([ToolCallEvent(0, CALL_A), Done(finish_reason="tool_calls")], stream=False)
    assert b'"message":{"role":"assistant","content":null,"tool_calls":[' in out


def _call_tuple(call: Any) -> tuple[str, str, str, str]:
    return call.id, call.type, call.function.name, call.function.arguments


def test_the_sdk_accumulator_rebuilds_the_non_stream_message() -> None:
    """openai-python's ChatCompletionStreamState, fed our chunks, yields the same message as the body."""
    state: ChatCompletionStreamState[None] = ChatCompletionStreamState()
    for frame in _render(TWO_CALLS, stream=True).split(b"\n\n"):
        payload = frame.removeprefix(b"data: ")
        if payload and payload != b"[DONE]":
            state.handle_chunk(ChatCompletionChunk.model_validate_json(payload))
    streamed = state.get_final_completion().choices[0]
    whole = ChatCompletion.model_validate_json(_render(TWO_CALLS, stream=False)).choices[0]
    assert streamed.finish_reason == whole.finish_reason == "tool_calls"
    assert streamed.message.content == whole.message.content == "Checking."
    streamed_calls = [_call_tuple(c) for c in streamed.message.tool_calls or []]
    whole_calls = [_call_tuple(c) for c in whole.message.tool_calls or []]
    assert (
        streamed_calls
        == whole_calls
        == [
            ("call_r1_0", "function", "get_weather", '{"city":"Paris"}'),
            ("call_r1_1", "function", "get_time", '{"tz":"Europe/Paris"}'),
        ]
    )
