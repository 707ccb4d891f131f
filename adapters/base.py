"""What every dialect adapter provides, and the SSE framing they share. Pure: no I/O.

A `Dialect` turns request bytes into a canonical `ChatRequest` and builds a `Renderer` per request. The gateway
feeds the renderer canonical events and writes whatever bytes it returns, so the adapters decide every byte a
client sees, and can be tested as tables of events in and bytes out.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

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


class Renderer(Protocol):
    """Bytes for one response. Stream mode calls `head`, `keepalive`*, `feed`*; non-stream calls `feed`* then
    `body`. `error` renders an in-band error after the first byte."""

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
    name: str

    def parse(self, body: bytes, ctx: RequestContext) -> ChatRequest: ...

    def renderer(self, request: ChatRequest, ctx: RequestContext) -> Renderer: ...

    def error_response(self, exc: GatewayError, request_id: str) -> tuple[int, dict[str, str], bytes]: ...


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
