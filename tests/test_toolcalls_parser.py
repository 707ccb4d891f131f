"""The streaming behaviour of the tool-call parser: what leaves at once, what is held, ids and messages."""

from __future__ import annotations

import json

import pytest

from shared.schema import ChatRequest, Message, ToolChoice, ToolSpec
from upstream_worker.toolcalls import ToolCallParser, ToolSet, parse_answer

SECTION = "<|tool_calls_section_begin|>"
CALL = "<|tool_call_begin|>functions.{name}:{index}<|tool_call_argument_begin|>{args}<|tool_call_end|>"
END = "<|tool_calls_section_end|>"
WEATHER = ToolSpec(
    "get_weather",
    "Current weather.",
    '{"type":"object","properties":{"city":{"type":"string"},"days":{"type":"integer"}},"required":["city"]}',
)
WRITE = ToolSpec(
    "Write",
    "Writes a file.",
    '{"type":"object","properties":{"file_path":{"type":"string"},"content":{"type":"string"}},'
    '"required":["file_path","content"]}',
)
TOOLS = ToolSet([WEATHER, WRITE])


def call(name: str, index: int, args: str) -> str:
    return CALL.format(name=name, index=index, args=args)


def test_prose_streams_at_once() -> None:
    """Text that cannot begin a marker is returned by the very feed that brought it."""
    parser = ToolCallParser(TOOLS)
    assert parser.feed("Let me check the weather.") == "Let me check the weather."
    assert parser.feed(" One moment please.") == " One moment please."


@pytest.mark.parametrize(
    ("first", "held_out", "second", "released"),
    [
        ("It is <", "It is", "b", " <b"),  # `<` could begin `<|`; released once the next char rules it out
        ("It is <|tool_ca", "It is", "ll me", " <|tool_call me"),  # a marker prefix that never completes
        ("See func", "See", "tional", " functional"),  # `func` could begin `functions.`
        ("a\n``", "a", "x", "\n``x"),  # two backticks could begin a fence
        ("Hello  \n", "Hello", "world", "  \nworld"),  # trailing whitespace waits for what follows
    ],
)
def test_possible_markers_are_held_then_released(
    first: str, held_out: str, second: str, released: str
) -> None:
    """A tail that could still become a trigger is held back and released whole once it cannot."""
    parser = ToolCallParser(TOOLS)
    assert parser.feed(first) == held_out
    assert parser.feed(second) == released
    result = parser.finish()
    assert (result.content, result.calls, result.failure) == ("", [], None)


def test_nothing_of_a_call_leaves_before_the_end() -> None:
    """While a call streams, feed returns nothing; the call comes whole from finish()."""
    parser = ToolCallParser(TOOLS)
    text = "Sure." + SECTION + call("get_weather", 0, '{"city": "Paris"}') + END
    outputs = [parser.feed(ch) for ch in text]
    assert "".join(outputs) == "Sure."
    assert outputs[len("Sure.") :] == [""] * (len(text) - len("Sure."))
    result = parser.finish()
    assert [(p.call.name, p.call.arguments) for p in result.calls] == [("get_weather", '{"city":"Paris"}')]


def test_client_ids_come_from_the_prefix_and_native_ids_from_the_answer() -> None:
    """Call ids are `id_prefix` + position; native ids keep Kimi's index, or take `first_index` + position."""
    text = (
        SECTION
        + call("get_weather", 7, '{"city": "A"}')
        + END
        + "functions.Write{"
        + '"file_path": "/a", "content": ""}'
    )
    parser = ToolCallParser(TOOLS, id_prefix="call_r1_", first_index=7)
    parser.feed(text)
    result = parser.finish()
    assert [(p.call.id, p.native_id, p.format) for p in result.calls] == [
        ("call_r1_0", "functions.get_weather:7", "native"),
        ("call_r1_1", "functions.Write:8", "simple"),
    ]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            '{"days": 2}',
            "the arguments of get_weather do not fit its schema: $.city: required property is missing",
        ),
        (
            '{"city": "A", "days": 1.5}',
            "the arguments of get_weather do not fit its schema: $.days: expected integer, got number",
        ),
        ('{"city": "A"', "the arguments of get_weather are not valid JSON (Input data was truncated)"),
        ('"A"', "the arguments of get_weather are not a JSON object"),
    ],
)
def test_failure_messages_name_the_tool_and_the_path(args: str, message: str) -> None:
    """A failure's message says which tool and which argument is wrong (it goes into the correction text)."""
    _, result = parse_answer(TOOLS, SECTION + call("get_weather", 0, args) + END)
    assert result.failure is not None
    assert (result.failure.message, result.failure.tool, result.failure.format) == (
        message,
        "functions.get_weather:0",
        "native",
    )
    assert result.calls == []


def test_content_after_a_failure_still_streams() -> None:
    """A bad call does not swallow the prose after it, and a failed answer publishes no call."""
    content, result = parse_answer(TOOLS, [SECTION, call("nope", 0, "{}"), END, "\n\nI could not do it."])
    assert content == "I could not do it."
    assert result.failure is not None and result.failure.kind == "unknown_tool"
    assert result.calls == []


def test_large_arguments_in_tiny_pieces() -> None:
    """A 400 KB argument fed four characters at a time is read whole (the parser is linear in the text)."""
    body = "line {}\n" * 50_000
    args = json.dumps({"file_path": "/big.txt", "content": body})
    text = "Writing it.\n" + SECTION + call("Write", 0, args) + END
    _, result = parse_answer(TOOLS, [text[i : i + 4] for i in range(0, len(text), 4)])
    assert json.loads(result.calls[0].call.arguments)["content"] == body


def test_long_fenced_line_in_tiny_pieces() -> None:
    """A fence holding one 200 KB line fed a character at a time passes through unchanged."""
    text = "```\n" + "x" * 200_000 + "\n```\nok"
    content, result = parse_answer(TOOLS, list(text))
    assert content == text
    assert result.calls == []


def test_for_request_takes_choice_and_parallel_from_the_request() -> None:
    """`for_request` applies the request's tools, `tool_choice` and `parallel_tool_calls`."""
    request = ChatRequest(
        request_id="r",
        model="kimi-k2",
        messages=[Message(role="user", content="hi")],
        tools=[WEATHER],
        tool_choice=ToolChoice(mode="required"),
        parallel_tool_calls=False,
    )
    parser = ToolCallParser.for_request(request, id_prefix="c")
    parser.feed("no call")
    assert parser.finish().failure is not None
    parser = ToolCallParser.for_request(request, id_prefix="c")
    parser.feed(
        SECTION + call("get_weather", 0, '{"city": "A"}') + call("get_weather", 1, '{"city": "B"}') + END
    )
    failure = parser.finish().failure
    assert failure is not None and failure.kind == "too_many_calls"
    assert failure.message == "2 tools were called although at most one call is allowed"
