"""Table tests of the official API's sans-IO decoder: SSE bytes in, canonical events out."""

from __future__ import annotations

import itertools
import json
from typing import Any

import pytest

from shared.errors import ContentFiltered, GatewayError, UpstreamQuotaExhausted, UpstreamRateLimited
from shared.schema import Done, Event, ReasoningDelta, TextDelta, ToolCall, ToolCallEvent, Usage
from upstream_worker.kimi.sse import SseDecoder
from upstream_worker.moonshot.events import CompletionStream


def chunk(delta: dict[str, Any] | None = None, finish: str | None = None, **extra: Any) -> dict[str, Any]:
    choice: dict[str, Any] = {"index": 0, "delta": delta or {}, "finish_reason": finish, **extra}
    return {
        "id": "cmpl-1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "kimi-k3",
        "choices": [choice],
    }


def sse(*chunks: dict[str, Any] | str) -> bytes:
    lines = [f"data: {c if isinstance(c, str) else json.dumps(c, ensure_ascii=False)}\n\n" for c in chunks]
    return "".join(lines).encode()


def decode(
    body: bytes, cuts: list[int] | None = None, max_calls: int | None = None
) -> tuple[list[Event], CompletionStream]:
    """Feed `body` split at `cuts` (byte offsets) through the SSE decoder and the completion decoder."""
    edges = [0, *(cuts or []), len(body)]
    decoder, stream, out = SseDecoder(), CompletionStream(max_calls), []
    for start, end in itertools.pairwise(edges):
        for payload in decoder.feed(body[start:end]):
            stream.feed(payload, out)
    for payload in decoder.close():
        stream.feed(payload, out)
    return out, stream


USAGE = {"prompt_tokens": 19, "completion_tokens": 13, "total_tokens": 32}
ANSWER = sse(
    chunk({"role": "assistant", "content": ""}),
    chunk({"reasoning_content": "想一想"}),
    chunk({"content": "你好"}),
    chunk({"content": "😀!"}),
    chunk({}, "stop", usage=USAGE),
    "[DONE]",
)
EXPECTED = [
    ReasoningDelta("想一想"),
    TextDelta("你好"),
    TextDelta("😀!"),
    Usage(19, 13, estimated=False),
    Done("stop"),
]


def test_answer_with_usage_in_the_choice() -> None:
    """Reasoning and text deltas, then the real usage from choices[0].usage and Done(stop) at [DONE]."""
    events, stream = decode(ANSWER)
    assert events == EXPECTED and stream.done and stream.drift.counts == {}


@pytest.mark.parametrize("cut", range(1, len(ANSWER)))
def test_every_split_of_the_body(cut: int) -> None:
    """The body cut at any byte (inside a line, a JSON string or a character) decodes to the same events."""
    assert decode(ANSWER, [cut])[0] == EXPECTED


def test_byte_by_byte() -> None:
    """One byte per TCP chunk still gives the same events, with no U+FFFD."""
    assert decode(ANSWER, list(range(1, len(ANSWER))))[0] == EXPECTED


@pytest.mark.parametrize(
    "body",
    [
        # stream_options.include_usage: usage null on the chunks, then one chunk with no choices.
        sse(
            {**chunk({"content": "hi"}), "usage": None},
            {**chunk({}, "stop"), "usage": None},
            {
                "id": "cmpl-1",
                "object": "chat.completion.chunk",
                "created": 1,
                "model": "m",
                "choices": [],
                "usage": USAGE,
            },
            "[DONE]",
        ),
        # usage at the top of the finishing chunk.
        sse(chunk({"content": "hi"}), {**chunk({}, "stop"), "usage": USAGE}, "[DONE]"),
        # usage inside the finishing choice (no stream_options, §3.3).
        sse(chunk({"content": "hi"}), chunk({}, "stop", usage=USAGE), "[DONE]"),
    ],
)
def test_usage_variants(body: bytes) -> None:
    """Every place the spec puts the usage gives the same real Usage, before Done."""
    events, _ = decode(body)
    assert events == [TextDelta("hi"), Usage(19, 13, estimated=False), Done("stop")]


def test_tool_call_fragments_gathered_by_index() -> None:
    """Interleaved fragments of two calls are gathered by index and published whole, in order, before Done."""
    body = sse(
        chunk({"role": "assistant", "content": ""}),
        chunk(
            {
                "tool_calls": [
                    {
                        "index": 0,
                        "id": "get_weather:0",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": ""},
                    }
                ]
            }
        ),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"city":'}}]}),
        chunk(
            {
                "tool_calls": [
                    {"index": 1, "id": "get_time:1", "type": "function", "function": {"name": "get_time"}}
                ]
            }
        ),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": '"巴黎"}'}}]}),
        chunk({"tool_calls": [{"index": 1, "function": {"arguments": "{}"}}]}),
        chunk({}, "tool_calls"),
        "[DONE]",
    )
    events, _ = decode(body)
    assert events == [
        ToolCallEvent(0, ToolCall("get_weather:0", "get_weather", '{"city":"巴黎"}')),
        ToolCallEvent(1, ToolCall("get_time:1", "get_time", "{}")),
        Done("tool_calls"),
    ]


def test_no_parallel_calls_publishes_the_first_only() -> None:
    """With parallel tool calls off, only the answer's first call is published."""
    body = sse(
        chunk({"tool_calls": [{"index": 0, "id": "a:0", "function": {"name": "a", "arguments": "{}"}}]}),
        chunk({"tool_calls": [{"index": 1, "id": "b:1", "function": {"name": "b", "arguments": "{}"}}]}),
        chunk({}, "tool_calls"),
        "[DONE]",
    )
    events, _ = decode(body, max_calls=1)
    assert events == [ToolCallEvent(0, ToolCall("a:0", "a", "{}")), Done("tool_calls")]


def test_calls_published_at_done_without_finish_reason() -> None:
    """Calls whose choice never finished are published at [DONE], and Done says tool_calls."""
    body = sse(chunk({"tool_calls": [{"index": 0, "id": "a:0", "function": {"name": "a"}}]}), "[DONE]")
    assert decode(body)[0] == [ToolCallEvent(0, ToolCall("a:0", "a", "{}")), Done("tool_calls")]


@pytest.mark.parametrize(
    ("finish", "done"),
    [
        ("length", Done("length")),
        ("content_filter", Done("content_filter")),
        ("function_call", Done("tool_calls")),
    ],
)
def test_finish_reasons(finish: str, done: Done) -> None:
    """The API's finish reasons map to the canonical ones."""
    assert decode(sse(chunk({"content": "x"}), chunk({}, finish), "[DONE]"))[0] == [TextDelta("x"), done]


def test_no_done_means_not_finished() -> None:
    """A stream that ends after a finish_reason but without [DONE] yields no Done: the driver reports the cut."""
    events, stream = decode(sse(chunk({"content": "x"}), chunk({}, "stop", usage=USAGE)))
    assert events == [TextDelta("x")] and not stream.done


@pytest.mark.parametrize(
    ("error", "exc"),
    [
        ({"type": "content_filter", "message": "high risk"}, ContentFiltered),
        (
            {"type": "rate_limit_reached_error", "message": "please try again after 2 seconds"},
            UpstreamRateLimited,
        ),
        (
            {"type": "exceeded_current_quota_error", "message": "balance is insufficient"},
            UpstreamQuotaExhausted,
        ),
    ],
)
def test_in_band_error_raises_after_the_text_before_it(
    error: dict[str, str], exc: type[GatewayError]
) -> None:
    """An error chunk raises its mapped exception; what came before it was already collected."""
    decoder, stream, out = SseDecoder(), CompletionStream(), []
    with pytest.raises(exc):
        for payload in decoder.feed(sse(chunk({"content": "par"}), {"error": error})):
            stream.feed(payload, out)
    assert out == [TextDelta("par")]


def test_unknown_fields_are_noted_and_skipped() -> None:
    """Unknown chunk, choice and delta fields are noted by name; the text still comes through."""
    body = sse(
        {**chunk({"content": "a", "audio": {}}, None, stop_reason=None), "service_tier": "x"},
        "not json",
        chunk({}, "eos"),
        "[DONE]",
    )
    events, stream = decode(body)
    assert events == [TextDelta("a"), Done("stop")]
    assert stream.drift.counts == {
        "field:service_tier": 1,
        "field:choice.stop_reason": 1,
        "field:delta.audio": 1,
        "malformed": 1,
        "finish_reason:eos": 1,
    }


def test_non_stream_answer() -> None:
    """The non-stream JSON answer becomes the same events: reasoning, text, calls, real usage, Done."""
    body = {
        "id": "cmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": "kimi-k3",
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": "",
                    "reasoning_content": "需要天气",
                    "tool_calls": [
                        {"id": "w:0", "type": "function", "function": {"name": "w", "arguments": "{}"}}
                    ],
                },
                "finish_reason": "tool_calls",
            }
        ],
        "usage": {**USAGE, "cached_tokens": 0},
    }
    stream, out = CompletionStream(), []
    stream.complete(json.dumps(body).encode(), out)
    assert out == [
        ReasoningDelta("需要天气"),
        ToolCallEvent(0, ToolCall("w:0", "w", "{}")),
        Usage(19, 13, estimated=False),
        Done("tool_calls"),
    ]
