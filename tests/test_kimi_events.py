"""Table tests of event application: REST SSE payloads and Connect frames → canonical events."""

from __future__ import annotations

import msgspec
import pytest

from shared.errors import (
    BadRequest,
    ContentFiltered,
    GatewayError,
    UpstreamAuthError,
    UpstreamError,
    UpstreamOverloaded,
    UpstreamPlanRequired,
    UpstreamRateLimited,
    UpstreamUnavailable,
)
from shared.schema import Citation, Event, ReasoningDelta, Start, TextDelta
from upstream_worker.kimi.connect_events import ConnectStream
from upstream_worker.kimi.envelope import Frame
from upstream_worker.kimi.failures import UpstreamStreamBusy, http_error
from upstream_worker.kimi.rest_events import RestStream

# ---------------------------------------------------------------- REST


@pytest.mark.parametrize(
    ("payload", "event"),
    [
        ('{"event":"cmpl","text":"你好"}', TextDelta("你好")),
        ('{"event":"cmpl","text":""}', None),
        ('{"event":"k1","text":"想"}', ReasoningDelta("想")),
        ('{"event":"k1","data":{"text":"想"}}', ReasoningDelta("想")),
        ('{"event":"k1","type":"search_targets","search_targets":["x"]}', None),
        (
            '{"event":"search_plus","msg":{"type":"get_res","title":"T","url":"https://u"}}',
            Citation(1, "T", "https://u"),
        ),
        ('{"event":"search_plus","msg":{"type":"start"}}', None),
        ('{"event":"resp","id":"r"}', None),
        ('{"event":"rename","text":"title"}', None),
        ('{"event":"brand_new_kind","x":[1,2]}', None),
        ('{"event":"cmpl","text":', None),  # malformed: skipped
        ('{"event":"cmpl","text":5}', None),  # wrong type: skipped
        ("not json", None),
    ],
)
def test_rest_event_table(payload: str, event: Event | None) -> None:
    """Each REST event kind maps to its canonical event; unknown, malformed and bookkeeping ones to none."""
    assert RestStream(silent=False).feed(payload) == event


def test_rest_bookkeeping() -> None:
    """req stores the segment id, length and all_done set their flags, [DONE] also terminates."""
    stream = RestStream(silent=False)
    stream.feed('{"event":"req","id":"seg1","content":"echo"}')
    stream.feed('{"event":"length"}')
    assert (stream.segment_id, stream.length, stream.finished) == ("seg1", True, False)
    stream.feed('{"event":"all_done"}')
    assert stream.finished
    other = RestStream(silent=False)
    other.feed("[DONE]")
    assert other.finished


def test_rest_citations_numbered_and_silenced() -> None:
    """Citations count from 1 (continuing across segments) and disappear when silent."""
    get_res = '{"event":"search_plus","msg":{"type":"get_res","title":"T","url":"https://u"}}'
    stream = RestStream(silent=False, citations=2)
    assert stream.feed(get_res) == Citation(3, "T", "https://u")
    assert RestStream(silent=True).feed(get_res) is None


@pytest.mark.parametrize(
    ("payload", "error"),
    [
        (
            '{"event":"error","error":{"error_type":"openai.completion.stream","message":"累了"}}',
            ContentFiltered,
        ),
        (
            '{"event":"error","error":{"error_type":"chat.user_stream_pushing","message":"x"}}',
            UpstreamRateLimited,
        ),
        ('{"event":"error","error":{"error_type":"auth.token.invalid","message":"x"}}', UpstreamAuthError),
        ('{"event":"error","error":"plain"}', ContentFiltered),
    ],
)
def test_rest_error_events(payload: str, error: type[GatewayError]) -> None:
    """A REST error event raises: known types by meaning, anything else as a content stop."""
    with pytest.raises(error):
        RestStream(silent=False).feed(payload)


# ---------------------------------------------------------------- Connect


def frames(*events: object) -> list[Frame]:
    return [Frame(0, msgspec.json.encode(e)) for e in events]


def run(stream: ConnectStream, *events: object) -> list[Event]:
    out: list[Event] = []
    for frame in frames(*events):
        stream.feed(frame, out)
    return out


SPEC_EXAMPLE = [  # kimi-web-connect.md §3.4
    {"heartbeat": {}},
    {"op": "set", "eventOffset": 1, "chat": {"id": "c1", "name": "Untitled Chat"}},
    {
        "op": "set",
        "mask": "message",
        "eventOffset": 2,
        "message": {
            "id": "u1",
            "role": "user",
            "status": "MESSAGE_STATUS_COMPLETED",
            "blocks": [{"id": "text_0_0", "text": {"content": "hi"}}],
        },
    },
    {
        "op": "set",
        "mask": "message",
        "eventOffset": 3,
        "message": {"id": "m1", "parentId": "u1", "role": "assistant", "status": "MESSAGE_STATUS_GENERATING"},
    },
    {"op": "set", "mask": "block.think", "block": {"id": "1", "think": {"content": "The user asks"}}},
    {
        "op": "append",
        "mask": "block.think.content",
        "block": {"id": "1", "think": {"content": " a question"}},
    },
    {"op": "set", "mask": "block.text", "block": {"id": "2", "text": {"content": "The answer"}}},
    {"op": "append", "mask": "block.text.content", "block": {"id": "2", "text": {"content": " is 42"}}},
    {"op": "set", "mask": "message.status", "message": {"id": "m1", "status": "MESSAGE_STATUS_COMPLETED"}},
    {"eventOffset": 9, "done": {}},
]


def test_connect_spec_example() -> None:
    """The spec's thinking stream yields Start(c1), the reasoning and the answer, and learns m1 and done."""
    stream = ConnectStream(None, silent=False)
    out = run(stream, *SPEC_EXAMPLE)
    assert out == [
        Start(conversation_id="c1"),
        ReasoningDelta("The user asks"),
        ReasoningDelta(" a question"),
        TextDelta("The answer"),
        TextDelta(" is 42"),
    ]
    assert (stream.chat_id, stream.assistant_id, stream.completed, stream.done) == ("c1", "m1", True, True)
    stream.feed(Frame(2, b"{}"), out)
    assert stream.ended


def test_connect_second_block_gets_separator_and_reset_is_not_duplicated() -> None:
    """A later text block starts with "\\n"; a set repeating streamed text emits only the new suffix."""
    out = run(
        ConnectStream("c1", silent=False),
        {"op": "set", "mask": "block.text", "block": {"id": "2", "text": {"content": "one"}}},
        {"op": "set", "block": {"id": "4", "tool": {"toolCallId": "ipython_0", "name": "ipython"}}},
        {"op": "set", "mask": "block.text", "block": {"id": "5", "text": {"content": "two"}}},
        {"op": "set", "mask": "block.text", "block": {"id": "5", "text": {"content": "two three"}}},
        {"notification": {"type": "TYPE_MODEL_DEGRADE", "message": "lighter model"}},
    )
    assert out == [Start(conversation_id="c1"), TextDelta("one"), TextDelta("\ntwo"), TextDelta(" three")]


def test_connect_search_citations() -> None:
    """webPages become numbered citations, each URL once; silent suppresses them."""
    search = [
        {
            "op": "append",
            "mask": "block.search.webPages",
            "block": {
                "id": "0_0",
                "search": {
                    "webPages": [{"title": "A", "url": "https://a"}, {"title": "B", "url": "https://b"}]
                },
            },
        },
        {
            "op": "append",
            "mask": "block.search.webPages",
            "block": {"id": "0_0", "search": {"webPages": [{"title": "A", "url": "https://a"}]}},
        },
    ]
    assert run(ConnectStream("c", silent=False), *search) == [
        Start(conversation_id="c"),
        Citation(1, "A", "https://a"),
        Citation(2, "B", "https://b"),
    ]
    assert run(ConnectStream("c", silent=True), *search) == []


def test_connect_thinking_flag_on_text_block() -> None:
    """A text block flagged "thinking" is reasoning."""
    out = run(
        ConnectStream("c", silent=False),
        {"op": "set", "block": {"id": "1", "text": {"content": "hm", "flags": "thinking"}}},
    )
    assert out[1:] == [ReasoningDelta("hm")]


def test_connect_malformed_frame_is_skipped() -> None:
    """An undecodable data frame is skipped."""
    out: list[Event] = []
    ConnectStream("c", silent=False).feed(Frame(0, b'{"op":"set",'), out)
    assert out == []


OVERLOAD = {
    "code": "resource_exhausted",
    "details": [
        {
            "debug": {
                "reason": "REASON_SERVER_OVERLOADED_FOR_FREE_USER",
                "localizedMessage": {"locale": "en-US", "message": "Too many people"},
            }
        }
    ],
}


@pytest.mark.parametrize(
    ("error", "exc"),
    [
        (OVERLOAD, UpstreamOverloaded),
        ({"code": "resource_exhausted"}, UpstreamRateLimited),
        ({"code": "unauthenticated"}, UpstreamAuthError),
        ({"code": "unavailable"}, UpstreamUnavailable),
        ({"code": "invalid_argument"}, BadRequest),
        ({"code": "internal"}, UpstreamError),
        ({"code": "permission_denied", "details": [{"debug": {"paywall": {}}}]}, UpstreamPlanRequired),
    ],
)
def test_connect_trailer_errors(error: dict[str, object], exc: type[GatewayError]) -> None:
    """A flag-2 trailer with an error raises the mapped exception, even after done."""
    stream = ConnectStream("c", silent=False)
    run(stream, {"done": {}})
    with pytest.raises(exc) as info:
        stream.feed(Frame(2, msgspec.json.encode({"error": error})), [])
    assert type(info.value) is exc


def test_overload_message_and_paywall_status() -> None:
    """The overload error carries Kimi's localized message; a paywall answers 403 (a paid plan is needed)."""
    with pytest.raises(UpstreamOverloaded, match="Too many people"):
        ConnectStream("c", silent=False).feed(Frame(2, msgspec.json.encode({"error": OVERLOAD})), [])
    with pytest.raises(UpstreamPlanRequired) as info:
        ConnectStream("c", silent=False).feed(
            Frame(2, b'{"error":{"code":"resource_exhausted","details":[{"debug":{"paywall":{"x":1}}}]}}'), []
        )
    assert info.value.status == 403 and info.value.kind == "permission"


# ---------------------------------------------------------------- HTTP errors


@pytest.mark.parametrize(
    ("status", "body", "retry_after", "exc", "retry_after_s"),
    [
        (401, b'{"error_type":"auth.token.invalid","message":"x"}', None, UpstreamAuthError, None),
        (
            401,
            b'{"code":"unauthenticated","details":[{"debug":{"reason":"REASON_INVALID_AUTH_TOKEN"}}]}',
            None,
            UpstreamAuthError,
            None,
        ),
        (429, b"", "7", UpstreamRateLimited, 7.0),
        (429, b'{"error_type":"chat.completion.rate_limit","message":"x"}', "30", UpstreamRateLimited, 30.0),
        (400, b'{"error_type":"chat.user_stream_pushing","message":"x"}', None, UpstreamStreamBusy, 2.0),
        (503, b"<html>", None, UpstreamUnavailable, None),
        (500, b"", "junk", UpstreamUnavailable, None),
        (418, b"", None, UpstreamError, None),
    ],
)
def test_http_error_mapping(
    status: int, body: bytes, retry_after: str | None, exc: type[GatewayError], retry_after_s: float | None
) -> None:
    """Non-2xx answers map to the error tree, with Retry-After when present."""
    err = http_error(status, body, retry_after)
    assert type(err) is exc
    assert err.retry_after_s == retry_after_s
