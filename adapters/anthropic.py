"""Anthropic Messages: wire request → `ChatRequest`, canonical events → the exact bytes a client sees.

Wire format: ../shared/spec/client-formats.md §2. A stream is `message_start`, then per content block
`content_block_start`, its deltas and `content_block_stop` (indices contiguous from 0), then `message_delta`
(stop reason, cumulative usage) and `message_stop`; `ping` is the keep-alive; an error after the first byte is
an in-band `event: error`. Reasoning becomes a `thinking` block, closed by the `signature_delta` the SDK
expects (a sha256 of the thinking text: Kimi signs nothing; thinking blocks sent back are ignored).

Kimi takes neither `max_tokens` nor `stop_sequences`: the gateway cuts the answer text itself
(adapters/shaping.py) and reports `max_tokens` / `stop_sequence`. `temperature`, `top_p`, `top_k`, `metadata`
and `tools` are accepted and ignored; image and document blocks answer 400 until file uploads are supported;
`thinking: {"type": "disabled"}` hides the thinking blocks of a thinking model.
"""

from __future__ import annotations

import base64
import hashlib
from typing import Annotated, Final, Literal, TypeVar

import msgspec

from adapters.base import (
    SSE_CONTENT_TYPE,
    FunctionDialect,
    LocalReply,
    RequestContext,
    has_text,
    sse_event,
)
from adapters.shaping import LimitedRenderer, limiter_from_hints
from shared.errors import BadRequest, GatewayError, ModelNotFound
from shared.models import ModelSpec, resolve_model
from shared.schema import (
    ChatOptions,
    ChatRequest,
    Message,
    Part,
    TextPart,
    Usage,
)
from shared.usage_estimate import estimate_prompt_tokens, estimate_tokens

NAME: Final = "anthropic"
JSON_CONTENT_TYPE: Final = "application/json"
HINT_STOP: Final = "stop_sequences"
HINT_MAX_TOKENS: Final = "max_tokens"
HINT_SHOW_THINKING: Final = "show_thinking"

# ---------------------------------------------------------------- wire request (unknown fields ignored)


class _Wire(msgspec.Struct, tag_field="type"):
    pass


class _Text(_Wire, tag="text"):
    text: str


class _Image(_Wire, tag="image"):
    pass


class _Document(_Wire, tag="document"):
    pass


class _Thinking(_Wire, tag="thinking"):
    pass


class _RedactedThinking(_Wire, tag="redacted_thinking"):
    pass


class _ToolUse(_Wire, tag="tool_use"):
    pass


class _ToolResult(_Wire, tag="tool_result"):
    pass


_Block = _Text | _Image | _Document | _Thinking | _RedactedThinking | _ToolUse | _ToolResult


class _Message(msgspec.Struct):
    role: Literal["user", "assistant"]
    content: str | list[_Block]


class _ThinkingParam(msgspec.Struct):
    type: str = "enabled"


class _CountRequest(msgspec.Struct):
    model: str
    messages: list[_Message]
    system: str | list[_Text] = ""


class _Request(_CountRequest):
    max_tokens: Annotated[int, msgspec.Meta(ge=1)] = 0
    stop_sequences: list[str] = msgspec.field(default_factory=list)
    stream: bool = False
    thinking: _ThinkingParam | None = None


_T = TypeVar("_T")
_request_decoder: Final = msgspec.json.Decoder(_Request)
_count_decoder: Final = msgspec.json.Decoder(_CountRequest)
_json_encoder: Final = msgspec.json.Encoder()
_UNSUPPORTED: Final[dict[type[_Wire], str]] = {
    _Image: "Image content blocks are not supported yet.",
    _Document: "Document content blocks are not supported yet.",
    _ToolUse: "Tool use is not supported by Kimi's web chat.",
    _ToolResult: "Tool use is not supported by Kimi's web chat.",
}


def parse(body: bytes, ctx: RequestContext) -> ChatRequest:
    """The canonical request of a `POST /v1/messages` body; raises BadRequest / ModelNotFound."""
    wire = _decode(_request_decoder, body)
    if wire.max_tokens == 0:
        raise BadRequest("max_tokens: Field required", param="max_tokens")
    spec = _resolve(wire.model)
    ctx.hints[HINT_STOP] = list(wire.stop_sequences)
    ctx.hints[HINT_MAX_TOKENS] = wire.max_tokens
    ctx.hints[HINT_SHOW_THINKING] = wire.thinking is None or wire.thinking.type != "disabled"
    messages = _messages(wire)
    if not has_text(messages):
        param = f"messages.{len(wire.messages) - 1}.content"
        raise BadRequest(f"{param}: the messages hold no text; there is nothing to answer", param=param)
    return ChatRequest(
        request_id=ctx.request_id,
        model=wire.model.strip(),
        messages=messages,
        stream=wire.stream,
        options=_options(spec),
        dialect=NAME,
    )


def _decode(decoder: msgspec.json.Decoder[_T], body: bytes) -> _T:
    if not body.strip():
        raise BadRequest("The request body is empty; expected a JSON object.")
    try:
        wire = decoder.decode(body)
    except msgspec.ValidationError as exc:
        raise BadRequest(f"Invalid request: {exc}") from exc
    except msgspec.DecodeError as exc:
        raise BadRequest(f"The request body is not valid JSON: {exc}") from exc
    return wire


def _resolve(model: str) -> ModelSpec:
    spec = resolve_model(model)
    if spec is None:
        raise ModelNotFound(f"model: {model}", param="model")
    return spec


def _messages(wire: _CountRequest) -> list[Message]:
    if not wire.messages:
        raise BadRequest("messages: at least one message is required", param="messages")
    system = _system(wire.system)
    turns = [Message(role=m.role, content=_content(m.content, i)) for i, m in enumerate(wire.messages)]
    return [system, *turns] if system is not None else turns


def _system(system: str | list[_Text]) -> Message | None:
    if isinstance(system, str):
        return Message(role="system", content=system) if system else None
    return Message(role="system", content=[TextPart(text=b.text) for b in system]) if system else None


def _content(content: str | list[_Block], index: int) -> str | list[Part]:
    if isinstance(content, str):
        return content
    parts: list[Part] = []
    for j, block in enumerate(content):
        if isinstance(block, _Text):
            parts.append(TextPart(text=block.text))
        elif type(block) in _UNSUPPORTED:
            raise BadRequest(_UNSUPPORTED[type(block)], param=f"messages.{index}.content.{j}")
    return parts


def _options(spec: ModelSpec) -> ChatOptions:
    return ChatOptions(
        search=spec.search,
        silent=spec.silent,
        thinking=spec.thinking,
        research=spec.research,
        math=spec.math,
        k1=spec.k1,
    )


# ---------------------------------------------------------------- count_tokens


class _TokenCount(msgspec.Struct):
    input_tokens: int


def count_tokens(body: bytes, ctx: RequestContext) -> LocalReply:
    """`POST /v1/messages/count_tokens`: the estimated input tokens of a Messages request."""
    wire = _decode(_count_decoder, body)
    _resolve(wire.model)
    tokens = estimate_prompt_tokens([m.text() for m in _messages(wire)])
    return 200, {"Content-Type": JSON_CONTENT_TYPE}, _json_encoder.encode(_TokenCount(tokens))


# ---------------------------------------------------------------- errors

#: Kind → (HTTP status, error.type); a status of 0 keeps the error's own status.
_ERROR_TYPE: Final[dict[str, tuple[int, str]]] = {
    "invalid_request": (400, "invalid_request_error"),
    "authentication": (401, "authentication_error"),
    "permission": (403, "permission_error"),
    "not_found": (404, "not_found_error"),
    "model_not_found": (404, "not_found_error"),
    "too_large": (413, "request_too_large"),
    "rate_limited": (429, "rate_limit_error"),
    "overloaded": (529, "overloaded_error"),
    "content_filter": (400, "invalid_request_error"),
}


class _ErrorBody(msgspec.Struct):
    type: str
    message: str


class _ErrorEnvelope(msgspec.Struct, tag="error", tag_field="type"):
    error: _ErrorBody


class _ErrorResponse(_ErrorEnvelope, tag="error"):
    request_id: str


def _status_and_type(exc: GatewayError) -> tuple[int, str]:
    status, error_type = _ERROR_TYPE.get(exc.kind, (0, "api_error"))
    return (status or exc.status), error_type


def error_response(exc: GatewayError, request_id: str) -> tuple[int, dict[str, str], bytes]:
    """`{"type": "error", "error": {"type", "message"}, "request_id"}` with Anthropic's status."""
    status, error_type = _status_and_type(exc)
    body = _json_encoder.encode(_ErrorResponse(_ErrorBody(error_type, exc.message), request_id))
    return status, {"request-id": request_id}, body


# ---------------------------------------------------------------- rendering


class _TextOut(msgspec.Struct, tag="text", tag_field="type"):
    text: str


class _ThinkingOut(msgspec.Struct, tag="thinking", tag_field="type"):
    thinking: str
    signature: str


_BlockOut = _TextOut | _ThinkingOut


class _UsageOut(msgspec.Struct):
    input_tokens: int
    output_tokens: int


class _MessageOut(msgspec.Struct, tag="message", tag_field="type"):
    id: str
    role: str
    model: str
    content: list[_BlockOut]
    stop_reason: str | None
    stop_sequence: str | None
    usage: _UsageOut


class _StopDelta(msgspec.Struct):
    stop_reason: str
    stop_sequence: str | None


class _MessageStart(msgspec.Struct, tag="message_start", tag_field="type"):
    message: _MessageOut


class _MessageDelta(msgspec.Struct, tag="message_delta", tag_field="type"):
    delta: _StopDelta
    usage: _UsageOut


_STOP_REASON: Final[dict[str, str]] = {
    "stop": "end_turn",
    "length": "max_tokens",
    "content_filter": "refusal",
}
_PING: Final = sse_event(b"ping", b'{"type":"ping"}')
_MESSAGE_STOP: Final = sse_event(b"message_stop", b'{"type":"message_stop"}')


def thinking_signature(thinking: str) -> str:
    """The opaque `signature` of a thinking block: base64 of the sha256 of its text."""
    return base64.b64encode(hashlib.sha256(thinking.encode()).digest()).decode()


class AnthropicRenderer(LimitedRenderer):
    """Bytes of one Messages response, streamed or whole. One per request."""

    def __init__(self, request: ChatRequest, ctx: RequestContext) -> None:
        self.stream = request.stream
        self.content_type = SSE_CONTENT_TYPE if request.stream else JSON_CONTENT_TYPE
        self._request = request
        self._id = f"msg_{request.request_id}"
        self._silent = request.options.silent
        self._show_thinking = bool(ctx.hints.get(HINT_SHOW_THINKING, True))
        self._limiter = limiter_from_hints(ctx.hints, HINT_STOP, HINT_MAX_TOKENS)
        self._input_tokens = estimate_prompt_tokens([m.text() for m in request.messages])
        self._usage: Usage | None = None
        self._blocks: list[_BlockOut] = []
        self._open = False
        self._reasoning: list[str] = []
        self._stop_reason: str | None = None
        self._finished = False

    def head(self) -> bytes:
        start = _MessageStart(self._message(None, _UsageOut(self._input_tokens, 0), content=[]))
        return sse_event(b"message_start", _json_encoder.encode(start))

    def keepalive(self) -> bytes:
        return _PING

    def _done(self, reason: str) -> bytes:
        return self._finish(_STOP_REASON.get(reason, "end_turn"))

    def error(self, exc: GatewayError) -> bytes:
        self._finished = True
        _, error_type = _status_and_type(exc)
        return sse_event(b"error", _json_encoder.encode(_ErrorEnvelope(_ErrorBody(error_type, exc.message))))

    def body(self) -> bytes:
        content = [_TextOut(b.text) if isinstance(b, _TextOut) else self._signed(b) for b in self._blocks]
        return _json_encoder.encode(self._message(self._stop_reason, self._final_usage(), content=content))

    # -- pieces

    def _message(self, stop_reason: str | None, usage: _UsageOut, *, content: list[_BlockOut]) -> _MessageOut:
        stop_sequence = self._limiter.stop_sequence if stop_reason == "stop_sequence" else None
        return _MessageOut(
            self._id, "assistant", self._request.model, content, stop_reason, stop_sequence, usage
        )

    def _answer(self, sent: str) -> bytes:
        """Renders answer text the limiter let through, and the end of the message when it stopped."""
        out = self._text_delta(sent)
        if self._limiter.cause is not None:
            out += self._finish(self._limiter.cause)
        return out

    def _text_delta(self, text: str) -> bytes:
        if not text:
            return b""
        out = self._ensure_block(_TextOut)
        block = self._blocks[-1]
        assert isinstance(block, _TextOut)
        block.text += text
        if not self.stream:
            return out
        delta = b'{"type":"text_delta","text":' + _json_encoder.encode(text) + b"}"
        return out + self._delta(delta)

    def _thought(self, text: str) -> bytes:
        self._reasoning.append(text)
        if not self._show_thinking or not text:
            return b""
        out = self._ensure_block(_ThinkingOut)
        block = self._blocks[-1]
        assert isinstance(block, _ThinkingOut)
        block.thinking += text
        if not self.stream:
            return out
        delta = b'{"type":"thinking_delta","thinking":' + _json_encoder.encode(text) + b"}"
        return out + self._delta(delta)

    def _delta(self, delta: bytes) -> bytes:
        index = str(len(self._blocks) - 1).encode()
        payload = b'{"type":"content_block_delta","index":' + index + b',"delta":' + delta + b"}"
        return sse_event(b"content_block_delta", payload)

    def _ensure_block(self, kind: type[_TextOut] | type[_ThinkingOut]) -> bytes:
        """Opens a block of `kind` unless the open block is one, closing the other kind first."""
        if self._open and isinstance(self._blocks[-1], kind):
            return b""
        out = self._close_block()
        block: _BlockOut = _TextOut("") if kind is _TextOut else _ThinkingOut("", "")
        self._blocks.append(block)
        self._open = True
        if not self.stream:
            return out
        index = str(len(self._blocks) - 1).encode()
        payload = b'{"type":"content_block_start","index":' + index + b',"content_block":'
        return out + sse_event(b"content_block_start", payload + _json_encoder.encode(block) + b"}")

    def _close_block(self) -> bytes:
        if not self._open:
            return b""
        self._open = False
        if not self.stream:
            return b""
        index = str(len(self._blocks) - 1).encode()
        out = b""
        block = self._blocks[-1]
        if isinstance(block, _ThinkingOut):
            signature = _json_encoder.encode(thinking_signature(block.thinking))
            delta = b'{"type":"signature_delta","signature":' + signature + b"}"
            out = self._delta(delta)
        payload = b'{"type":"content_block_stop","index":' + index + b"}"
        return out + sse_event(b"content_block_stop", payload)

    def _signed(self, block: _ThinkingOut) -> _ThinkingOut:
        return _ThinkingOut(block.thinking, thinking_signature(block.thinking))

    def _finish(self, stop_reason: str) -> bytes:
        out = b"" if self._limiter.stopped else self._text_delta(self._limiter.flush())
        self._stop_reason = self._limiter.cause or stop_reason
        self._finished = True
        out += self._close_block()
        if not self.stream:
            return out
        stop_sequence = self._limiter.stop_sequence if self._stop_reason == "stop_sequence" else None
        delta = _MessageDelta(_StopDelta(self._stop_reason, stop_sequence), self._final_usage())
        return out + sse_event(b"message_delta", _json_encoder.encode(delta)) + _MESSAGE_STOP

    def _final_usage(self) -> _UsageOut:
        if self._usage is None or self._limiter.stopped:
            output = estimate_tokens(self._limiter.sent_text) + estimate_tokens("".join(self._reasoning))
            return _UsageOut(self._input_tokens, output)
        return _UsageOut(self._usage.prompt_tokens, self._usage.completion_tokens)


DIALECT: Final = FunctionDialect(NAME, parse, AnthropicRenderer, error_response)
