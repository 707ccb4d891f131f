"""What every dialect adapter provides, and the SSE framing they share. Pure: no I/O.

A `Dialect` turns request bytes into a canonical `ChatRequest` and builds a `Renderer` per request. The
gateway feeds the renderer canonical events and writes whatever bytes it returns, so the adapters decide every
byte a client sees, and can be tested as tables of events in and bytes out.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from shared.errors import GatewayError
from shared.schema import ChatRequest, Event, Message


@dataclass(frozen=True, slots=True)
class RequestContext:
    """What the gateway knows about a request besides its body."""

    request_id: str
    #: Model id taken from the URL (Gemini) rather than the body.
    path_model: str | None = None
    #: Gemini `alt=sse`; OpenAI / Anthropic carry `stream` in the body.
    query: dict[str, str] = field(default_factory=dict)
    now_s: float = 0.0
    #: Facts `parse` found in the body that only this dialect's renderer needs (OpenAI:
    #: `stream_options.include_usage`). Written by `parse`, read by `renderer`; nothing else touches it.
    hints: dict[str, object] = field(default_factory=dict)


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

    name: str

    def parse(self, body: bytes, ctx: RequestContext) -> ChatRequest: ...

    def renderer(self, request: ChatRequest, ctx: RequestContext) -> Renderer: ...

    def error_response(self, exc: GatewayError, request_id: str) -> tuple[int, dict[str, str], bytes]: ...


def has_text(messages: list[Message]) -> bool:
    """Whether any message carries text: a request with none would cost an account lease and a chat."""
    return any(m.text().strip() for m in messages)


@dataclass(slots=True)
class FunctionDialect:
    """A `Dialect` made of one adapter module's pure functions."""

    name: str
    parse: Callable[[bytes, RequestContext], ChatRequest]
    renderer: Callable[[ChatRequest, RequestContext], Renderer]
    error_response: Callable[[GatewayError, str], tuple[int, dict[str, str], bytes]]


#: What a local (no job) route function returns: status, headers (Content-Type included), body.
LocalReply = tuple[int, dict[str, str], bytes]


class LocalRoute(Protocol):
    """A route answered by a pure function of the dialect (count_tokens, model lists); raises GatewayError."""

    def __call__(self, body: bytes, ctx: RequestContext) -> LocalReply: ...


# ---------------------------------------------------------------- SSE framing

SSE_CONTENT_TYPE = "text/event-stream; charset=utf-8"


def sse_data(payload: bytes) -> bytes:
    """One `data:` frame; payload is compact JSON (no newlines)."""
    return b"data: " + payload + b"\n\n"


def sse_event(name: bytes, payload: bytes) -> bytes:
    """A named event: `event: <name>` + `data: <json>`."""
    return b"event: " + name + b"\ndata: " + payload + b"\n\n"


def sse_comment(text: bytes = b"keep-alive") -> bytes:
    """A comment line, ignored by SSE parsers (the OpenAI keep-alive)."""
    return b": " + text + b"\n\n"
