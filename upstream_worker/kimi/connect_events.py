"""Kimi Connect Chat events → canonical events, sans-IO (kimi-web-connect.md §3.2–§3.6).

Events are decoded through one envelope Struct with only the parts we read (`chat`, `message`, `block` text /
think / search, `done`, `error`); tool blocks, notifications, refs and unknown keys are ignored. Deltas are
routed by block id: `set` replaces and `append` concatenates, so a `set` that repeats text already streamed
only emits what is new. A later block of the same kind is separated from the previous one by "\\n" (as
aurora does).
"""

from __future__ import annotations

import msgspec

from shared.schema import Citation, Event, ReasoningDelta, Start, TextDelta
from upstream_worker.kimi.envelope import Frame
from upstream_worker.kimi.failures import ConnectErrorBody, connect_error

COMPLETED = "MESSAGE_STATUS_COMPLETED"


class _Chat(msgspec.Struct):
    id: str = ""


class _Message(msgspec.Struct):
    id: str = ""
    role: str = ""
    status: str = ""


class _Text(msgspec.Struct):
    content: str = ""
    flags: str = ""


class _Page(msgspec.Struct):
    title: str = ""
    url: str = ""


class _Search(msgspec.Struct):
    webPages: list[_Page] = msgspec.field(default_factory=list)


class _Block(msgspec.Struct):
    id: str = ""
    text: _Text | None = None
    think: _Text | None = None
    search: _Search | None = None


class ConnectEvent(msgspec.Struct):
    op: str = ""
    mask: str = ""
    chat: _Chat | None = None
    message: _Message | None = None
    block: _Block | None = None
    #: Empty unless the event carries `done` (msgspec cannot decode `Raw | None`).
    done: msgspec.Raw = msgspec.Raw()
    error: ConnectErrorBody | None = None


class _Trailer(msgspec.Struct):
    error: ConnectErrorBody | None = None


_event_decoder = msgspec.json.Decoder(ConnectEvent)
_trailer_decoder = msgspec.json.Decoder(_Trailer)


class ConnectStream:
    """The state of one Chat stream: ids learned, text per block, and how far the stream got."""

    __slots__ = (
        "_block_sizes",
        "_last_block",
        "_urls",
        "assistant_id",
        "chat_id",
        "citations",
        "completed",
        "done",
        "ended",
        "silent",
        "started",
    )

    def __init__(self, chat_id: str | None, silent: bool) -> None:
        self.chat_id = chat_id
        self.silent = silent
        self.assistant_id: str | None = None
        self.started = False
        self.completed = False
        self.done = False
        self.ended = False
        self.citations = 0
        self._block_sizes: dict[str, int] = {}
        #: The last block id of each kind ("text" / "think"), for the separator between blocks.
        self._last_block: dict[str, str] = {}
        self._urls: set[str] = set()

    def feed(self, frame: Frame, out: list[Event]) -> None:
        """One frame → canonical events appended to `out`; raises for an error frame or trailer."""
        if frame.end_stream:
            self._trailer(frame.payload)
            return
        try:
            event = _event_decoder.decode(frame.payload)
        except msgspec.DecodeError:
            return
        self.apply(event, out)

    def apply(self, event: ConnectEvent, out: list[Event]) -> None:
        if event.error is not None:
            raise connect_error(event.error)
        if event.chat is not None and event.chat.id:
            self._chat(event.chat.id, out)
        if event.message is not None:
            self._message(event.message)
        if event.block is not None:
            self._block(event.op, event.block, out)
        if len(event.done) > 0:
            self.done = True

    def start(self, out: list[Event]) -> None:
        if not self.started:
            self.started = True
            out.append(Start(conversation_id=self.chat_id))

    def _trailer(self, payload: bytes) -> None:
        self.ended = True
        try:
            trailer = _trailer_decoder.decode(payload) if payload else _Trailer()
        except msgspec.DecodeError:
            return
        if trailer.error is not None:
            raise connect_error(trailer.error)

    def _chat(self, chat_id: str, out: list[Event]) -> None:
        if self.chat_id is None:
            self.chat_id = chat_id
        self.start(out)

    def _message(self, message: _Message) -> None:
        if message.role == "assistant" and message.id:
            self.assistant_id = message.id
        if message.status == COMPLETED and message.id and message.id == self.assistant_id:
            self.completed = True

    def _block(self, op: str, block: _Block, out: list[Event]) -> None:
        if block.think is not None:
            self._delta(op, block.id, "think", block.think.content, out)
        elif block.text is not None:
            kind = "think" if block.text.flags == "thinking" else "text"
            self._delta(op, block.id, kind, block.text.content, out)
        elif block.search is not None and not self.silent:
            self._citations(block.search.webPages, out)

    def _delta(self, op: str, block_id: str, kind: str, content: str, out: list[Event]) -> None:
        key = block_id
        seen = self._block_sizes.get(key)
        if op == "set" and seen is not None:
            text = content[seen:] if len(content) > seen else ""  # a re-set of what was streamed
            self._block_sizes[key] = max(seen, len(content))
        else:
            text = content
            self._block_sizes[key] = (seen or 0) + len(content)
        if seen is None:
            previous = self._last_block.get(kind)
            self._last_block[kind] = block_id
            if previous is not None and previous != block_id:
                text = "\n" + text
        if text:
            self.start(out)
            out.append(ReasoningDelta(text) if kind == "think" else TextDelta(text))

    def _citations(self, pages: list[_Page], out: list[Event]) -> None:
        for page in pages:
            if page.url and page.url not in self._urls:
                self._urls.add(page.url)
                self.citations += 1
                self.start(out)
                out.append(Citation(index=self.citations, title=page.title or page.url, url=page.url))
