"""The dialect contract: what every adapter provides, and the SSE framing they share. Pure: no I/O.

A `Dialect` parses request bytes into `Parsed`: the canonical `ChatRequest` (what Kimi is asked) and the
`ReplyOptions` (what the reply needs besides it: stop sequences, token budget, usage, reasoning shown). Its
`renderer` turns canonical events into the bytes a client sees; every dialect's renderer is the one
`adapters.dispatch.Dispatcher` driving that dialect's small writer, so the adapters decide every byte and are
tested as tables of events in and bytes out.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple, Protocol

import msgspec

from shared.attachment_input import AttachmentInput
from shared.errors import GatewayError
from shared.schema import ChatRequest, Event


@dataclass(frozen=True, slots=True)
class RequestContext:
    """What the gateway knows about a request besides its body."""

    request_id: str
    #: Model id taken from the URL (Gemini) rather than the body.
    path_model: str | None = None
    #: Gemini `alt=sse`; OpenAI / Anthropic carry `stream` in the body.
    query: dict[str, str] = field(default_factory=dict)
    now_s: float = 0.0
    #: The route's say on streaming (Gemini: `:streamGenerateContent` streams, `:generateContent` does not);
    #: None where the body says it.
    stream: bool | None = None
    #: Filled by `parse`: the request's image and document parts, in request order, for the gateway's intake
    #: (adapters/attachments.py); their places in the canonical messages are recorded in each input.
    attachments: list[AttachmentInput] = field(default_factory=list)
    #: The model ids the caller's managed key may use (None: every model): the model-list routes show only
    #: these, as the chat routes serve only these.
    allowed_models: frozenset[str] | None = None

    def may_use(self, model: str) -> bool:
        return self.allowed_models is None or model in self.allowed_models


class ReplyOptions(msgspec.Struct, frozen=True, kw_only=True):
    """What the reply needs besides the canonical request, as the client asked it; written by `parse`."""

    #: The answer ends before the first of these (OpenAI `stop`, Anthropic `stop_sequences`, Gemini
    #: `stopSequences`): Kimi takes none, so the gateway cuts (adapters/shaping.py).
    stop_sequences: tuple[str, ...] = ()
    #: The answer's token budget (OpenAI `max_completion_tokens` / `max_tokens`, Anthropic `max_tokens`,
    #: Gemini `maxOutputTokens`), enforced the same way.
    max_tokens: int | None = None
    #: Whether a stream reports usage at its end (OpenAI: only with `stream_options.include_usage`). When
    #: false, a stream's reasoning text is not kept for counting.
    stream_usage: bool = True
    #: Whether reasoning reaches the client (Anthropic `thinking: disabled` hides it, Gemini shows it only with
    #: `thinkingConfig.includeThoughts`); hidden reasoning still counts as output tokens.
    show_reasoning: bool = True


class Parsed(NamedTuple):
    """What `Dialect.parse` returns: the job's request, and what the renderer needs besides it."""

    request: ChatRequest
    reply: ReplyOptions


class Renderer(Protocol):
    """Bytes for one response. Stream mode calls `head`, `keepalive`*, `feed`*; non-stream calls `feed`* then
    `body`. `error` renders an in-band error after the first byte.

    How the gateway drives it (gateway/relay.py):
    - `stream` (of the renderer, not of the request) picks SSE/chunked output vs one body at the end.
    - Stream mode: HTTP headers are held back until the first content event (`TextDelta`, `ReasoningDelta`,
      `Citation`, `Usage`, `Done`) or the first keep-alive is due, so that errors before that still get a
      real HTTP status via `Dialect.error_response`. At that moment the gateway writes `head()`, then
      `keepalive()` every `keepalive_interval_s` until content flows, then `feed(event)` for every event.
    - `Start`, `Keepalive` are fed too (may return b""); a second `Start` (worker failover) may come.
    - `ErrorEvent` is never fed: the gateway turns it into a `GatewayError` and calls `error()` after the
      first byte (then closes), or `Dialect.error_response` before it.
    - `finished` is true once `Done` was fed; a reply without it is an error, never a success.
    """

    stream: bool
    content_type: str

    def head(self) -> bytes: ...

    def keepalive(self) -> bytes: ...

    def feed(self, event: Event) -> bytes: ...

    def error(self, exc: GatewayError) -> bytes: ...

    def body(self) -> bytes: ...

    @property
    def finished(self) -> bool: ...


class Dialect(Protocol):
    """One client API. `error_response` returns (status, extra headers, body); the gateway adds
    `Content-Type: application/json`, `x-request-id` and, when `exc.retry_after_s` is set, `Retry-After`."""

    @property
    def name(self) -> str: ...

    def parse(self, body: bytes, ctx: RequestContext) -> Parsed: ...

    def renderer(self, request: ChatRequest, reply: ReplyOptions, ctx: RequestContext) -> Renderer: ...

    def error_response(self, exc: GatewayError, request_id: str) -> tuple[int, dict[str, str], bytes]: ...


#: What a local (no job) route function returns: status, headers (Content-Type included), body.
LocalReply = tuple[int, dict[str, str], bytes]


class LocalRoute(Protocol):
    """A route answered by a pure function of the dialect (count_tokens, model lists); raises GatewayError."""

    def __call__(self, body: bytes, ctx: RequestContext) -> LocalReply: ...


# ---------------------------------------------------------------- SSE framing

SSE_CONTENT_TYPE = "text/event-stream; charset=utf-8"
JSON_CONTENT_TYPE = "application/json"


def sse_data(payload: bytes) -> bytes:
    """One `data:` frame; payload is compact JSON (no newlines)."""
    return b"data: " + payload + b"\n\n"


def sse_event(name: bytes, payload: bytes) -> bytes:
    """A named event: `event: <name>` + `data: <json>`."""
    return b"event: " + name + b"\ndata: " + payload + b"\n\n"


def sse_comment(text: bytes = b"keep-alive") -> bytes:
    """A comment line, ignored by SSE parsers (the OpenAI keep-alive)."""
    return b": " + text + b"\n\n"
