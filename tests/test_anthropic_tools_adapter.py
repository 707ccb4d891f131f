"""Anthropic tool use as tables: tools, tool_choice, tool_use / tool_result blocks and what Claude Code sends in →
canonical request; calls out → exact bytes, and the SDK's own accumulator rebuilds the non-stream message."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from anthropic._streaming import SSEDecoder
from anthropic.lib.streaming._messages import accumulate_event
from anthropic.types import Message as SdkMessage

from adapters import anthropic
from adapters.base import Parsed, RequestContext
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

DIALECT = anthropic.DIALECT
CLAUDE_CODE_TOOLS = json.loads((Path(__file__).parent / "fixtures" / "claude_code_tools.json").read_text())[
    "tools"
]
WEATHER = {
    "name": "get_weather",
    "description": "Current weather",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    "cache_control": {"type": "ephemeral"},
}
TIME = {"name": "get_time", "input_schema": {"type": "object"}}


def _parse(**fields: Any) -> Parsed:
    body: dict[str, Any] = {
        "model": "kimi-k2.5-instant",
        "max_tokens": 1024,
        "messages": [{"role": "user", "content": "Hi"}],
        **fields,
    }
    return DIALECT.parse(json.dumps(body).encode(), RequestContext(request_id="req1"))


def _render(events: list[Event], *, stream: bool) -> bytes:
    request, reply = _parse(tools=[WEATHER, TIME], stream=stream)
    renderer = DIALECT.renderer(request, reply, RequestContext(request_id="req1"))
    out = renderer.head() if stream else b""
    out += b"".join(renderer.feed(e) for e in events)
    return out if stream else renderer.body()


def _frame(name: str, data: str) -> bytes:
    return f"event: {name}\ndata: {data}\n\n".encode()


CALL_A = ToolCall("call_req1_0", "get_weather", '{"city":"Paris"}')
CALL_B = ToolCall("call_req1_1", "get_time", "{}")
TWO_CALLS: list[Event] = [
    TextDelta("Checking."),
    ToolCallEvent(0, CALL_A),
    ToolCallEvent(1, CALL_B),
    Usage(5, 7),
    Done(finish_reason="tool_calls"),
]

# ---------------------------------------------------------------- parse


def test_parse_client_tools_and_drop_server_tools() -> None:
    """Client tools become ToolSpecs (input_schema as compact JSON); a dated server tool is dropped."""
    server = {"type": "web_search_20250305", "name": "web_search", "max_uses": 3}
    request = _parse(tools=[WEATHER, TIME, server]).request
    assert request.tools == [
        ToolSpec(
            "get_weather",
            "Current weather",
            '{"type":"object","properties":{"city":{"type":"string"}},"required":["city"]}',
        ),
        ToolSpec("get_time", "", '{"type":"object"}'),
    ]
    assert (request.tool_choice, request.parallel_tool_calls) == (ToolChoice("auto"), True)


@pytest.mark.parametrize(
    ("choice", "expected", "parallel"),
    [
        ({"type": "auto"}, ToolChoice("auto"), True),
        ({"type": "any", "disable_parallel_tool_use": True}, ToolChoice("required"), False),
        ({"type": "tool", "name": "get_time"}, ToolChoice("named", "get_time"), True),
        ({"type": "none"}, ToolChoice("none"), True),
        ({"type": "auto", "disable_parallel_tool_use": False}, ToolChoice("auto"), True),
    ],
)
def test_parse_tool_choice(choice: dict[str, Any], expected: ToolChoice, parallel: bool) -> None:
    """auto / any / tool / none map to auto / required / named / none; disable_parallel_tool_use to one call."""
    request = _parse(tools=[WEATHER, TIME], tool_choice=choice).request
    assert (request.tool_choice, request.parallel_tool_calls) == (expected, parallel)


def test_parse_refuses_a_named_tool_that_is_not_declared() -> None:
    """tool_choice naming an undeclared tool is a 400 naming tool_choice.name."""
    with pytest.raises(BadRequest) as caught:
        _parse(tools=[WEATHER], tool_choice={"type": "tool", "name": "nope"})
    assert caught.value.param == "tool_choice.name"


def test_parse_tool_use_and_tool_result_blocks() -> None:
    """tool_use blocks become the assistant's calls (input as compact JSON); tool_result blocks (string or block
    content, is_error) become tool messages named after their call, before the user's own text."""
    messages = [
        {"role": "user", "content": "Weather in Paris and the time?"},
        {
            "role": "assistant",
            "content": [
                {"type": "thinking", "thinking": "hm", "signature": "x"},
                {"type": "text", "text": "Checking."},
                {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}},
                {"type": "tool_use", "id": "toolu_2", "name": "get_time", "input": {}},
            ],
        },
        {
            "role": "user",
            "content": [
                {
                    "type": "tool_result",
                    "tool_use_id": "toolu_1",
                    "content": "18C",
                    "cache_control": {"type": "ephemeral"},
                },
                {
                    "type": "tool_result",
                    "tool_use_id": "toolu_2",
                    "content": [{"type": "text", "text": "clock broken"}, {"type": "image", "source": {}}],
                    "is_error": True,
                },
                {"type": "text", "text": "Thanks"},
            ],
        },
    ]
    assert _parse(messages=messages, tools=[WEATHER, TIME]).request.messages == [
        Message("user", "Weather in Paris and the time?"),
        Message(
            "assistant",
            [TextPart("Checking.")],
            tool_calls=[
                ToolCall("toolu_1", "get_weather", '{"city":"Paris"}'),
                ToolCall("toolu_2", "get_time", "{}"),
            ],
        ),
        Message("tool", "18C", tool_call_id="toolu_1", name="get_weather"),
        Message(
            "tool",
            [TextPart("clock broken"), TextPart("[image]")],
            tool_call_id="toolu_2",
            name="get_time",
            is_error=True,
        ),
        Message("user", [TextPart("Thanks")]),
    ]


def test_parse_accepts_a_request_whose_only_text_is_a_tool_result() -> None:
    """A user turn of tool results alone is not refused by the no-text check, even with an empty result."""
    messages = [
        {"role": "user", "content": "go"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "get_time", "input": {}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1"}]},
    ]
    request = _parse(messages=messages, tools=[TIME]).request
    assert request.messages[-1] == Message("tool", "", tool_call_id="t1", name="get_time")


def test_parse_a_body_shaped_like_claude_codes_first_request() -> None:
    """Claude Code 2.x's first request (spec §7.1) parses: a role system message mid-conversation is system text
    at its place, adaptive thinking shows reasoning, and output_config, context_management, metadata,
    cache_control and 21 tools are accepted."""
    body = {
        "model": "kimi-k2.5-instant",
        "max_tokens": 32000,
        "stream": True,
        "system": [
            {"type": "text", "text": "You are Claude Code.", "cache_control": {"type": "ephemeral"}},
            {"type": "text", "text": "Be concise."},
        ],
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "<system-reminder>context</system-reminder>"},
                    {"type": "text", "text": "say hello", "cache_control": {"type": "ephemeral"}},
                ],
            },
            {
                "role": "system",
                "content": [
                    {"type": "text", "text": "Environment: linux", "cache_control": {"type": "ephemeral"}}
                ],
            },
        ],
        "tools": CLAUDE_CODE_TOOLS,
        "metadata": {"user_id": "user_abc_account__session_1"},
        "thinking": {"type": "adaptive", "display": "omitted"},
        "context_management": {"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]},
        "output_config": {"effort": "high"},
        "cache_control": {"type": "ephemeral"},
    }
    request, reply = DIALECT.parse(json.dumps(body).encode(), RequestContext("req1", query={"beta": "true"}))
    assert request.messages == [
        Message("system", [TextPart("You are Claude Code."), TextPart("Be concise.")]),
        Message("user", [TextPart("<system-reminder>context</system-reminder>"), TextPart("say hello")]),
        Message("system", [TextPart("Environment: linux")]),
    ]
    assert [t.name for t in request.tools] == [t["name"] for t in CLAUDE_CODE_TOOLS]
    assert request.tools[5].name == "Read"
    assert json.loads(request.tools[5].parameters) == CLAUDE_CODE_TOOLS[5]["input_schema"]
    assert (request.stream, reply.show_reasoning, reply.max_tokens) == (True, True, 32000)


@pytest.mark.parametrize(
    ("thinking", "shown"),
    [
        ({"type": "adaptive"}, True),
        ({"type": "enabled", "budget_tokens": 2048}, True),
        ({"type": "disabled"}, False),
    ],
)
def test_thinking_types_show_or_hide_reasoning(thinking: dict[str, Any], shown: bool) -> None:
    """thinking adaptive and enabled show reasoning; disabled hides it."""
    assert _parse(thinking=thinking).reply.show_reasoning is shown


def test_mid_conversation_system_block_and_string_system_message() -> None:
    """A `mid_conv_system` block and a `role: system` message with string content are system messages in place."""
    messages = [
        {"role": "user", "content": "a"},
        {"role": "system", "content": "rules"},
        {
            "role": "user",
            "content": [
                {"type": "mid_conv_system", "content": [{"type": "text", "text": "more"}]},
                {"type": "text", "text": "b"},
            ],
        },
    ]
    assert _parse(messages=messages).request.messages == [
        Message("user", "a"),
        Message("system", "rules"),
        Message("system", [TextPart("more")]),
        Message("user", [TextPart("b")]),
    ]


# ---------------------------------------------------------------- render

START = (
    'event: message_start\ndata: {"type":"message_start","message":{"type":"message","id":"msg_req1",'
    '"role":"assistant","model":"kimi-k2.5-instant","content":[],"stop_reason":null,"stop_sequence":null,'
)


def test_stream_tool_use_blocks_exact_bytes() -> None:
    """Each call is content_block_start (tool_use, input {}), one input_json_delta, content_block_stop; the
    message ends with stop_reason tool_use."""
    out = _render(TWO_CALLS, stream=True)
    assert out.startswith(START.encode())
    assert out[out.index(b"event: content_block_start") :] == (
        _frame(
            "content_block_start",
            '{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}',
        )
        + _frame(
            "content_block_delta",
            '{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Checking."}}',
        )
        + _frame("content_block_stop", '{"type":"content_block_stop","index":0}')
        + _frame(
            "content_block_start",
            '{"type":"content_block_start","index":1,"content_block":'
            '{"type":"tool_use","id":"call_req1_0","name":"get_weather","input":{}}}',
        )
        + _frame(
            "content_block_delta",
            '{"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"{\\"city\\":\\"Paris\\"}"}}',
        )
        + _frame("content_block_stop", '{"type":"content_block_stop","index":1}')
        + _frame(
            "content_block_start",
            '{"type":"content_block_start","index":2,"content_block":'
            '{"type":"tool_use","id":"call_req1_1","name":"get_time","input":{}}}',
        )
        + _frame(
            "content_block_delta",
            '{"type":"content_block_delta","index":2,"delta":{"type":"input_json_delta","partial_json":"{}"}}',
        )
        + _frame("content_block_stop", '{"type":"content_block_stop","index":2}')
        + _frame(
            "message_delta",
            '{"type":"message_delta","delta":{"stop_reason":"tool_use","stop_sequence":null},'
            '"usage":{"input_tokens":5,"output_tokens":7}}',
        )
        + _frame("message_stop", '{"type":"message_stop"}')
    )


def test_non_stream_tool_use_blocks_exact_bytes() -> None:
    """The body holds the text block then tool_use blocks with input objects, and stop_reason tool_use."""
    out = _render(TWO_CALLS, stream=False)
    assert out == (
        b'{"type":"message","id":"msg_req1","role":"assistant","model":"kimi-k2.5-instant","content":['
        b'{"type":"text","text":"Checking."},'
        b'{"type":"tool_use","id":"call_req1_0","name":"get_weather","input":{"city":"Paris"}},'
        b'{"type":"tool_use","id":"call_req1_1","name":"get_time","input":{}}],'
        b'"stop_reason":"tool_use","stop_sequence":null,"usage":{"input_tokens":5,"output_tokens":7}}'
    )


def test_the_sdk_accumulator_rebuilds_the_non_stream_message() -> None:
    """The SDK's SSE decoder and accumulate_event, fed our stream, give the same content as the body."""
    snapshot = None
    for sse in SSEDecoder().iter_bytes(iter([_render(TWO_CALLS, stream=True)])):
        snapshot = accumulate_event(event=sse.json(), current_snapshot=snapshot, json_bufs={})
    whole = SdkMessage.model_validate_json(_render(TWO_CALLS, stream=False))
    assert snapshot is not None
    assert [b.model_dump() for b in snapshot.content] == [b.model_dump() for b in whole.content]
    assert snapshot.stop_reason == whole.stop_reason == "tool_use"


def test_server_tool_blocks_in_the_history_are_left_out() -> None:
    """Blocks of Anthropic's server tools in a history are accepted and left out; a tool_reference inside a
    tool_result reads as a placeholder."""
    messages = [
        {"role": "user", "content": "search"},
        {
            "role": "assistant",
            "content": [
                {
                    "type": "server_tool_use",
                    "id": "srvtoolu_1",
                    "name": "web_search",
                    "input": {"query": "x"},
                },
                {"type": "web_search_tool_result", "tool_use_id": "srvtoolu_1", "content": []},
                {"type": "text", "text": "Found."},
                {"type": "tool_use", "id": "toolu_1", "name": "get_time", "input": {}},
            ],
        },
        {
            "role": "user",
            "content": [
                {
                    "type": "tool_result",
                    "tool_use_id": "toolu_1",
                    "content": [{"type": "tool_reference", "tool_name": "x"}],
                },
                {"type": "container_upload", "file_id": "f1"},
            ],
        },
    ]
    assert _parse(messages=messages, tools=[TIME]).request.messages[1:] == [
        Message("assistant", [TextPart("Found.")], tool_calls=[ToolCall("toolu_1", "get_time", "{}")]),
        Message("tool", [TextPart("[tool reference]")], tool_call_id="toolu_1", name="get_time"),
    ]
