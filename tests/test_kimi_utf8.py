"""Table tests: a multi-byte character whose bytes arrive apart comes out whole on both web lanes.

Splits happen at three places: between TCP chunks inside an SSE line, between TCP chunks inside a Connect frame,
and between two events whose JSON strings each hold part of the character's raw bytes (kimi-web-rest.md §5.1).
"""

from __future__ import annotations

import msgspec
import pytest

from shared.errors import GatewayError
from shared.schema import Event, ReasoningDelta, TextDelta
from upstream_worker.kimi.connect_events import ConnectStream
from upstream_worker.kimi.envelope import EnvelopeDecoder, encode_envelope
from upstream_worker.kimi.rest_events import RestStream
from upstream_worker.kimi.sse import SseDecoder
from upstream_worker.kimi.utf8 import Utf8Joiner

TEXT = "你好😀"
DATA = TEXT.encode()
CUTS = range(1, len(DATA))


def _escaped(data: bytes) -> str:
    return data.decode("utf-8", "surrogateescape")


def _texts(events: list[Event]) -> str:
    return "".join(e.text for e in events if isinstance(e, TextDelta))


# ---------------------------------------------------------------- the joiner


@pytest.mark.parametrize("cut", CUTS)
def test_joiner_rejoins_a_cut_at_every_byte(cut: int) -> None:
    """Two deltas holding the raw bytes before and after any cut give exactly "你好😀", no U+FFFD."""
    joiner = Utf8Joiner()
    out = joiner.push(_escaped(DATA[:cut])) + joiner.push(_escaped(DATA[cut:])) + joiner.flush()
    assert out == TEXT


def test_joiner_byte_by_byte() -> None:
    """One delta per byte still gives the whole text, each character as soon as its last byte came."""
    joiner = Utf8Joiner()
    outs = [joiner.push(_escaped(bytes([b]))) for b in DATA]
    assert "".join(outs) == TEXT and outs[2] == "你" and outs[-1] == "😀"
    assert joiner.flush() == ""


@pytest.mark.parametrize(
    ("deltas", "expected"),
    [
        (["plain", " ascii"], "plain ascii"),  # nothing cut: passed through as is
        ([_escaped(b"\xe4\xbd"), "x"], "\ufffd\ufffdx"),  # the rest never came: lost, marked where it was
        (["a" + _escaped(b"\xf0\x9f")], "a\ufffd\ufffd"),  # cut at the very end: flushed as U+FFFD
        (["\ud83d", "\ude00"], "\ufffd\ufffd"),  # lone UTF-16 halves are no bytes to rejoin
        (["\ufffd"], "\ufffd"),  # Kimi's own U+FFFD passes on
    ],
)
def test_joiner_never_emits_escapes(deltas: list[str], expected: str) -> None:
    """Bytes that never complete a character become U+FFFD; no surrogate ever leaves the joiner."""
    joiner = Utf8Joiner()
    out = "".join(joiner.push(d) for d in deltas) + joiner.flush()
    assert out == expected


# ---------------------------------------------------------------- REST: SSE bytes → events


def _rest_body(cut: int) -> bytes:
    first = b'data: {"event":"cmpl","text":"' + DATA[:cut] + b'"}\n\n'
    second = b'data: {"event":"cmpl","text":"' + DATA[cut:] + b'"}\n\ndata: {"event":"all_done"}\n\n'
    return first + second


def _rest_events(chunks: list[bytes]) -> tuple[list[Event], RestStream]:
    sse, stream = SseDecoder(), RestStream(silent=False)
    events: list[Event] = []
    for chunk in chunks:
        for payload in sse.feed(chunk):
            if (event := stream.feed(payload)) is not None:
                events.append(event)
    for payload in sse.close():
        if (event := stream.feed(payload)) is not None:
            events.append(event)
    return events + stream.finish(), stream


@pytest.mark.parametrize("cut", CUTS)
def test_rest_character_cut_between_events(cut: int) -> None:
    """Two cmpl events splitting "你好😀" at any byte give the whole text, and no drift."""
    events, stream = _rest_events([_rest_body(cut)])
    assert _texts(events) == TEXT and stream.finished
    assert stream.drift.counts == {}


@pytest.mark.parametrize("cut", CUTS)
def test_rest_character_cut_between_events_and_tcp_chunks(cut: int) -> None:
    """The same body fed one byte at a time (TCP splits inside every line) gives the same text."""
    body = _rest_body(cut)
    events, _ = _rest_events([body[i : i + 1] for i in range(len(body))])
    assert _texts(events) == TEXT


@pytest.mark.parametrize("cut", CUTS)
def test_rest_reasoning_cut_between_k1_events(cut: int) -> None:
    """k1 reasoning split inside a character comes out whole, apart from the answer's text."""
    body = (
        b'data: {"event":"k1","text":"' + DATA[:cut] + b'"}\n\n'
        b'data: {"event":"k1","data":{"text":"' + DATA[cut:] + b'"}}\n\n'
        b'data: {"event":"cmpl","text":"ok"}\n\ndata: {"event":"all_done"}\n\n'
    )
    events, _ = _rest_events([body])
    assert "".join(e.text for e in events if isinstance(e, ReasoningDelta)) == TEXT
    assert _texts(events) == "ok"


def test_rest_cut_carries_over_a_length_continuation() -> None:
    """A character cut at the end of a length segment is completed by the continuation's first event."""
    first = RestStream(silent=False)
    assert first.feed('{"event":"cmpl","text":"' + _escaped(DATA[:4]) + '"}') == TextDelta("你")
    second = first.next_segment()
    assert second.feed('{"event":"cmpl","text":"' + _escaped(DATA[4:]) + '"}') == TextDelta("好😀")
    assert second.finish() == []


def test_rest_incomplete_character_at_the_end() -> None:
    """A character whose rest never comes is one U+FFFD per byte at the end of the answer, not dropped."""
    stream = RestStream(silent=False)
    assert stream.feed('{"event":"cmpl","text":"a' + _escaped(DATA[:2]) + '"}') == TextDelta("a")
    assert stream.finish() == [TextDelta("\ufffd\ufffd")]


# ---------------------------------------------------------------- Connect: frames → events


def _connect_body(cut: int) -> bytes:
    def frame(op: str, mask: str, content: bytes) -> bytes:
        head = (
            b'{"op":"'
            + op.encode()
            + b'","mask":"'
            + mask.encode()
            + b'","block":{"id":"2","text":{"content":"'
        )
        return encode_envelope(head + content + b'"}}}')

    done = encode_envelope(b'{"done":{}}')
    end = encode_envelope(b"{}", 2)
    return (
        frame("set", "block.text", DATA[:cut])
        + frame("append", "block.text.content", DATA[cut:])
        + done
        + end
    )


def _connect_events(chunks: list[bytes]) -> tuple[list[Event], ConnectStream]:
    frames, stream = EnvelopeDecoder(), ConnectStream("c1", silent=False)
    out: list[Event] = []
    for chunk in chunks:
        for frame in frames.feed(chunk):
            stream.feed(frame, out)
    return out, stream


@pytest.mark.parametrize("cut", CUTS)
def test_connect_character_cut_between_events(cut: int) -> None:
    """Two text events splitting "你好😀" at any byte give the whole text, and no drift."""
    out, stream = _connect_events([_connect_body(cut)])
    assert _texts(out) == TEXT and stream.ended
    assert stream.drift.counts == {}


@pytest.mark.parametrize("cut", CUTS)
def test_connect_character_cut_between_events_and_tcp_chunks(cut: int) -> None:
    """The same frames fed one byte at a time (TCP splits inside every frame) give the same text."""
    body = _connect_body(cut)
    out, _ = _connect_events([body[i : i + 1] for i in range(len(body))])
    assert _texts(out) == TEXT


@pytest.mark.parametrize("cut", CUTS)
def test_connect_tcp_split_inside_valid_frame(cut: int) -> None:
    """A whole, valid frame cut by TCP at any byte of its character decodes on the fast path, unchanged."""
    payload = msgspec.json.encode(
        {"op": "set", "mask": "block.text", "block": {"id": "2", "text": {"content": TEXT}}}
    )
    wire = encode_envelope(payload)
    at = wire.index(DATA) + cut
    out, stream = _connect_events([wire[:at], wire[at:]])
    assert _texts(out) == TEXT and stream.drift.counts == {}


def test_connect_incomplete_character_flushed_at_done() -> None:
    """A character still cut when `done` arrives comes out as U+FFFD before Done, not dropped."""
    body = encode_envelope(
        b'{"op":"set","mask":"block.text","block":{"id":"2","text":{"content":"a' + DATA[:1] + b'"}}}'
    ) + encode_envelope(b'{"done":{}}')
    out, _ = _connect_events([body])
    assert _texts(out) == "a\ufffd"


def test_rest_error_text_with_a_cut_byte_is_encodable() -> None:
    """An error event whose text holds a stray byte raises with U+FFFD in its message, never a surrogate."""
    stream = RestStream(silent=False)
    with pytest.raises(GatewayError) as info:
        stream.feed('{"event":"error","text":"累' + _escaped(b"\xe4") + '"}')
    assert info.value.message.endswith("累\ufffd")
