"""Connect envelope framing (kimi-web-connect.md §1.5): flags (u8) ‖ length (u32 big-endian) ‖ JSON."""

from __future__ import annotations

import struct
from typing import Any

from .utf8 import encode_json

FLAG_DATA = 0x00
FLAG_END_STREAM = 0x02
_HEADER = struct.Struct(">BI")
HEADER_SIZE = _HEADER.size


def frame(payload: bytes, flag: int = FLAG_DATA) -> bytes:
    return _HEADER.pack(flag, len(payload)) + payload


def json_frame(message: Any, flag: int = FLAG_DATA) -> bytes:
    return frame(encode_json(message), flag)


def split_frames(body: bytes) -> list[tuple[int, bytes]]:
    """Every (flag, payload) of a complete body; ValueError when it is not a whole number of envelopes."""
    frames = []
    offset = 0
    while offset < len(body):
        if len(body) - offset < HEADER_SIZE:
            raise ValueError("truncated envelope header")
        flag, length = _HEADER.unpack_from(body, offset)
        offset += HEADER_SIZE
        if len(body) - offset < length:
            raise ValueError("truncated envelope payload")
        frames.append((flag, body[offset : offset + length]))
        offset += length
    return frames
