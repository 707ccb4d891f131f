"""Connect streaming envelopes, sans-IO (kimi-web-connect.md §1.5).

An envelope is `flags (u8) ‖ length (u32, big-endian) ‖ payload`. Flag 0x02 marks the end-of-stream frame (its
payload is `{}` or `{"error": …}`); 0x01 would mean compression, which Kimi never negotiates; 0x80 (gRPC-web
trailers) is not expected and skipped. Frames longer than the cap are a protocol error, not a reason to buffer
without bound.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

from shared.errors import UpstreamProtocolError

FLAG_COMPRESSED = 0x01
FLAG_END_STREAM = 0x02
FLAG_GRPC_WEB_TRAILER = 0x80
#: OmniRoute's cap; the largest real event (a page of search results) is far below it.
MAX_FRAME_BYTES = 8 * 1024 * 1024
HEADER = struct.Struct(">BI")
_HEADER_SIZE = HEADER.size


class Frame(NamedTuple):
    flags: int
    payload: bytes

    @property
    def end_stream(self) -> bool:
        return bool(self.flags & FLAG_END_STREAM)


def encode_envelope(payload: bytes, flags: int = 0) -> bytes:
    return HEADER.pack(flags, len(payload)) + payload


class EnvelopeDecoder:
    """feed(bytes) → the frames those bytes complete, buffering partial frames across TCP chunks."""

    __slots__ = ("_buf", "_max")

    def __init__(self, max_frame_bytes: int = MAX_FRAME_BYTES) -> None:
        self._buf = bytearray()
        self._max = max_frame_bytes

    @property
    def pending(self) -> int:
        """Bytes of an incomplete frame still waiting for the rest."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[Frame]:
        if self._buf:
            self._buf += data
            if self._incomplete():
                return []
            data = bytes(self._buf)
        frames: list[Frame] = []
        offset = self._parse(data, frames)
        self._buf = bytearray(data[offset:]) if offset < len(data) else bytearray()
        return frames

    def _incomplete(self) -> bool:
        """True while the buffered frame still lacks bytes (avoids re-copying a large frame per chunk)."""
        if len(self._buf) < _HEADER_SIZE:
            return True
        length: int = HEADER.unpack_from(self._buf, 0)[1]
        return length <= self._max and len(self._buf) < _HEADER_SIZE + length

    def _parse(self, data: bytes, frames: list[Frame]) -> int:
        offset, size = 0, len(data)
        while size - offset >= _HEADER_SIZE:
            flags, length = HEADER.unpack_from(data, offset)
            if length > self._max:
                raise UpstreamProtocolError(f"Kimi sent a {length}-byte frame (cap {self._max})")
            end = offset + _HEADER_SIZE + length
            if end > size:
                break
            if flags & FLAG_COMPRESSED:
                raise UpstreamProtocolError("Kimi sent a compressed frame, but none was negotiated")
            if not flags & FLAG_GRPC_WEB_TRAILER:
                frames.append(Frame(flags, data[offset + _HEADER_SIZE : end]))
            offset = end
        return offset
