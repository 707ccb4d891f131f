"""The one event dispatcher: canonical events in, a dialect's bytes out, through that dialect's small `Writer`.

What every dialect does the same way lives here, once: answer text and citations pass through the
`OutputLimiter` (stop sequences, token budget; citations as text unless the model is `-silent`), reasoning is
shown or hidden (`ReplyOptions.show_reasoning`), the worker's `Usage` is kept for the ending, a kept chat adopts
Kimi's conversation id from `Start` / `Done`, the worker's `Keepalive` becomes the dialect's keep-alive in a
stream, an `ErrorEvent` raises in non-stream mode (so it keeps its HTTP status) or renders in-band in a stream,
and `finished` turns true once the reply has ended, by `Done` or by a cut. A writer only says what each piece
looks like on its wire: one method per piece, no dispatch of its own. A `ToolCallEvent` (a whole call, after
the answer's text) first releases the text the limiter held back, then becomes the writer's `tool_call`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple, Protocol

from adapters.base import Parsed, ReplyOptions, RequestContext
from adapters.common import ReplyUsage, reply_usage
from adapters.shaping import OutputLimiter, StopCause
from shared.errors import GatewayError, error_from_event
from shared.schema import (
    ChatRequest,
    Citation,
    Done,
    ErrorEvent,
    Event,
    FinishReason,
    Keepalive,
    ReasoningDelta,
    Start,
    TextDelta,
    ToolCall,
    ToolCallEvent,
    Usage,
)

#: Why an answer ended: `Done`'s finish reason, or the limiter's cause when the gateway cut it.
EndReason = FinishReason | StopCause
_UNCOUNTED = ReplyUsage(0, 0, reasoning_tokens=0)


class Ending(NamedTuple):
    """How the reply ended, for `Writer.finish` and `Writer.body`."""

    #: None only for a body asked for before the reply ended.
    reason: EndReason | None
    #: The stop sequence that cut the answer (reason "stop_sequence"), else None.
    stop_sequence: str | None
    #: Whole-reply counts; all zero at the end of a stream that reports none (`ReplyOptions.stream_usage`).
    usage: ReplyUsage


class Writer(Protocol):
    """What one dialect's reply looks like, piece by piece; the `Dispatcher` decides which piece and when.

    In a stream each method returns that piece's bytes; in non-stream mode the pieces return b"" (or only keep
    what `body` needs) and `body` writes the whole reply once."""

    @property
    def content_type(self) -> str: ...

    @property
    def keepalive(self) -> bytes:
        """The dialect's keep-alive bytes, written by the relay's timer while nothing else is."""
        ...

    @property
    def echoes_keepalive(self) -> bool:
        """Whether a worker `Keepalive` is written as `keepalive` too; false leaves pings to the relay's timer."""
        ...

    def head(self) -> bytes:
        """What a stream starts with, written with its headers."""
        ...

    def adopt(self, conversation_id: str) -> None:
        """A kept chat's Kimi conversation id, from `Start` or `Done` (a dialect may answer with it)."""
        ...

    def answer(self, text: str) -> bytes:
        """Answer text the limiter let through (never empty)."""
        ...

    def reasoning(self, text: str) -> bytes:
        """Reasoning text, when the client asked to see it."""
        ...

    def tool_call(self, index: int, call: ToolCall) -> bytes:
        """One whole call of the answer (`index` from 0 within the answer), after all of the answer's text. In a
        stream the writer splits it into its dialect's fragments; in non-stream mode it keeps it for `body`."""
        ...

    def finish(self, ending: Ending, text: str) -> bytes:
        """The end of a stream: the last answer text (the limiter's held-back tail, or the piece before a cut;
        maybe empty), the finish reason, usage. Non-stream replies end in `body` instead."""
        ...

    def error(self, exc: GatewayError) -> bytes:
        """An error after the first byte, in-band; the stream closes after it."""
        ...

    def body(self, ending: Ending, answer: str, reasoning: str) -> bytes:
        """The whole non-stream reply: the answer sent, all reasoning, how it ended."""
        ...


class Dispatcher:
    """The `Renderer` of every dialect: feeds canonical events to the dialect's `Writer`. One per request."""

    __slots__ = (
        "_finished",
        "_heartbeat",
        "_keep_chat",
        "_limiter",
        "_reason",
        "_reasoning",
        "_request",
        "_show_reasoning",
        "_silent",
        "_stream_usage",
        "_usage",
        "_writer",
        "content_type",
        "stream",
    )

    def __init__(self, request: ChatRequest, reply: ReplyOptions, writer: Writer) -> None:
        self.stream = request.stream
        self.content_type = writer.content_type
        self._writer = writer
        self._request = request
        #: Holds the answer text sent so far (the non-stream body, the usage estimate).
        self._limiter = OutputLimiter(reply.stop_sequences, reply.max_tokens)
        self._silent = request.options.silent
        self._keep_chat = request.options.keep_chat
        self._show_reasoning = reply.show_reasoning
        self._heartbeat = writer.keepalive if request.stream and writer.echoes_keepalive else b""
        #: Reasoning is kept for the non-stream body, or to count it when a stream reports usage.
        self._reasoning: list[str] | None = [] if not request.stream or reply.stream_usage else None
        self._stream_usage = reply.stream_usage
        self._usage: Usage | None = None
        self._reason: EndReason | None = None
        self._finished = False

    @property
    def finished(self) -> bool:
        return self._finished

    def head(self) -> bytes:
        return self._writer.head()

    def keepalive(self) -> bytes:
        return self._writer.keepalive

    def feed(self, event: Event) -> bytes:
        if self._finished:
            return b""
        match event:
            case TextDelta(text=text):
                return self._answer(self._limiter.feed(text))
            case ReasoningDelta(text=text):
                if self._reasoning is not None:
                    self._reasoning.append(text)
                return self._writer.reasoning(text) if self._show_reasoning else b""
            case Citation():
                return b"" if self._silent else self._answer(self._limiter.feed_citation(event))
            case Usage():
                self._usage = event
                return b""
            case Keepalive():
                return self._heartbeat
            case Start(conversation_id=cid):
                self._adopt(cid)
                return b""
            case ToolCallEvent(index=index, call=call):
                return self._tool_call(index, call)
            case Done(finish_reason=reason, conversation_id=cid):
                self._adopt(cid)
                return self._end(reason, self._limiter.flush())
            case ErrorEvent():
                exc = error_from_event(event)
                if not self.stream:
                    raise exc
                return self.error(exc)
            case _:
                return b""

    def error(self, exc: GatewayError) -> bytes:
        self._finished = True
        return self._writer.error(exc)

    def body(self) -> bytes:
        ending = Ending(self._reason, self._limiter.stop_sequence, self._final_usage())
        return self._writer.body(ending, self._limiter.sent_text, "".join(self._reasoning or ()))

    def _answer(self, sent: str) -> bytes:
        """Answer text the limiter let through; the end of the reply once the limiter stopped."""
        if self._limiter.cause is not None:
            return self._end("stop", sent)
        return self._writer.answer(sent) if sent else b""

    def _tool_call(self, index: int, call: ToolCall) -> bytes:
        """A call, after the answer text the limiter still held back (that text comes before the call)."""
        out = self._answer(self._limiter.flush())
        return out if self._finished else out + self._writer.tool_call(index, call)

    def _end(self, reason: FinishReason, text: str) -> bytes:
        """The reply ends: `Done`'s reason, unless the limiter cut the answer (also while flushing its tail)."""
        self._finished = True
        self._reason = self._limiter.cause or reason
        if not self.stream:  # `body` writes the ending; the last text is answer text like any other
            return self._writer.answer(text) if text else b""
        usage = self._final_usage() if self._stream_usage else _UNCOUNTED
        return self._writer.finish(Ending(self._reason, self._limiter.stop_sequence, usage), text)

    def _final_usage(self) -> ReplyUsage:
        limiter, reasoning = self._limiter, self._reasoning or ()
        return reply_usage(self._usage, limiter.stopped, self._request.messages, limiter.sent_text, reasoning)

    def _adopt(self, conversation_id: str | None) -> None:
        if conversation_id and self._keep_chat:
            self._writer.adopt(conversation_id)


WriterFactory = Callable[[ChatRequest, ReplyOptions, RequestContext], Writer]


@dataclass(frozen=True, slots=True)
class FunctionDialect:
    """A `Dialect` made of one adapter module's pure functions and its writer; the renderer is the dispatcher."""

    name: str
    parse: Callable[[bytes, RequestContext], Parsed]
    writer: WriterFactory
    error_response: Callable[[GatewayError, str], tuple[int, dict[str, str], bytes]]

    def renderer(self, request: ChatRequest, reply: ReplyOptions, ctx: RequestContext) -> Dispatcher:
        return Dispatcher(request, reply, self.writer(request, reply, ctx))
