"""Table tests of adapters/anthropic.py: request bytes in, canonical request out; events in, bytes out."""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest
from anthropic._streaming import SSEDecoder
from anthropic.lib.streaming._messages import accumulate_event

from adapters import anthropic
from adapters.base import Parsed, Renderer, ReplyOptions, RequestContext
from shared.errors import (
    AuthenticationFailed,
    BadRequest,
    GatewayError,
    ModelNotFound,
    PayloadTooLarge,
    RateLimited,
    UpstreamOverloaded,
    UpstreamProtocolError,
    UpstreamTimeout,
)
from shared.schema import (
    Citation,
    Done,
    ErrorEvent,
    Event,
    Keepalive,
    Message,
    ReasoningDelta,
    Start,
    TextDelta,
    TextPart,
    Usage,
)

DIALECT = anthropic.DIALECT


def _body(**fields: Any) -> bytes:
    base: dict[str, Any] = {
        "model": "kimi-k2.5-instant",
        "max_tokens": 1024,
        "messages": [{"role": "user", "content": "Hi"}],
    }
    base.update(fields)
    return json.dumps(base).encode()


def _parse(body: bytes) -> Parsed:
    return DIALECT.parse(body, RequestContext(request_id="req1"))


def _renderer(body: bytes) -> Renderer:
    request, reply = _parse(body)
    return DIALECT.renderer(request, reply, RequestContext(request_id="req1"))


def _render(body: bytes, events: list[Event]) -> bytes:
    renderer = _renderer(body)
    out = renderer.head() if renderer.stream else b""
    for event in events:
        out += renderer.feed(event)
    return out if renderer.stream else renderer.body()


# ---------------------------------------------------------------- parse


def test_parse_string_system_and_text_blocks() -> None:
    """A string system prompt leads; text blocks become text parts; thinking blocks sent back are dropped."""
    body = _body(
        system="Be brief.",
        messages=[
            {"role": "user", "content": [{"type": "text", "text": "Hi"}, {"type": "text", "text": "there"}]},
            {
                "role": "assistant",
                "content": [
                    {"type": "thinking", "thinking": "x", "signature": "s"},
                    {"type": "text", "text": "Hello"},
                ],
            },
            {"role": "user", "content": "Again"},
        ],
        temperature=0.2,
        top_p=0.9,
        metadata={"user_id": "u"},
    )
    request, _ = _parse(body)
    assert request.messages == [
        Message(role="system", content="Be brief."),
        Message(role="user", content=[TextPart(text="Hi"), TextPart(text="there")]),
        Message(role="assistant", content=[TextPart(text="Hello")]),
        Message(role="user", content="Again"),
    ]
    assert (request.request_id, request.model, request.stream, request.dialect) == (
        "req1",
        "kimi-k2.5-instant",
        False,
        "anthropic",
    )


def test_parse_system_blocks_and_reply_options() -> None:
    """System blocks lead; stop_sequences, max_tokens and the thinking switch reach the renderer typed."""
    body = _body(
        system=[{"type": "text", "text": "A"}, {"type": "text", "text": "B"}],
        stop_sequences=["END"],
        max_tokens=7,
        stream=True,
        thinking={"type": "disabled"},
    )
    request, reply = _parse(body)
    assert request.messages[0] == Message(role="system", content=[TextPart(text="A"), TextPart(text="B")])
    assert request.stream is True
    assert reply == ReplyOptions(stop_sequences=("END",), max_tokens=7, show_reasoning=False)


def test_parse_model_flags_become_options() -> None:
    """Model-name flags of the kimi family map to options through the one model table."""
    request, _ = _parse(_body(model="kimi-search-silent"))
    assert (request.options.search, request.options.silent, request.options.thinking) == (True, True, False)


@pytest.mark.parametrize(
    ("body", "error", "message"),
    [
        (
            _body(max_tokens=None).replace(b'"max_tokens": null, ', b""),
            BadRequest,
            "max_tokens: Field required",
        ),
        (_body(max_tokens=0), BadRequest, "Invalid request: Expected `int` >= 1 - at `$.max_tokens`"),
        (_body(model="gpt-4"), ModelNotFound, "model: gpt-4"),
        (_body(messages=[]), BadRequest, "messages: at least one message is required"),
        (
            _body(messages=[{"role": "user", "content": [{"type": "image", "source": {"type": "base64"}}]}]),
            BadRequest,
            "messages.0.content.0: the attachment's data is empty",
        ),
        (
            _body(messages=[{"role": "user", "content": [{"type": "document", "source": {"type": "file"}}]}]),
            BadRequest,
            "messages.0.content.0: file ids are not supported (the gateway has no Files API); send the bytes "
            "or a URL",
        ),
        (
            b"{not json",
            BadRequest,
            "The request body is not valid JSON: JSON is malformed: object keys must be strings (byte 1)",
        ),
        (b"", BadRequest, "The request body is empty; expected a JSON object."),
    ],
)
def test_parse_refuses_with_clear_errors(body: bytes, error: type[GatewayError], message: str) -> None:
    """Missing max_tokens, unknown models, media blocks and bad JSON are refused with a precise message."""
    with pytest.raises(error) as info:
        _parse(body)
    assert type(info.value) is error
    assert info.value.message == message


@pytest.mark.parametrize(
    ("messages", "param"),
    [
        ([{"role": "user", "content": ""}], "messages.0.content"),
        ([{"role": "user", "content": [{"type": "text", "text": " "}]}], "messages.0.content"),
        ([{"role": "user", "content": "Hi"}, {"role": "assistant", "content": []}], None),
    ],
)
def test_parse_refuses_a_request_without_text(messages: list[Any], param: str | None) -> None:
    """A request with no text anywhere is a 400 naming the last message's content; an empty turn is fine."""
    if param is None:
        assert _parse(_body(messages=messages))[0].messages[-1] == Message("assistant", [])
        return
    with pytest.raises(BadRequest) as info:
        _parse(_body(messages=messages))
    assert (info.value.status, info.value.param) == (400, param)
    assert info.value.message == f"{param}: the messages hold no text; there is nothing to answer"


def test_count_tokens_estimates_the_prompt() -> None:
    """count_tokens answers `{"input_tokens": n}` with the shared estimator, max_tokens not required."""
    body = json.dumps(
        {"model": "kimi", "system": "Be brief.", "messages": [{"role": "user", "content": "Hello there"}]}
    )
    status, headers, out = anthropic.count_tokens(body.encode(), RequestContext(request_id="r"))
    assert (status, headers, out) == (200, {"Content-Type": "application/json"}, b'{"input_tokens":14}')


def test_count_tokens_unknown_model_is_404() -> None:
    """count_tokens resolves the model like messages does."""
    body = json.dumps({"model": "nope", "messages": [{"role": "user", "content": "x"}]}).encode()
    with pytest.raises(ModelNotFound):
        anthropic.count_tokens(body, RequestContext(request_id="r"))


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("exc", "status", "error_type"),
    [
        (BadRequest("bad"), 400, "invalid_request_error"),
        (AuthenticationFailed("who"), 401, "authentication_error"),
        (ModelNotFound("model: x"), 404, "not_found_error"),
        (PayloadTooLarge("big"), 413, "request_too_large"),
        (RateLimited("slow", retry_after_s=3), 429, "rate_limit_error"),
        (UpstreamOverloaded("busy"), 529, "overloaded_error"),
        (UpstreamProtocolError("broken"), 502, "api_error"),
        (UpstreamTimeout("late"), 504, "api_error"),
        (GatewayError("oops"), 500, "api_error"),
    ],
)
def test_error_response_status_and_type(exc: GatewayError, status: int, error_type: str) -> None:
    """Each error kind answers Anthropic's status and error.type, with the request id in body and header."""
    got_status, headers, body = DIALECT.error_response(exc, "req9")
    assert got_status == status
    assert headers == {"request-id": "req9"}
    assert body == (
        b'{"type":"error","error":{"type":"'
        + error_type.encode()
        + b'","message":"'
        + exc.message.encode()
        + b'"},"request_id":"req9"}'
    )


def test_in_band_error_event() -> None:
    """After the first byte an error is an `event: error` frame and the renderer is finished."""
    renderer = _renderer(_body(stream=True))
    out = renderer.error(UpstreamOverloaded("Overloaded"))
    assert out == (
        b'event: error\ndata: {"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}\n\n'
    )
    assert renderer.finished


def test_error_event_fed_to_a_stream_renders_in_band() -> None:
    """An ErrorEvent fed by mistake still renders the in-band error (never a made-up stop)."""
    out = _render(_body(stream=True), [TextDelta("Hi"), ErrorEvent(kind="protocol", message="cut")])
    assert out.endswith(
        b'event: error\ndata: {"type":"error","error":{"type":"api_error","message":"cut"}}\n\n'
    )


# ---------------------------------------------------------------- stream rendering

MESSAGE_START = (
    b'event: message_start\ndata: {"type":"message_start","message":{"type":"message","id":"msg_req1",'
    b'"role":"assistant","model":"kimi-k2.5-thinking","content":[],"stop_reason":null,"stop_sequence":null,'
    b'"usage":{"input_tokens":5,"output_tokens":0}}}\n\n'
)


def _frame(name: str, data: str) -> bytes:
    return f"event: {name}\ndata: {data}\n\n".encode()


def test_stream_thinking_then_text_exact_bytes() -> None:
    """Reasoning is a thinking block closed by signature_delta, then a text block, indices from 0."""
    out = _render(
        _body(model="kimi-k2.5-thinking", stream=True),
        [
            Start(),
            ReasoningDelta("Let me"),
            ReasoningDelta(" think"),
            Keepalive(),
            TextDelta("Hello"),
            TextDelta(" world"),
            Usage(prompt_tokens=5, completion_tokens=6),
            Done(),
        ],
    )
    signature = anthropic.thinking_signature("Let me think")
    assert out == MESSAGE_START + b"".join(
        [
            _frame(
                "content_block_start",
                '{"type":"content_block_start","index":0,"content_block":{"type":"thinking","thinking":"","signature":""}}',
            ),
            _frame(
                "content_block_delta",
                '{"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","thinking":"Let me"}}',
            ),
            _frame(
                "content_block_delta",
                '{"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","thinking":" think"}}',
            ),
            _frame("ping", '{"type":"ping"}'),
            _frame(
                "content_block_delta",
                '{"type":"content_block_delta","index":0,"delta":{"type":"signature_delta","signature":"'
                + signature
                + '"}}',
            ),
            _frame("content_block_stop", '{"type":"content_block_stop","index":0}'),
            _frame(
                "content_block_start",
                '{"type":"content_block_start","index":1,"content_block":{"type":"text","text":""}}',
            ),
            _frame(
                "content_block_delta",
                '{"type":"content_block_delta","index":1,"delta":{"type":"text_delta","text":"Hello"}}',
            ),
            _frame(
                "content_block_delta",
                '{"type":"content_block_delta","index":1,"delta":{"type":"text_delta","text":" world"}}',
            ),
            _frame("content_block_stop", '{"type":"content_block_stop","index":1}'),
            _frame(
                "message_delta",
                '{"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},'
                '"usage":{"input_tokens":5,"output_tokens":6}}',
            ),
            _frame("message_stop", '{"type":"message_stop"}'),
        ]
    )


def test_stream_stop_sequence_cut() -> None:
    """A stop sequence split over chunks ends the stream with stop_reason stop_sequence and the sequence."""
    out = _render(
        _body(stream=True, stop_sequences=["###"]),
        [TextDelta("Answer #"), TextDelta("## rest"), TextDelta("never")],
    )
    assert out.endswith(
        b"".join(
            [
                _frame(
                    "content_block_delta",
                    '{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Answer "}}',
                ),
                _frame("content_block_stop", '{"type":"content_block_stop","index":0}'),
                _frame(
                    "message_delta",
                    '{"type":"message_delta","delta":{"stop_reason":"stop_sequence","stop_sequence":"###"},'
                    '"usage":{"input_tokens":5,"output_tokens":2}}',
                ),
                _frame("message_stop", '{"type":"message_stop"}'),
            ]
        )
    )


def test_stream_max_tokens_cut() -> None:
    """The answer is cut at max_tokens by the estimator and reports stop_reason max_tokens."""
    out = _render(_body(stream=True, max_tokens=2), [TextDelta("abcdefgh-and-more")])
    assert b'"text_delta","text":"abcdefgh"}' in out
    assert out.endswith(
        _frame(
            "message_delta",
            '{"type":"message_delta","delta":{"stop_reason":"max_tokens","stop_sequence":null},'
            '"usage":{"input_tokens":5,"output_tokens":2}}',
        )
        + _frame("message_stop", '{"type":"message_stop"}')
    )


@pytest.mark.parametrize(
    ("reason", "stop_reason"), [("stop", "end_turn"), ("length", "max_tokens"), ("content_filter", "refusal")]
)
def test_stream_finish_reason_mapping(reason: str, stop_reason: str) -> None:
    """Canonical finish reasons map to Anthropic stop reasons (content_filter → refusal)."""
    out = _render(_body(stream=True), [TextDelta("x"), Done(finish_reason=reason)])  # type: ignore[arg-type]
    assert f'"stop_reason":"{stop_reason}"'.encode() in out


def test_stream_empty_answer_has_no_blocks() -> None:
    """An empty answer emits no empty content block, only message_delta and message_stop."""
    out = _render(_body(stream=True), [Start(), Done()])
    assert b"content_block" not in out
    assert out.endswith(_frame("message_stop", '{"type":"message_stop"}'))


def test_stream_citations_render_as_text_unless_silent() -> None:
    """A citation is a text line (the next text starts on a new line); a -silent model drops it."""
    events: list[Event] = [Citation(index=1, title="T", url="https://u"), TextDelta("Answer"), Done()]
    loud = _render(_body(stream=True, model="kimi-search"), events)
    assert (
        b'"text":"\\u3010\\u68c0\\u7d22 1\\u3011 [T](https://u)\\n"' in loud or "【检索 1】".encode() in loud
    )
    assert b'"text_delta","text":"\\nAnswer"}' in loud
    silent = _render(_body(stream=True, model="kimi-search-silent"), events)
    assert "检索".encode() not in silent
    assert b'"text_delta","text":"Answer"}' in silent


def test_thinking_hidden_when_disabled() -> None:
    """`thinking: {"type": "disabled"}` hides reasoning, which still counts as output tokens."""
    out = _render(
        _body(stream=True, thinking={"type": "disabled"}), [ReasoningDelta("hmm"), TextDelta("A"), Done()]
    )
    assert b"thinking" not in out
    assert b'"usage":{"input_tokens":5,"output_tokens":2}' in out


def test_stream_is_accepted_by_the_sdk_accumulator() -> None:
    """The official SDK's SSE decoder and accumulator rebuild the exact message from our bytes."""
    out = _render(
        _body(model="kimi-k2.5-thinking", stream=True),
        [
            ReasoningDelta("Hm"),
            TextDelta("Hi"),
            TextDelta("!"),
            Usage(prompt_tokens=5, completion_tokens=2),
            Done(),
        ],
    )
    snapshot = None
    for sse in SSEDecoder().iter_bytes(iter([out])):
        if sse.event != "ping":
            snapshot = accumulate_event(event=sse.json(), current_snapshot=snapshot, json_bufs={})
    assert snapshot is not None
    assert [block.type for block in snapshot.content] == ["thinking", "text"]
    assert snapshot.content[0].thinking == "Hm"  # type: ignore[union-attr]
    assert snapshot.content[0].signature == anthropic.thinking_signature("Hm")  # type: ignore[union-attr]
    assert snapshot.content[1].text == "Hi!"  # type: ignore[union-attr]
    assert (snapshot.stop_reason, snapshot.usage.input_tokens, snapshot.usage.output_tokens) == (
        "end_turn",
        5,
        2,
    )


# ---------------------------------------------------------------- non-stream


def test_non_stream_body_exact_bytes() -> None:
    """A whole Message: thinking block with its signature, text block, stop reason and usage."""
    out = _render(
        _body(model="kimi-k2.5-thinking", stop_sequences=["\n\n"]),
        [
            Start(),
            Keepalive(),
            ReasoningDelta("Hm"),
            TextDelta("Line one"),
            TextDelta("\n\nLine two"),
            Usage(prompt_tokens=5, completion_tokens=9),
        ],
    )
    signature = anthropic.thinking_signature("Hm")
    assert out == (
        b'{"type":"message","id":"msg_req1","role":"assistant","model":"kimi-k2.5-thinking","content":['
        b'{"type":"thinking","thinking":"Hm","signature":"' + signature.encode() + b'"},'
        b'{"type":"text","text":"Line one"}],"stop_reason":"stop_sequence","stop_sequence":"\\n\\n",'
        b'"usage":{"input_tokens":5,"output_tokens":3}}'
    )


def test_non_stream_error_event_raises() -> None:
    """An ErrorEvent fed to a non-stream renderer raises, so the error gets its real HTTP status."""
    renderer = _renderer(_body())
    with pytest.raises(UpstreamOverloaded):
        renderer.feed(ErrorEvent(kind="overloaded", message="busy"))


def test_non_stream_usage_from_worker() -> None:
    """Without a cut, usage is the worker's Usage event, and the renderer is finished after Done."""
    renderer = _renderer(_body())
    for event in [TextDelta("Hello"), Usage(prompt_tokens=11, completion_tokens=22), Done()]:
        assert renderer.feed(event) == b""
    assert renderer.finished
    message = msgspec.json.decode(renderer.body())
    assert message["usage"] == {"input_tokens": 11, "output_tokens": 22}
    assert message["content"] == [{"type": "text", "text": "Hello"}]
    assert renderer.content_type == "application/json"
