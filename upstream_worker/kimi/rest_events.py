"""Kimi REST completion events → canonical events, sans-IO (kimi-web-rest.md §5.2).

Each SSE `data` payload is decoded through one small envelope Struct holding the fields of the known kinds;
a payload with a field no known kind has, or with bytes that are not UTF-8, takes the second try of
`upstream_worker.drift`, which notes the unknown names; an unknown kind is noted and skipped, and a payload
that does not decode at all is noted as malformed and skipped. Answer and reasoning text each pass through a
`Utf8Joiner`, so a character whose bytes Kimi cut between two events comes out whole. The state remembers what
the driver needs after the stream: the `req` id (the `segment_id` of a length continuation), whether `length`
was seen, and whether the terminal `all_done` arrived.
"""

from __future__ import annotations

import msgspec

from shared.schema import Citation, Event, ReasoningDelta, TextDelta
from upstream_worker.drift import Drift, lenient_decode, shape_of
from upstream_worker.kimi.failures import stream_error_event
from upstream_worker.kimi.sse import DONE_SENTINEL
from upstream_worker.kimi.utf8 import Utf8Joiner, clean

#: Every kind of kimi-web-rest.md §5.2; any other is noted as drift (`event:<kind>`) and skipped.
KNOWN_KINDS = frozenset(
    {
        "req",
        "resp",
        "debug",
        "search_plus",
        "ref_docs",
        "k1",
        "chat_prompt",
        "zone_set",
        "cmpl",
        "length",
        "done",
        "rename",
        "all_done",
        "error",
    }
)


class _SearchMsg(msgspec.Struct):
    type: str = ""
    title: str = ""
    url: str = ""


class _K1Data(msgspec.Struct, forbid_unknown_fields=True):
    text: str = ""


class _StreamError(msgspec.Struct):
    error_type: str = ""
    message: str = ""


class RestEvent(msgspec.Struct, forbid_unknown_fields=True):
    """The envelope of every REST event; `event` names the kind. Fields we do not read are `object`."""

    event: str = ""
    text: str = ""
    id: str = ""
    type: str = ""
    msg: _SearchMsg | None = None
    data: _K1Data | None = None
    error: _StreamError | str | None = None
    group_id: object = None
    content: object = None
    refs: object = None
    message: object = None
    ref_cards: object = None
    zone_type: object = None
    search_targets: object = None
    search_results: object = None


_decoder = msgspec.json.Decoder(RestEvent)
SHAPE = shape_of(
    RestEvent,
    children={"data": shape_of(_K1Data, "field:data.", raw_text=frozenset({"text"}))},
    raw_text=frozenset({"text"}),
)


class RestStream:
    """The state of one completion stream (one segment; a length continuation starts a new one)."""

    __slots__ = ("_reasoning", "_text", "citations", "drift", "finished", "length", "segment_id", "silent")

    def __init__(self, silent: bool, citations: int = 0) -> None:
        self.silent = silent
        #: Citations emitted so far, across segments (their 1-based index continues).
        self.citations = citations
        self.segment_id: str | None = None
        self.length = False
        self.finished = False
        #: What this stream did not expect; the driver counts it.
        self.drift = Drift()
        self._text = Utf8Joiner()
        self._reasoning = Utf8Joiner()

    def next_segment(self) -> RestStream:
        """The stream of a length continuation: citations, the drift and a character cut at the end carry on."""
        stream = RestStream(self.silent, self.citations)
        stream.drift, stream._text, stream._reasoning = self.drift, self._text, self._reasoning
        return stream

    def feed(self, payload: str) -> Event | None:
        """One SSE data payload → at most one canonical event; raises for an `error` event."""
        if payload == DONE_SENTINEL:
            self.finished = True
            return None
        try:
            event: RestEvent | None = _decoder.decode(payload)
        except (msgspec.DecodeError, UnicodeEncodeError):
            event = lenient_decode(payload, RestEvent, SHAPE, self.drift)
        return None if event is None else self.apply(event)

    def finish(self) -> list[Event]:
        """The end of the answer: bytes of a cut character that never completed (as U+FFFD), if any."""
        out: list[Event] = []
        if reasoning := self._reasoning.flush():
            out.append(ReasoningDelta(reasoning))
        if text := self._text.flush():
            out.append(TextDelta(text))
        return out

    def apply(self, event: RestEvent) -> Event | None:
        kind = event.event
        if kind == "cmpl":
            text = self._text.push(event.text)
            return TextDelta(text) if text else None
        if kind == "k1":
            return self._k1(event)
        if kind == "search_plus":
            return self._search(event)
        if kind == "req":
            self.segment_id = event.id or self.segment_id
        elif kind == "length":
            self.length = True
        elif kind == "all_done":
            self.finished = True
        elif kind == "error":
            raise _error(event)
        elif kind not in KNOWN_KINDS:
            self.drift.note(f"event:{kind}")
        return None

    def _k1(self, event: RestEvent) -> Event | None:
        if event.type and event.type != "text":
            return None  # search_targets / search_results progress, not reasoning text
        text = self._reasoning.push(event.text or (event.data.text if event.data is not None else ""))
        return ReasoningDelta(text) if text else None

    def _search(self, event: RestEvent) -> Event | None:
        msg = event.msg
        if msg is None or msg.type != "get_res" or self.silent or not msg.url:
            return None
        self.citations += 1
        return Citation(index=self.citations, title=msg.title or msg.url, url=msg.url)


def _error(event: RestEvent) -> Exception:
    err = event.error
    if isinstance(err, _StreamError):
        return stream_error_event(err.error_type, err.message)
    return stream_error_event("", err or clean(event.text))
