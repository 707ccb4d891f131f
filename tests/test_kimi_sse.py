"""Table tests of the sans-IO SSE decoder under the REST driver."""

from __future__ import annotations

import pytest

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
