"""A sans-IO Server-Sent Events decoder for Kimi's REST completion stream (kimi-web-rest.md §5.1).

Bytes go in as they arrive from the socket; complete `data` payloads come out. An incremental UTF-8
decoder sits under the line splitter, so a multi-byte character split across TCP chunks is joined instead of
being replaced by U+FFFD. Bytes that are not UTF-8 within their line (Kimi cut a character between two events,
kimi-web-rest.md §5.1) are kept as surrogate escapes (`surrogateescape`), so the event decoder can rejoin them
with the next event's bytes (`upstream_worker.kimi.utf8`). (When Kimi itself already put U+FFFD into
`cmpl.text`, the character is lost upstream; we pass it on rather than truncating the text at it as
kimi-free-api does.) `event:`, `id:`, `retry:` and comment lines are ignored: every Kimi event names itself
inside its JSON. The official API's stream (`data: {chunk}` … `data: [DONE]`) is read by the same decoder.
"""

from __future__ import annotations

import codecs

from shared.errors import UpstreamProtocolError

DONE_SENTINEL = "[DONE]"
#: The longest line or event a stream may send (characters): Kimi's events are a few KB, a search result list
#: some tens; past this an upstream (or whatever answers in its place) only grows our memory.
MAX_EVENT_CHARS = 8 * 1024 * 1024


class SseDecoder:
    """feed(bytes) → the `data` payloads of the events completed by those bytes."""

    __slots__ = ("_data", "_data_chars", "_decoder", "_max", "_partial")

    def __init__(self, max_event_chars: int = MAX_EVENT_CHARS) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")("surrogateescape")
        self._partial = ""
        self._data: list[str] = []
        self._data_chars = 0
        self._max = max_event_chars

    def feed(self, chunk: bytes) -> list[str]:
        text = self._decoder.decode(chunk)
        if "\n" not in text:
            self._partial += text
            if len(self._partial) > self._max:
                raise UpstreamProtocolError(f"the upstream sent a line over {self._max} characters")
            return []
        lines = (self._partial + text).split("\n")
        self._partial = lines.pop()
        events: list[str] = []
        for line in lines:
            self._line(line, events)
        return events

    def close(self) -> list[str]:
        """The end of the body: flush a last line and event that had no terminating blank line."""
        rest = self._partial + self._decoder.decode(b"", final=True)
        self._partial = ""
        events: list[str] = []
        if rest:
            self._line(rest, events)
        self._line("", events)
        return events

    def _line(self, line: str, events: list[str]) -> None:
        if line.endswith("\r"):
            line = line[:-1]
        if not line:
            if self._data:
                events.append(self._data[0] if len(self._data) == 1 else "\n".join(self._data))
                self._data, self._data_chars = [], 0
            return
        if line.startswith("data:"):
            value = line[5:]
            self._data_chars += len(value)
            if self._data_chars > self._max or len(line) > self._max:
                raise UpstreamProtocolError(f"the upstream sent an event over {self._max} characters")
            self._data.append(value[1:] if value.startswith(" ") else value)
