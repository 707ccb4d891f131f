"""Table tests of the sans-IO SSE decoder under the REST driver."""

from __future__ import annotations

import pytest

from shared.errors import UpstreamProtocolError
from upstream_worker.kimi.sse import SseDecoder

EVENTS = 'data: {"event":"cmpl","text":"你好"}\n\ndata: {"event":"all_done"}\n\n'.encode()


def _feed_all(chunks: list[bytes]) -> list[str]:
    decoder = SseDecoder()
    out: list[str] = []
    for chunk in chunks:
        out.extend(decoder.feed(chunk))
    out.extend(decoder.close())
    return out


def test_whole_body_in_one_chunk() -> None:
    """Two complete events in one chunk come out as two payloads, in order."""
    assert _feed_all([EVENTS]) == ['{"event":"cmpl","text":"你好"}', '{"event":"all_done"}']


@pytest.mark.parametrize("cut", range(1, len(EVENTS)))
def test_split_at_every_byte(cut: int) -> None:
    """A body cut at any byte (inside a line or inside a UTF-8 character) decodes to the same payloads."""
    assert _feed_all([EVENTS[:cut], EVENTS[cut:]]) == _feed_all([EVENTS])


def test_byte_by_byte_keeps_multibyte_characters() -> None:
    """Feeding one byte at a time never produces U+FFFD for valid UTF-8."""
    payloads = _feed_all([bytes([b]) for b in EVENTS])
    assert payloads[0] == '{"event":"cmpl","text":"你好"}'
    assert "\ufffd" not in "".join(payloads)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b"data:x\r\n\r\n", ["x"]),  # CRLF line ends, no space after the colon
        (b"event: message\nid: 7\ndata: y\n\n", ["y"]),  # other fields ignored
        (b": keep-alive\n\n", []),  # a comment alone is no event
        (b"data: a\ndata: b\n\n", ["a\nb"]),  # multi-line data joined with \n
        (b"data: [DONE]\n\n", ["[DONE]"]),
        (b'data: {"event":"all_done"}', ['{"event":"all_done"}']),  # no final blank line: flushed at close
        (b"\n\n\n", []),
    ],
)
def test_framing_variants(body: bytes, expected: list[str]) -> None:
    """SSE framing variants decode per the SSE rules Kimi's stream relies on."""
    assert _feed_all([body]) == expected


def test_invalid_utf8_is_kept_as_surrogate_escapes() -> None:
    """Bytes that are not UTF-8 within their line survive as surrogate escapes for the event decoder, not fatal."""
    assert _feed_all([b"data: \xff\n\n"]) == ["\udcff"]
    assert _feed_all([b"data: a\xe4\xbd\n\n", b"data: \xa0b\n\n"]) == ["a\udce4\udcbd", "\udca0b"]


@pytest.mark.parametrize(
    "chunks",
    [
        [b"data: " + b"x" * 100],  # a line that never ends
        [b"data: " + b"x" * 60 + b"\n", b"data: " + b"y" * 60 + b"\n"],  # an event of many data lines
        [b"data: " + b"z" * 120 + b"\n\n"],  # one long line, ended
    ],
    ids=["open-line", "many-lines", "long-line"],
)
def test_a_line_or_event_past_the_cap_is_a_protocol_error(chunks: list[bytes]) -> None:
    """Upstream bytes are bounded: a line or an event longer than the decoder's cap raises instead of growing."""
    decoder = SseDecoder(max_event_chars=100)
    with pytest.raises(UpstreamProtocolError, match="over 100 characters"):
        for chunk in chunks:
            decoder.feed(chunk)


def test_events_within_the_cap_pass() -> None:
    """Lines and events up to the cap decode as usual."""
    decoder = SseDecoder(max_event_chars=100)
    assert decoder.feed(b"data: " + b"a" * 90 + b"\n\n") == ["a" * 90]
