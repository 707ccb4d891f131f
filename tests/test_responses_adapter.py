"""The Responses API adapter as tables: request bytes → canonical request, canonical events → exact bytes."""

from __future__ import annotations

import json
from typing import Any

import pytest

from adapters import json_output
from adapters.base import Parsed, RequestContext
from adapters.responses import DIALECT
from shared.errors import BadRequest, UpstreamError, UpstreamRateLimited
from shared.schema import (
    Done,
    Event,
    Message,
    ReasoningDelta,
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
    "name": "get_weather",
    "description": "Current weather",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
}
WEATHER_SPEC = ToolSpec(
    "get_weather", "Current weather", '{"type":"object","properties":{"city":{"type":"string"}}}'
)


def _parse(**fields: Any) -> Parsed:
    body: dict[str, Any] = {"model": "kimi", "input": "hi", **fields}
    return DIALECT.parse(json.dumps(body).encode(), RequestContext("r1", now_s=CREATED))


def _render(events: list[Event], *, stream: bool, **fields: Any) -> bytes:
    request, reply = _parse(stream=stream, tools=[WEATHER], **fields)
    renderer = DIALECT.renderer(request, reply, RequestContext("r1", now_s=CREATED))
    out = b"".join(renderer.feed(e) for e in events)
    return out if stream else renderer.body()


def _events(raw: bytes) -> list[tuple[str, dict[str, Any]]]:
    """(event name, data) of every SSE frame, checking each name equals its data's `type`."""
    frames = []
    for frame in raw.decode().split("\n\n")[:-1]:
        name, data = frame.split("\n")
        payload = json.loads(data.removeprefix("data: "))
        assert name == f"event: {payload['type']}"
        frames.append((payload["type"], payload))
    return frames


def test_string_input_and_instructions() -> None:
    """A string input is one user message after the instructions' system message."""
    request, reply = _parse(instructions="Be brief.", max_output_tokens=5)
    assert request.messages == [
        Message(role="system", content="Be brief."),
        Message(role="user", content="hi"),
    ]
    assert request.dialect == "responses"
    assert reply.max_tokens == 5


def test_items_become_messages() -> None:
    """Message items of every role, a call and its output become canonical messages; reasoning items are skipped."""
    items = [
        {"type": "message", "role": "developer", "content": "rules"},
        {"role": "user", "content": [{"type": "input_text", "text": "Weather?"}]},
        {"type": "reasoning", "id": "rs_1", "summary": []},
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Let me see."}]},
        {"type": "function_call", "call_id": "c1", "name": "get_weather", "arguments": '{"city":"Paris"}'},
        {"type": "function_call", "call_id": "c2", "name": "get_weather", "arguments": '{"city":"Rome"}'},
        {"type": "function_call_output", "call_id": "c1", "output": "Sunny"},
        {"type": "function_call_output", "call_id": "c2", "output": [{"type": "input_text", "text": "Rain"}]},
    ]
    request, _ = _parse(input=items, tools=[WEATHER], tool_choice="required", parallel_tool_calls=False)
    assert request.messages == [
        Message(role="system", content="rules"),
        Message(role="user", content=[TextPart(text="Weather?")]),
        Message(
            role="assistant",
            content=[TextPart(text="Let me see.")],
            tool_calls=[
                ToolCall("c1", "get_weather", '{"city":"Paris"}'),
                ToolCall("c2", "get_weather", '{"city":"Rome"}'),
            ],
        ),
        Message(role="tool", content="Sunny", tool_call_id="c1"),
        Message(role="tool", content=[TextPart(text="Rain")], tool_call_id="c2"),
    ]
    assert request.tools == [WEATHER_SPEC]
    assert request.tool_choice == ToolChoice("required")
    assert request.parallel_tool_calls is False


def test_tools_search_and_ignored_builtins() -> None:
    """`web_search` turns on Kimi's search; Codex's `namespace`, `custom` and `local_shell` tools are ignored."""
    tools = [
        WEATHER,
        {"type": "web_search"},
        {"type": "namespace", "name": "x"},
        {"type": "custom", "name": "p"},
    ]
    request, _ = _parse(
        tools=[*tools, {"type": "local_shell"}], tool_choice={"type": "function", "name": "get_weather"}
    )
    assert request.tools == [WEATHER_SPEC]
    assert request.options.search is True
    assert request.tool_choice == ToolChoice("named", "get_weather")


@pytest.mark.parametrize(
    ("effort", "thinking"), [("none", False), ("minimal", False), ("low", True), ("high", True)]
)
def test_reasoning_effort_sets_thinking(effort: str, thinking: bool) -> None:
    """`reasoning.effort` none / minimal turns Kimi's thinking off, any other effort on."""
    request, _ = _parse(reasoning={"effort": effort, "summary": "auto"})
    assert request.options.thinking is thinking


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"input": None}, "input"),
        ({"input": [{"type": "item_reference", "id": "x"}]}, "input[0].type"),
        ({"input": [{"role": "robot", "content": "x"}]}, "input[0].role"),
        ({"input": [{"type": "function_call_output", "output": "x"}]}, "input[0].call_id"),
        ({"text": {"format": {"type": "xml"}}}, "text.format.type"),
        ({"text": {"format": {"type": "json_schema", "schema": {}}}}, "text.format.name"),
        ({"text": {"format": {"type": "json_schema", "name": "x"}}}, "text.format.schema"),
        ({"include": ["reasoning.encrypted_content", "message.thoughts"]}, "include"),
        ({"truncation": "sometimes"}, "truncation"),
        ({"max_output_tokens": 0}, "max_output_tokens"),
        ({"tool_choice": "sometimes", "tools": [WEATHER]}, "tool_choice"),
        (
            {"input": [{"role": "user", "content": [{"type": "input_image", "file_id": "f1"}]}]},
            "input[0].content[0]",
        ),
    ],
)
def test_invalid_fields_are_400s_naming_them(fields: dict[str, Any], param: str) -> None:
    """An invalid field is a 400 naming it."""
    with pytest.raises(BadRequest) as caught:
        _parse(**fields)
    assert caught.value.param == param
    assert caught.value.status == 400


def test_json_object_format_asks_for_json_and_cleans_the_body() -> None:
    """json_object: the hint follows the last user text; the non-stream text loses its code fence."""
    request, _ = _parse(text={"format": {"type": "json_object"}})
    assert request.messages == [
        Message(role="user", content=f"hi\n\n{json_output.hint('json_object')}"),
    ]
    events: list[Event] = [TextDelta(text='```json\n{"a": 1}\n```'), Done()]
    body = json.loads(_render(events, stream=False, text={"format": {"type": "json_object"}}))
    assert body["output"][0]["content"][0]["text"] == '{"a": 1}'
    assert body["text"] == {"format": {"type": "json_object"}}
    frames = _events(_render(events, stream=True, text={"format": {"type": "json_object"}}))
    assert frames[-1][1]["response"]["output"][0]["content"][0]["text"] == '```json\n{"a": 1}\n```'


def test_json_schema_format_sends_the_schema_and_is_echoed() -> None:
    """json_schema: the hint carries the schema as compact JSON (after a tool result, as a last system message);
    the format is echoed whole."""
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}}
    fmt = {"type": "json_schema", "name": "count", "schema": schema, "strict": True}
    items = [{"type": "function_call_output", "call_id": "c1", "output": "3"}]
    request, _ = _parse(input=items, text={"format": fmt})
    assert request.messages[-1] == Message(
        role="system",
        content=json_output.hint("json_schema", '{"type":"object","properties":{"n":{"type":"integer"}}}'),
    )
    body = json.loads(_render([TextDelta(text="not json"), Done()], stream=False, text={"format": fmt}))
    assert body["text"] == {"format": fmt}
    assert body["output"][0]["content"][0]["text"] == "not json"


def test_include_and_truncation_are_accepted() -> None:
    """Every `include` value the SDK knows is accepted and adds nothing; `truncation` is echoed."""
    include = [
        "reasoning.encrypted_content",
        "message.output_text.logprobs",
        "web_search_call.action.sources",
    ]
    events: list[Event] = [ReasoningDelta(text="t"), TextDelta(text="Hi"), Done()]
    body = json.loads(_render(events, stream=False, include=include, truncation="auto"))
    assert body["truncation"] == "auto"
    assert body["output"][0] == {
        "id": "rs_r1_0",
        "type": "reasoning",
        "summary": [{"type": "summary_text", "text": "t"}],
    }
    assert body["output"][1]["content"][0]["logprobs"] == []
    assert json.loads(_render(events, stream=False))["truncation"] == "disabled"


def test_unknown_fields_are_ignored() -> None:
    """Fields the gateway does not know (`store`, `include`, `prompt_cache_key`, …) are ignored."""
    request, _ = _parse(
        store=False, include=["reasoning.encrypted_content"], prompt_cache_key="k", service_tier="auto"
    )
    assert request.messages == [Message(role="user", content="hi")]


STREAM_EVENTS: list[Event] = [
    ReasoningDelta(text="think"),
    TextDelta(text="Hi"),
    ToolCallEvent(index=0, call=ToolCall("call_1", "get_weather", '{"city":"Paris"}')),
    Usage(prompt_tokens=3, completion_tokens=4),
    Done(finish_reason="tool_calls"),
]


def test_stream_bytes() -> None:
    """Reasoning, text and a call stream as the SDK's events, in order, each frame's name its `type`."""
    frames = _events(_render(STREAM_EVENTS, stream=True))
    assert [(name, data["sequence_number"]) for name, data in frames] == [
        (name, i)
        for i, name in enumerate(
            [
                "response.created",
                "response.in_progress",
                "response.output_item.added",
                "response.reasoning_summary_part.added",
                "response.reasoning_summary_text.delta",
                "response.reasoning_summary_text.done",
                "response.reasoning_summary_part.done",
                "response.output_item.done",
                "response.output_item.added",
                "response.content_part.added",
                "response.output_text.delta",
                "response.output_text.done",
                "response.content_part.done",
                "response.output_item.done",
                "response.output_item.added",
                "response.function_call_arguments.delta",
                "response.function_call_arguments.done",
                "response.output_item.done",
                "response.completed",
            ]
        )
    ]
    raw = _render(STREAM_EVENTS, stream=True)
    assert raw.split(b"\n\n")[10] == (
        b"event: response.output_text.delta\n"
        b'data: {"type":"response.output_text.delta","sequence_number":10,"item_id":"msg_r1_1","output_index":1,'
        b'"content_index":0,"delta":"Hi","logprobs":[]}'
    )
    assert raw.split(b"\n\n")[16] == (
        b"event: response.function_call_arguments.done\n"
        b'data: {"type":"response.function_call_arguments.done","sequence_number":16,"item_id":"fc_r1_0",'
        b'"output_index":2,"name":"get_weather","arguments":"{\\"city\\":\\"Paris\\"}"}'
    )
    completed = frames[-1][1]["response"]
    assert completed == json.loads(_render(STREAM_EVENTS, stream=False))


def test_non_stream_body() -> None:
    """The whole response: a reasoning summary, a message, a call, usage with reasoning tokens."""
    body = json.loads(_render(STREAM_EVENTS, stream=False))
    assert body["id"] == "resp_r1"
    assert body["status"] == "completed"
    assert body["created_at"] == CREATED
    assert body["output"] == [
        {"id": "rs_r1_0", "type": "reasoning", "summary": [{"type": "summary_text", "text": "think"}]},
        {
            "id": "msg_r1_1",
            "type": "message",
            "status": "completed",
            "role": "assistant",
            "content": [{"type": "output_text", "annotations": [], "logprobs": [], "text": "Hi"}],
        },
        {
            "id": "fc_r1_0",
            "type": "function_call",
            "status": "completed",
            "arguments": '{"city":"Paris"}',
            "call_id": "call_1",
            "name": "get_weather",
        },
    ]
    assert body["usage"] == {
        "input_tokens": 3,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": 4,
        "output_tokens_details": {"reasoning_tokens": 2},
        "total_tokens": 7,
    }


def test_cut_by_max_output_tokens_is_incomplete() -> None:
    """An answer cut by `max_output_tokens` ends `incomplete` with reason max_output_tokens, stream and non-stream."""
    events: list[Event] = [
        TextDelta(text="one two three four five six seven eight"),
        Done(finish_reason="stop"),
    ]
    body = json.loads(_render(events, stream=False, max_output_tokens=2))
    assert (body["status"], body["incomplete_details"]) == ("incomplete", {"reason": "max_output_tokens"})
    frames = _events(_render(events, stream=True, max_output_tokens=2))
    assert frames[-1][0] == "response.incomplete"
    assert frames[-1][1]["response"]["incomplete_details"] == {"reason": "max_output_tokens"}


def test_error_after_first_byte_is_response_failed_then_error() -> None:
    """An error after the first byte is `response.failed` (the open message `incomplete`, the error's code of the
    SDK's list) then the `error` event, flat fields and the nested error object; never a completion."""
    request, reply = _parse(stream=True)
    renderer = DIALECT.renderer(request, reply, RequestContext("r1", now_s=CREATED))
    out = renderer.feed(TextDelta(text="Hi")) + renderer.error(UpstreamError("Kimi failed."))
    frames = _events(out)
    assert [name for name, _ in frames[-2:]] == ["response.failed", "error"]
    failed = frames[-2][1]["response"]
    assert (failed["status"], failed["error"]) == (
        "failed",
        {"code": "server_error", "message": "Kimi failed."},
    )
    assert failed["output"] == [
        {
            "id": "msg_r1_0",
            "type": "message",
            "status": "incomplete",
            "role": "assistant",
            "content": [{"type": "output_text", "annotations": [], "logprobs": [], "text": "Hi"}],
        }
    ]
    assert frames[-1][1] == {
        "type": "error",
        "sequence_number": frames[-2][1]["sequence_number"] + 1,
        "code": "upstream_error",
        "message": "Kimi failed.",
        "param": None,
        "error": {"message": "Kimi failed.", "type": "server_error", "param": None, "code": "upstream_error"},
    }
    assert "response.completed" not in [name for name, _ in frames]


def test_rate_limit_failure_code() -> None:
    """A rate limit after the first byte fails the response with `rate_limit_exceeded`, the code Codex retries."""
    request, reply = _parse(stream=True)
    renderer = DIALECT.renderer(request, reply, RequestContext("r1", now_s=CREATED))
    frames = _events(renderer.feed(TextDelta(text="Hi")) + renderer.error(UpstreamRateLimited("Slow down.")))
    assert frames[-2][1]["response"]["error"] == {"code": "rate_limit_exceeded", "message": "Slow down."}


def test_error_response_shape() -> None:
    """Errors before the first byte take OpenAI's error object and the error's status."""
    status, headers, body = DIALECT.error_response(BadRequest("bad", param="input"), "r1")
    assert (status, headers) == (400, {})
    assert json.loads(body) == {
        "error": {"message": "bad", "type": "invalid_request_error", "param": "input", "code": None}
    }


def test_image_and_file_parts_become_attachments() -> None:
    """`input_image` and `input_file` parts leave the text and become attachments at their places."""
    ctx = RequestContext("r1", now_s=CREATED)
    content = [
        {"type": "input_text", "text": "Compare"},
        {"type": "input_image", "image_url": "https://example.com/a.png"},
        {"type": "input_file", "filename": "n.txt", "file_data": "data:text/plain;base64,aGk="},
    ]
    body = {"model": "kimi", "instructions": "x", "input": [{"role": "user", "content": content}]}
    request, _ = DIALECT.parse(json.dumps(body).encode(), ctx)
    assert request.messages[1] == Message(role="user", content=[TextPart(text="Compare")])
    assert [
        (a.param, a.message_index, a.part_index, a.kind, a.url, a.data, a.name) for a in ctx.attachments
    ] == [
        ("input[0].content[1]", 1, 1, "image", "https://example.com/a.png", None, None),
        ("input[0].content[2]", 1, 2, None, None, b"hi", "n.txt"),
    ]
