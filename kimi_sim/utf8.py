"""Characters cut between two events (fault `split_utf8_events`, kimi-web-rest.md §5.1 and §11.4).

Kimi may cut its text at a byte, inside a multi-byte character, and write each part's raw bytes into its own
event's JSON string, so that neither event is valid UTF-8 on its own. Pieces that end or start inside a
character are kept here as `str` with surrogate escapes (`surrogateescape`, U+DC80–U+DCFF); `encode_json`
writes such escapes back as the raw bytes they stand for.
"""

from __future__ import annotations

import itertools
import json
from typing import Any

import msgspec

from .answers import split_chunks

_encoder = msgspec.json.Encoder()


def split_utf8_chunks(text: str, n: int) -> list[str]:
    """`text` in at most `n` pieces, each cut moved one byte into the first multi-byte character at or after the
    cut `split_chunks` would make (left where it is when only ASCII follows).

    The pieces' bytes (`surrogateescape`) join to exactly `text`'s UTF-8 bytes.
    """
    data = text.encode()
    cuts: list[int] = []
    boundary = 0
    for piece in split_chunks(text, n)[:-1]:
        boundary += len(piece)
        cut = _cut_at(text, boundary)
        if (not cuts or cut > cuts[-1]) and cut < len(data):
            cuts.append(cut)
    edges = [0, *cuts, len(data)]
    return [data[a:b].decode("utf-8", "surrogateescape") for a, b in itertools.pairwise(edges)]


def _cut_at(text: str, boundary: int) -> int:
    """The byte offset of the cut for the character boundary `boundary`."""
    index = boundary
    while index < len(text) and ord(text[index]) < 0x80:
        index += 1
    if index == len(text):
        return len(text[:boundary].encode())
    return len(text[:index].encode()) + 1


def whole(pieces: str) -> str:
    """The text of joined pieces (a character still cut at the end becomes U+FFFD)."""
    return pieces.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def encode_json(obj: Any) -> bytes:
    """Compact JSON; strings holding surrogate escapes are written with the raw bytes they stand for."""
    try:
        return _encoder.encode(obj)
    except UnicodeEncodeError:
        text = json.dumps(obj, ensure_ascii=False, separators=(",", ":"))
        return text.encode("utf-8", "surrogateescape")
