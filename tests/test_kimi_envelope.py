"""Table tests of the Connect envelope codec with the byte vectors of kimi-web-connect.md §1.5."""

from __future__ import annotations

import pytest

from shared.errors import UpstreamProtocolError
from upstream_worker.kimi.envelope import EnvelopeDecoder, Frame, encode_envelope

HEARTBEAT = bytes.fromhex("0000000010") + b'{"heartbeat":{}}'
END_OK = bytes.fromhex("0200000002") + b"{}"
END_ERROR = bytes.fromhex("0200000024") + b'{"error":{"code":"unauthenticated"}}'
STREAM = HEARTBEAT + END_OK


@pytest.mark.parametrize(
    ("flags", "payload", "wire"),
    [
        (0, b'{"heartbeat":{}}', HEARTBEAT),
        (2, b"{}", END_OK),
        (2, b'{"error":{"code":"unauthenticated"}}', END_ERROR),
    ],
)
def test_encode_matches_spec_vectors(flags: int, payload: bytes, wire: bytes) -> None:
    """encode_envelope produces exactly the spec's header bytes."""
    assert encode_envelope(payload, flags) == wire


@pytest.mark.parametrize(
    ("wire", "frame"),
    [
        (HEARTBEAT, Frame(0, b'{"heartbeat":{}}')),
        (END_OK, Frame(2, b"{}")),
        (END_ERROR, Frame(2, b'{"error":{"code":"unauthenticated"}}')),
    ],
)
def test_decode_spec_vectors(wire: bytes, frame: Frame) -> None:
    """Each spec vector decodes to its flag and payload; flag 2 marks the end of stream."""
    decoder = EnvelopeDecoder()
    assert decoder.feed(wire) == [frame]
    assert frame.end_stream == (frame.flags == 2)
    assert decoder.pending == 0


@pytest.mark.parametrize("cut", range(len(STREAM) + 1))
def test_split_at_every_byte_position(cut: int) -> None:
    """Two frames cut at any byte position decode to the same two frames."""
    decoder = EnvelopeDecoder()
    frames = decoder.feed(STREAM[:cut]) + decoder.feed(STREAM[cut:])
    assert frames == [Frame(0, b'{"heartbeat":{}}'), Frame(2, b"{}")]
    assert decoder.pending == 0


def test_byte_by_byte() -> None:
    """Feeding one byte at a time yields each frame exactly when its last byte arrives."""
    decoder = EnvelopeDecoder()
    seen = [(i, f) for i, b in enumerate(STREAM) for f in decoder.feed(bytes([b]))]
    assert seen == [(len(HEARTBEAT) - 1, Frame(0, b'{"heartbeat":{}}')), (len(STREAM) - 1, Frame(2, b"{}"))]


def test_several_frames_in_one_chunk() -> None:
    """A chunk holding three frames and half of a fourth yields three and keeps the rest pending."""
    decoder = EnvelopeDecoder()
    assert len(decoder.feed(HEARTBEAT * 3 + HEARTBEAT[:7])) == 3
    assert decoder.pending == 7
    assert decoder.feed(HEARTBEAT[7:]) == [Frame(0, b'{"heartbeat":{}}')]


def test_empty_payload_frame() -> None:
    """A zero-length frame is a frame with an empty payload."""
    assert EnvelopeDecoder().feed(bytes(5)) == [Frame(0, b"")]


def test_frame_over_cap_is_protocol_error() -> None:
    """A header announcing more than the cap fails at once, before buffering the payload."""
    decoder = EnvelopeDecoder(max_frame_bytes=16)
    with pytest.raises(UpstreamProtocolError):
        decoder.feed(bytes.fromhex("0000000011"))


def test_frame_at_cap_is_fine() -> None:
    """A frame exactly at the cap decodes."""
    assert EnvelopeDecoder(max_frame_bytes=16).feed(HEARTBEAT) == [Frame(0, b'{"heartbeat":{}}')]


def test_compressed_frame_is_protocol_error() -> None:
    """Flag 0x01 (compression, never negotiated) is a protocol error."""
    with pytest.raises(UpstreamProtocolError):
        EnvelopeDecoder().feed(encode_envelope(b"{}", 0x01))


def test_grpc_web_trailer_is_skipped() -> None:
    """A 0x80 frame is skipped and the next frame still decodes."""
    assert EnvelopeDecoder().feed(encode_envelope(b"x", 0x80) + END_OK) == [Frame(2, b"{}")]
