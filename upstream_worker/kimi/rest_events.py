"""Kimi REST completion events → canonical events, sans-IO (kimi-web-rest.md §5.2).

Each SSE `data` payload is decoded through one small envelope Struct holding only the fields we read;
unknown event kinds and unknown fields pass through untouched, and a payload that does not decode is skipped.
The state remembers what the driver needs after the stream: the `req` id (the `segment_id` of a length
continuation), whether `length` was seen, and whether the terminal `all_done` arrived.
"""

from __future__ import annotations

import msgspec

from shared.schema import Citation, Event, ReasoningDelta, TextDelta
from upstream_worker.kimi.failures import stream_error_event
from upstream_worker.kimi.sse import DONE_SENTINEL


class _SearchMsg(msgspec.Struct):
    type: str = ""
    title: str = ""
    url: str = ""


class _K1Data(msgspec.Struct):
    text: str = ""


class _StreamError(msgspec.Struct):
    error_type: str = ""
    message: str = ""


class RestEvent(msgspec.Struct):
    """The envelope of every REST event; `event` names the kind."""

    event: str = ""
    text: str = ""
    id: str = ""
    type: str = ""
    msg: _SearchMsg | None = None
    data: _K1Data | None = None
    error: _StreamError | str | None = None


_decoder = msgspec.json.Decoder(RestEvent)


class RestStream:
    """The state of one completion stream (one segment; a length continuation starts a new one)."""

    __slots__ = ("citations", "finished", "length", "segment_id", "silent")

    def __init__(self, silent: bool, citations: int = 0) -> None:
        self.silent = silent
        #: Citations emitted so far, across segments (their 1-based index continues).
        self.citations = citations
        self.segment_id: str | None = None
        self.length = False
        self.finished = False

    def feed(self, payload: str) -> Event | None:
        """One SSE data payload → at most one canonical event; raises for an `error` event."""
        if payload == DONE_SENTINEL:
            self.finished = True
            return None
        try:
            event = _decoder.decode(payload)
        except msgspec.DecodeError:
            return None
        return self.apply(event)

    def apply(self, event: RestEvent) -> Event | None:
        kind = event.event
        if kind == "cmpl":
            return TextDelta(event.text) if event.text else None
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
        return None

    def _k1(self, event: RestEvent) -> Event | None:
        if event.type and event.type != "text":
            return None  # search_targets / search_results progress, not reasoning text
        text = event.text or (event.data.text if event.data is not None else "")
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
    return stream_error_event("", err or event.text)
