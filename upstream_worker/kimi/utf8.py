"""Characters whose UTF-8 bytes Kimi cut between two text events, joined again, sans-IO.

Where a character can be split on its way to us (kimi-web-rest.md §5.1, kimi-web-connect.md §1.5):
- between two TCP chunks inside one SSE line or one Connect frame: the SSE decoder's incremental UTF-8 decoder
  and the envelope decoder's frame buffer hold the first bytes until the rest arrives;
- between two events, when Kimi cuts the text at a byte and writes each part's raw bytes into its event's JSON
  string: neither event is valid UTF-8 alone. The decoders keep such bytes as surrogate escapes
  (`surrogateescape`, U+DC80–U+DCFF, see `upstream_worker.drift`) and one `Utf8Joiner` per text channel decodes
  the channel's bytes incrementally across its events, so the character comes out whole, once both parts came.
Bytes that never complete a character (or a U+FFFD Kimi already sent) cannot be restored: they come out as
U+FFFD, where they were, never as escapes, which nothing downstream could encode.
"""

from __future__ import annotations

import codecs
import re

_SURROGATE = re.compile("[\ud800-\udfff]")
#: Surrogates that are no escaped byte (a lone JSON `\\ud83d` half): no byte to rejoin.
_NOT_A_BYTE = re.compile("[\ud800-\udc7f\udd00-\udfff]")
_ESCAPED_BYTE = re.compile("[\udc80-\udcff]")
REPLACEMENT = "\ufffd"


def clean(text: str) -> str:
    """`text` with any surrogate (an escaped byte that no joiner saw) as U+FFFD: safe to encode."""
    return _SURROGATE.sub(REPLACEMENT, text)


class Utf8Joiner:
    """push(text) → the text whose characters are complete; the first bytes of a cut one wait for the rest."""

    __slots__ = ("_decoder", "_pending")

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")("surrogateescape")
        self._pending = False

    @property
    def pending(self) -> bool:
        """The first bytes of a character are waiting for the rest."""
        return self._pending

    def push(self, text: str) -> str:
        if not self._pending and _SURROGATE.search(text) is None:
            return text  # the common case: nothing cut, nothing held
        data = _NOT_A_BYTE.sub(REPLACEMENT, text).encode("utf-8", "surrogateescape")
        out = self._decoder.decode(data)
        self._pending = bool(self._decoder.getstate()[0])
        return _ESCAPED_BYTE.sub(REPLACEMENT, out)

    def flush(self) -> str:
        """The end of the channel: bytes still waiting never became a character."""
        if not self._pending:
            return ""
        self._pending = False
        rest = self._decoder.decode(b"", final=True)
        self._decoder.reset()
        return _ESCAPED_BYTE.sub(REPLACEMENT, rest)
