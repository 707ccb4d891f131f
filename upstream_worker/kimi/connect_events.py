"""Kimi Connect Chat events → canonical events, sans-IO (kimi-web-connect.md §3.2–§3.6).

Events are decoded through one envelope Struct with the parts we read (`chat`, `message`, `block` text /
think / search, `done`, `error`) and the other known keys of §3.2; tool blocks, notifications and refs are
ignored. An event with a key we do not know at a checked level (the event, chat, message, block, text, think),
or whose bytes are not UTF-8, takes the second try of `upstream_worker.drift`, which notes the unknown names; a
frame that does not decode at all is noted as malformed and skipped. Deltas are routed by block id: `set`
replaces and `append` concatenates, so a `set` that repeats text already streamed only emits what is new. Each
block's text passes through a `Utf8Joiner`, so a character whose bytes Kimi cut between two events comes out
whole. A later block of the same kind is separated from the previous one by "\\n" (as aurora does).
"""

from __future__ import annotations

import msgspec

from shared.schema import Citation, Event, ReasoningDelta, Start, TextDelta
from upstream_worker.drift import Drift, lenient_decode, shape_of
from upstream_worker.kimi.envelope import Frame
from upstream_worker.kimi.failures import ConnectErrorBody, connect_error
from upstream_worker.kimi.utf8 import Utf8Joiner

COMPLETED = "MESSAGE_STATUS_COMPLETED"


class _Chat(msgspec.Struct, forbid_unknown_fields=True):
    id: str = ""
    name: object = None
    createTime: object = None
    updateTime: object = None
    files: object = None


class _Message(msgspec.Struct, forbid_unknown_fields=True):
    id: str = ""
    role: str = ""
    status: str = ""
    parentId: object = None
    scenario: object = None
    blocks: object = None
    createTime: object = None
    updateTime: object = None
    refs: object = None


class _Text(msgspec.Struct, forbid_unknown_fields=True):
    content: str = ""
    flags: str = ""


class _Page(msgspec.Struct):
    title: str = ""
    url: str = ""


class _Search(msgspec.Struct):
    webPages: list[_Page] = msgspec.field(default_factory=list)


class _Block(msgspec.Struct, forbid_unknown_fields=True):
    id: str = ""
    text: _Text | None = None
    think: _Text | None = None
    search: _Search | None = None
    parentId: object = None
    messageId: object = None
    tool: object = None
    file: object = None
    multiStage: object = None
    exception: object = None


class ConnectEvent(msgspec.Struct, forbid_unknown_fields=True):
    """One data event (§3.2): the known payload keys; any other key is a kind we do not know."""

    op: str = ""
    mask: str = ""
    chat: _Chat | None = None
    message: _Message | None = None
    block: _Block | None = None
    #: Not None when the event carries `done`.
    done: dict[str, object] | None = None
    #: A Connect error (decoded by `failures`, only when present).
    error: object = None
    eventOffset: object = None
    heartbeat: object = None
    notification: object = None
    ref: object = None


class _Trailer(msgspec.Struct):
    error: ConnectErrorBody | None = None


_event_decoder = msgspec.json.Decoder(ConnectEvent)
_trailer_decoder = msgspec.json.Decoder(_Trailer)
_error_decoder = msgspec.json.Decoder(ConnectErrorBody)
_encoder = msgspec.json.Encoder()
_CONTENT = frozenset({"content"})
SHAPE = shape_of(
    ConnectEvent,
    "event:",
    children={
        "chat": shape_of(_Chat, "field:chat."),
        "message": shape_of(_Message, "field:message."),
        "block": shape_of(
            _Block,
            "field:block.",
            children={
                "text": shape_of(_Text, "field:block.text.", raw_text=_CONTENT),
                "think": shape_of(_Text, "field:block.think.", raw_text=_CONTENT),
            },
        ),
    },
)


class ConnectStream:
    """The state of one Chat stream: ids learned, text per block, and how far the stream got."""

    __slots__ = (
        "_block_sizes",
        "_joiners",
        "_last_block",
        "_urls",
        "assistant_id",
        "chat_id",
        "citations",
        "completed",
        "done",
        "drift",
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
        self._joiners: dict[str, Utf8Joiner] = {}
        #: What this stream did not expect; the driver counts it.
        self.drift = Drift()

    def feed(self, frame: Frame, out: list[Event]) -> None:
        """One frame → canonical events appended to `out`; raises for an error frame or trailer."""
        if frame.end_stream:
            self._trailer(frame.payload, out)
            return
        try:
            event: ConnectEvent | None = _event_decoder.decode(frame.payload)
        except msgspec.DecodeError:
            event = lenient_decode(frame.payload, ConnectEvent, SHAPE, self.drift)
        if event is not None:
            self.apply(event, out)

    def apply(self, event: ConnectEvent, out: list[Event]) -> None:
        if event.error is not None:
            raise connect_error(_error_body(event.error))
        if event.chat is not None and event.chat.id:
            self._chat(event.chat.id, out)
        if event.message is not None:
            self._message(event.message)
        if event.block is not None:
            self._block(event.op, event.block, out)
        if event.done is not None:
            self.done = True
            self._flush(out)

    def start(self, out: list[Event]) -> None:
        if not self.started:
            self.started = True
            out.append(Start(conversation_id=self.chat_id))

    def _trailer(self, payload: bytes, out: list[Event]) -> None:
        self.ended = True
        try:
            trailer = _trailer_decoder.decode(payload) if payload else _Trailer()
        except msgspec.DecodeError:
            try:  # an error message cut inside a character still says which error it is
                trailer = _trailer_decoder.decode(payload.decode("utf-8", "replace"))
            except msgspec.DecodeError:
                self.drift.note("malformed")
                trailer = _Trailer()
        if trailer.error is not None:
            raise connect_error(trailer.error)
        self._flush(out)

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
        seen = self._block_sizes.get(block_id)
        if op == "set" and seen is not None:
            text = content[seen:] if len(content) > seen else ""  # a re-set of what was streamed
            self._block_sizes[block_id] = max(seen, len(content))
        else:
            text = content
            self._block_sizes[block_id] = (seen or 0) + len(content)
        joiner = self._joiners.get(block_id)
        if joiner is None:
            joiner = self._joiners[block_id] = Utf8Joiner()
        text = joiner.push(text)
        if seen is None:
            previous = self._last_block.get(kind)
            self._last_block[kind] = block_id
            if previous is not None and previous != block_id:
                text = self._flush_block(previous) + "\n" + text
        self._emit(kind, text, out)

    def _emit(self, kind: str, text: str, out: list[Event]) -> None:
        if text:
            self.start(out)
            out.append(ReasoningDelta(text) if kind == "think" else TextDelta(text))

    def _flush_block(self, block_id: str) -> str:
        joiner = self._joiners.get(block_id)
        return joiner.flush() if joiner is not None else ""

    def _flush(self, out: list[Event]) -> None:
        """The answer is over: bytes of a cut character that never completed come out (as U+FFFD)."""
        for kind, block_id in self._last_block.items():
            self._emit(kind, self._flush_block(block_id), out)

    def _citations(self, pages: list[_Page], out: list[Event]) -> None:
        for page in pages:
            if page.url and page.url not in self._urls:
                self._urls.add(page.url)
                self.citations += 1
                self.start(out)
                out.append(Citation(index=self.citations, title=page.title or page.url, url=page.url))


def _error_body(error: object) -> ConnectErrorBody:
    """An `error` of a data frame (rare: errors come in the trailer) as the Struct `failures` reads."""
    try:
        return _error_decoder.decode(_encoder.encode(error))
    except (msgspec.DecodeError, msgspec.EncodeError, UnicodeEncodeError):
        return ConnectErrorBody(code="unknown")
