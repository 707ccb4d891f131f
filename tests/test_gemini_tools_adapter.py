"""Gemini function calling as tables: declarations, toolConfig, functionCall / functionResponse parts (both
casings) in → canonical request; calls out → exact bytes that google-genai reads back as the same calls."""

from __future__ import annotations

import json
from typing import Any

import pytest
from google.genai import types

from adapters import gemini
from adapters.base import Parsed, RequestContext
from shared.errors import BadRequest
from shared.schema import (
    Done,
    Event,
    Message,
    TextDelta,
    ToolCall,
    ToolCallEvent,
    ToolChoice,
    ToolSpec,
    Usage,
)

WEATHER_SCHEMA = {
    "type": "object",
    "properties": {"city_name": {"type": "string"}},
    "required": ["city_name"],
}


def _ctx(*, stream: bool = False, sse: bool = True) -> RequestContext:
    return RequestContext(
        "req1", path_model="kimi-k2.5-instant", query={"alt": "sse"} if sse else {}, stream=stream
    )


def _parse(**fields: Any) -> Parsed:
    body: dict[str, Any] = {"contents": [{"role": "user", "parts": [{"text": "Hi"}]}], **fields}
    return gemini.DIALECT.parse(json.dumps(body).encode(), _ctx())


def _render(events: list[Event], *, stream: bool, sse: bool = True) -> bytes:
    ctx = _ctx(stream=stream, sse=sse)
    request, reply = gemini.DIALECT.parse(
        json.dumps({"contents": [{"parts": [{"text": "Hi"}]}]}).encode(), ctx
    )
    renderer = gemini.DIALECT.renderer(request, reply, ctx)
    out = renderer.head() if stream else b""
    out += b"".join(renderer.feed(e) for e in events)
    return out if stream else renderer.body()


TOOLS = [
    {
        "functionDeclarations": [
            {"name": "get_weather", "description": "Current weather", "parametersJsonSchema": WEATHER_SCHEMA},
            {
                "name": "get_time",
                "parameters": {"type": "OBJECT", "properties": {"tz_name": {"type": "STRING"}}},
            },
        ]
    },
    {"googleSearch": {}},
]
CALL_A = ToolCall("call_req1_0", "get_weather", '{"city_name":"Paris"}')
CALL_B = ToolCall("call_req1_1", "get_time", "{}")
TWO_CALLS: list[Event] = [
    TextDelta("Checking."),
    ToolCallEvent(0, CALL_A),
    ToolCallEvent(1, CALL_B),
    Usage(5, 7),
    Done(finish_reason="tool_calls"),
]


def _response(parts: str, tail: str = "") -> str:
    return '{"candidates":[{"content":{"parts":[' + parts + '],"role":"model"},"index":0' + tail + "}]"


# ---------------------------------------------------------------- parse


def test_parse_declarations_in_both_schema_fields_and_casings() -> None:
    """parametersJsonSchema and parameters (any casing of the field) become ToolSpecs; property names keep their
    snake_case; built-in tools declare nothing."""
    expected = [
        ToolSpec("get_weather", "Current weather", json.dumps(WEATHER_SCHEMA, separators=(",", ":"))),
        ToolSpec("get_time", "", '{"type":"OBJECT","properties":{"tz_name":{"type":"STRING"}}}'),
    ]
    assert _parse(tools=TOOLS).request.tools == expected
    snake = [
        {
            "function_declarations": [
                {
                    "name": "get_weather",
                    "description": "Current weather",
                    "parameters_json_schema": WEATHER_SCHEMA,
                },
                {
                    "name": "get_time",
                    "parameters": {"type": "OBJECT", "properties": {"tz_name": {"type": "STRING"}}},
                },
            ]
        }
    ]
    assert _parse(tools=snake).request.tools == expected


def test_schema_keywords_are_camel_cased_but_property_names_are_not() -> None:
    """A snake_case schema keyword (any_of) becomes anyOf; property names and enum values stay as written."""
    schema = {
        "type": "OBJECT",
        "properties": {"max_rows": {"any_of": [{"type": "INTEGER"}], "enum": ["a_b"]}},
    }
    tools = [{"function_declarations": [{"name": "q", "parameters": schema}]}]
    assert json.loads(_parse(tools=tools).request.tools[0].parameters) == {
        "type": "OBJECT",
        "properties": {"max_rows": {"anyOf": [{"type": "INTEGER"}], "enum": ["a_b"]}},
    }


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ({"mode": "AUTO"}, ToolChoice("auto")),
        ({"mode": "VALIDATED"}, ToolChoice("auto")),
        ({"mode": "NONE"}, ToolChoice("none")),
        ({"mode": "ANY"}, ToolChoice("required")),
        ({"mode": "ANY", "allowedFunctionNames": ["get_time"]}, ToolChoice("named", "get_time")),
        (
            {"mode": "any", "allowed_function_names": ["get_time", "get_weather"]},
            ToolChoice("required", allowed=["get_time", "get_weather"]),
        ),
        ({"mode": "AUTO", "allowedFunctionNames": ["get_time"]}, ToolChoice("auto", allowed=["get_time"])),
    ],
)
def test_parse_function_calling_config(config: dict[str, Any], expected: ToolChoice) -> None:
    """AUTO / VALIDATED / NONE / ANY and allowed names map to the canonical choice (ANY with one name: named)."""
    assert _parse(tools=TOOLS, toolConfig={"functionCallingConfig": config}).request.tool_choice == expected
    snake = {"function_calling_config": config}
    assert _parse(tools=TOOLS, tool_config=snake).request.tool_choice == expected


def test_parse_refuses_an_unknown_mode_or_name() -> None:
    """An unknown mode or an undeclared allowed name is a 400."""
    for config in ({"mode": "SOMETIMES"}, {"mode": "ANY", "allowedFunctionNames": ["nope"]}):
        with pytest.raises(BadRequest):
            _parse(tools=TOOLS, toolConfig={"functionCallingConfig": config})


def test_parse_function_calls_and_responses_matched_by_id_or_name() -> None:
    """functionCall parts become the model's calls (an id made up when absent, args keys as written);
    functionResponse parts become tool messages matched by id, else by name; `error` marks an error result."""
    contents = [
        {"role": "user", "parts": [{"text": "Weather and time?"}]},
        {
            "role": "model",
            "parts": [
                {"functionCall": {"id": "fc_1", "name": "get_weather", "args": {"city_name": "Paris"}}},
                {"function_call": {"name": "get_time", "args": {}}, "thoughtSignature": "c2ln"},
            ],
        },
        {
            "role": "user",
            "parts": [
                {"function_response": {"name": "get_time", "response": {"error": "clock_broken"}}},
                {
                    "functionResponse": {
                        "id": "fc_1",
                        "name": "get_weather",
                        "response": {"output": {"temp_c": 18}},
                    }
                },
            ],
        },
    ]
    assert _parse(contents=contents, tools=TOOLS).request.messages == [
        Message("user", "Weather and time?"),
        Message(
            "assistant",
            "",
            tool_calls=[
                ToolCall("fc_1", "get_weather", '{"city_name":"Paris"}'),
                ToolCall("call_1", "get_time", "{}"),
            ],
        ),
        Message("tool", '{"error":"clock_broken"}', tool_call_id="call_1", name="get_time", is_error=True),
        Message("tool", '{"output":{"temp_c":18}}', tool_call_id="fc_1", name="get_weather"),
    ]


# ---------------------------------------------------------------- render


def test_sse_stream_function_call_parts_exact_bytes() -> None:
    """Each call is one chunk with a whole functionCall part (id, name, args object); the last chunk says STOP."""
    out = _render(TWO_CALLS, stream=True)
    tail = ',"modelVersion":"kimi-k2.5-instant","responseId":"req1"}'
    assert out == (
        b"data: " + (_response('{"text":"Checking."}') + tail).encode() + b"\n\n"
        b"data: "
        + (
            _response(
                '{"functionCall":{"id":"call_req1_0","name":"get_weather","args":{"city_name":"Paris"}}}'
            )
            + tail
        ).encode()
        + b"\n\n"
        b"data: "
        + (_response('{"functionCall":{"id":"call_req1_1","name":"get_time","args":{}}}') + tail).encode()
        + b"\n\n"
        b"data: "
        + (
            _response('{"text":""}', ',"finishReason":"STOP"')
            + ',"usageMetadata":{"promptTokenCount":5,"candidatesTokenCount":7,"totalTokenCount":12}'
            + tail
        ).encode()
        + b"\n\n"
    )


def test_non_stream_body_has_text_then_function_calls() -> None:
    """The body's parts are the text then each functionCall, finishReason STOP."""
    out = _render(TWO_CALLS, stream=False)
    assert json.loads(out)["candidates"] == [
        {
            "content": {
                "parts": [
                    {"text": "Checking."},
                    {
                        "functionCall": {
                            "id": "call_req1_0",
                            "name": "get_weather",
                            "args": {"city_name": "Paris"},
                        }
                    },
                    {"functionCall": {"id": "call_req1_1", "name": "get_time", "args": {}}},
                ],
                "role": "model",
            },
            "index": 0,
            "finishReason": "STOP",
        }
    ]


def test_an_answer_of_calls_alone_has_no_text_part() -> None:
    """Without answer text the body holds only functionCall parts."""
    out = _render([ToolCallEvent(0, CALL_B), Done(finish_reason="tool_calls")], stream=False)
    assert json.loads(out)["candidates"][0]["content"]["parts"] == [
        {"functionCall": {"id": "call_req1_1", "name": "get_time", "args": {}}}
    ]


def _calls(
    response: types.GenerateContentResponse,
) -> list[tuple[str | None, str | None, dict[str, Any] | None]]:
    return [(c.id, c.name, c.args) for c in response.function_calls or []]


def test_google_genai_reads_the_same_calls_from_stream_and_body() -> None:
    """google-genai's response type yields the same function_calls from the JSON-array stream as from the body."""
    stream = json.loads(_render(TWO_CALLS, stream=True, sse=False))
    streamed = [
        call
        for chunk in stream
        for call in _calls(types.GenerateContentResponse._from_response(response=chunk, kwargs={}))
    ]
    whole = types.GenerateContentResponse._from_response(
        response=json.loads(_render(TWO_CALLS, stream=False)), kwargs={}
    )
    assert (
        streamed
        == _calls(whole)
        == [
            ("call_req1_0", "get_weather", {"city_name": "Paris"}),
            ("call_req1_1", "get_time", {}),
        ]
    )
