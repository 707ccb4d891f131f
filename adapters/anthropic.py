"""Anthropic Messages: wire request → `ChatRequest`, canonical events → the exact bytes a client sees.

Wire format: ../shared/spec/client-formats.md §2. A stream is `message_start`, then per content block
`content_block_start`, its deltas and `content_block_stop` (indices contiguous from 0), then `message_delta`
(stop reason, cumulative usage) and `message_stop`; `ping` is the keep-alive; an error after the first byte is
an in-band `event: error`. Reasoning becomes a `thinking` block, closed by the `signature_delta` the SDK
expects (a sha256 of the thinking text: Kimi signs nothing; thinking blocks sent back are ignored).

Kimi takes neither `max_tokens` nor `stop_sequences`: the gateway cuts the answer text itself
(adapters/shaping.py) and reports `max_tokens` / `stop_sequence`. `temperature`, `top_p`, `top_k`, `metadata`
and `tools` are accepted and ignored; `thinking: {"type": "disabled"}` hides the thinking blocks of a thinking
model. `image` and `document` blocks (base64, URL, plain-text or string-content sources) in any message become
attachments (adapters/attachments.py); a `file` source is a 400 (the gateway has no Files API).
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass, field
from typing import Annotated, Final, Literal, NamedTuple

import msgspec

from adapters.attachments import Place, from_base64, from_text, from_url, refuse_file_id
from adapters.base import (
    JSON_CONTENT_TYPE,
    SSE_CONTENT_TYPE,
    LocalReply,
    Parsed,
    ReplyOptions,
    RequestContext,
    sse_event,
)
from adapters.common import ReplyUsage, chat_options, decode_body, model_spec, prompt_tokens, require_text
from adapters.dispatch import Ending, EndReason, FunctionDialect
from shared.attachment_input import AttachmentInput
from shared.errors import BadRequest, GatewayError
from shared.models import ModelSpec
from shared.schema import AttachmentKind, ChatRequest, Message, Part, TextPart

NAME: Final = "anthropic"

# ---------------------------------------------------------------- wire request (unknown fields ignored)


class _Wire(msgspec.Struct, tag_field="type"):
    pass


class _Text(_Wire, tag="text"):
    text: str


class _Source(msgspec.Struct):
    type: str
    media_type: str | None = None
    data: str | None = None
    url: str | None = None
    file_id: str | None = None
    content: str | list[msgspec.Raw] | None = None


class _Image(_Wire, tag="image"):
    source: _Source


class _Document(_Wire, tag="document"):
    source: _Source
    title: str | None = None


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


_request_decoder: Final = msgspec.json.Decoder(_Request)
_count_decoder: Final = msgspec.json.Decoder(_CountRequest)
_json_encoder: Final = msgspec.json.Encoder()
_UNSUPPORTED: Final[dict[type[_Wire], str]] = {
    _ToolUse: "Tool use is not supported by Kimi's web chat.",
    _ToolResult: "Tool use is not supported by Kimi's web chat.",
}


def parse(body: bytes, ctx: RequestContext) -> Parsed:
    """The canonical request of a `POST /v1/messages` body; raises BadRequest / ModelNotFound."""
    wire = decode_body(body, _request_decoder.decode)
    if wire.max_tokens == 0:
        raise BadRequest("max_tokens: Field required", param="max_tokens")
    spec = _resolve(wire.model)
    messages = _messages(wire, ctx.attachments)
    param = f"messages.{len(wire.messages) - 1}.content"
    require_text(messages, param, f"{param}: the messages hold no text; there is nothing to answer")
    request = ChatRequest(
        request_id=ctx.request_id,
        model=wire.model.strip(),
        messages=messages,
        stream=wire.stream,
        options=chat_options(spec),
        dialect=NAME,
    )
    reply = ReplyOptions(
        stop_sequences=tuple(wire.stop_sequences),
        max_tokens=wire.max_tokens,
        show_reasoning=wire.thinking is None or wire.thinking.type != "disabled",
    )
    return Parsed(request, reply)


def _resolve(model: str) -> ModelSpec:
    return model_spec(model, f"model: {model}")


def _messages(wire: _CountRequest, attachments: list[AttachmentInput] | None = None) -> list[Message]:
    """The canonical messages; image and document blocks go to `attachments` (dropped when None)."""
    if not wire.messages:
        raise BadRequest("messages: at least one message is required", param="messages")
    system = _system(wire.system)
    offset = 1 if system is not None else 0
    found = attachments if attachments is not None else []
    turns = [
        Message(role=m.role, content=_content(m.content, i, i + offset, found))
        for i, m in enumerate(wire.messages)
    ]
    return [system, *turns] if system is not None else turns


def _system(system: str | list[_Text]) -> Message | None:
    if isinstance(system, str):
        return Message(role="system", content=system) if system else None
    return Message(role="system", content=[TextPart(text=b.text) for b in system]) if system else None


def _content(
    content: str | list[_Block], index: int, message_index: int, attachments: list[AttachmentInput]
) -> str | list[Part]:
    if isinstance(content, str):
        return content
    parts: list[Part] = []
    placed = 0
    for j, block in enumerate(content):
        if isinstance(block, _Text):
            parts.append(TextPart(text=block.text))
        elif isinstance(block, _Image | _Document):
            place = Place(f"messages.{index}.content.{j}", message_index, len(parts) + placed)
            attachments.append(_attachment(block, place))
            placed += 1
        elif type(block) in _UNSUPPORTED:
            raise BadRequest(_UNSUPPORTED[type(block)], param=f"messages.{index}.content.{j}")
    return parts


def _attachment(block: _Image | _Document, place: Place) -> AttachmentInput:
    """An image or document block as an attachment, whatever its source."""
    source = block.source
    kind: AttachmentKind | None = "image" if isinstance(block, _Image) else None
    name = block.title if isinstance(block, _Document) else None
    if source.type == "base64":
        return from_base64(source.data or "", place, kind=kind, mime=source.media_type, name=name)
    if source.type == "url":
        return from_url(source.url or "", place, kind=kind, name=name)
    if source.type == "file":
        raise refuse_file_id(place)
    if kind is None and source.type == "text":
        return from_text(source.data or "", place, name=name)
    if kind is None and source.type == "content" and isinstance(source.content, str):
        return from_text(source.content, place, name=name)
    raise BadRequest(
        f"{place.param}: a source of type `{source.type}` is not supported here", param=place.param
    )


# ---------------------------------------------------------------- count_tokens


class _TokenCount(msgspec.Struct):
    input_tokens: int


def count_tokens(body: bytes, ctx: RequestContext) -> LocalReply:
    """`POST /v1/messages/count_tokens`: the estimated input tokens of a Messages request."""
    wire = decode_body(body, _count_decoder.decode)
    _resolve(wire.model)
    tokens = prompt_tokens(_messages(wire))
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


#: Anthropic's stop reason of each ending; the limiter's causes keep their names.
_STOP_REASON: Final[dict[EndReason, str]] = {
    "stop": "end_turn",
    "length": "max_tokens",
    "content_filter": "refusal",
    "stop_sequence": "stop_sequence",
    "max_tokens": "max_tokens",
}
_MESSAGE_STOP: Final = sse_event(b"message_stop", b'{"type":"message_stop"}')


def thinking_signature(thinking: str) -> str:
    """The opaque `signature` of a thinking block: base64 of the sha256 of its text."""
    return base64.b64encode(hashlib.sha256(thinking.encode()).digest()).decode()


def _stop_reason(reason: EndReason | None) -> str | None:
    return None if reason is None else _STOP_REASON.get(reason, "end_turn")


def _usage_out(usage: ReplyUsage) -> _UsageOut:
    return _UsageOut(usage.prompt_tokens, usage.completion_tokens)


class _BlockKind(NamedTuple):
    #: The `content_block` of its `content_block_start`.
    start: bytes
    #: Its deltas' JSON up to the text.
    delta: bytes


_TEXT: Final = _BlockKind(b'{"type":"text","text":""}', b'{"type":"text_delta","text":')
_THINKING: Final = _BlockKind(
    b'{"type":"thinking","thinking":"","signature":""}', b'{"type":"thinking_delta","thinking":'
)


@dataclass(slots=True)
class _Written:
    """A content block of the reply, as written so far."""

    kind: _BlockKind
    chunks: list[str] = field(default_factory=list)

    def out(self) -> _BlockOut:
        text = "".join(self.chunks)
        return _TextOut(text) if self.kind is _TEXT else _ThinkingOut(text, thinking_signature(text))


class AnthropicWriter:
    """The pieces of one Messages response: content blocks opened and closed as the answer goes, or one body."""

    keepalive: Final = sse_event(b"ping", b'{"type":"ping"}')
    echoes_keepalive: Final = True

    def __init__(self, request: ChatRequest, reply: ReplyOptions, ctx: RequestContext) -> None:
        self.stream = request.stream
        self.content_type = SSE_CONTENT_TYPE if request.stream else JSON_CONTENT_TYPE
        self._request = request
        self._id = f"msg_{request.request_id}"
        self._blocks: list[_Written] = []
        self._open = False
        #: The open block's index, as its events spell it.
        self._index = b"0"

    def head(self) -> bytes:
        usage = _UsageOut(prompt_tokens(self._request.messages), 0)
        start = _MessageStart(self._message(None, None, usage, content=[]))
        return sse_event(b"message_start", _json_encoder.encode(start))

    def adopt(self, conversation_id: str) -> None:
        """Nothing to adopt: a Message's id is the gateway's own (`msg_<request id>`)."""

    def answer(self, text: str) -> bytes:
        return self._append(_TEXT, text)

    def reasoning(self, text: str) -> bytes:
        return self._append(_THINKING, text) if text else b""

    def finish(self, ending: Ending, text: str) -> bytes:
        """The last text, the open block's end, `message_delta` (stop reason, usage) and `message_stop`."""
        out = (self._append(_TEXT, text) if text else b"") + self._close_block()
        stop = _StopDelta(_stop_reason(ending.reason) or "end_turn", ending.stop_sequence)
        delta = _json_encoder.encode(_MessageDelta(stop, _usage_out(ending.usage)))
        return out + sse_event(b"message_delta", delta) + _MESSAGE_STOP

    def error(self, exc: GatewayError) -> bytes:
        _, error_type = _status_and_type(exc)
        return sse_event(b"error", _json_encoder.encode(_ErrorEnvelope(_ErrorBody(error_type, exc.message))))

    def body(self, ending: Ending, answer: str, reasoning: str) -> bytes:
        content = [block.out() for block in self._blocks]
        usage = _usage_out(ending.usage)
        message = self._message(_stop_reason(ending.reason), ending.stop_sequence, usage, content=content)
        return _json_encoder.encode(message)

    def _message(
        self,
        stop_reason: str | None,
        stop_sequence: str | None,
        usage: _UsageOut,
        *,
        content: list[_BlockOut],
    ) -> _MessageOut:
        model = self._request.model
        return _MessageOut(self._id, "assistant", model, content, stop_reason, stop_sequence, usage)

    def _append(self, kind: _BlockKind, text: str) -> bytes:
        """`text` added to a block of `kind`, opened unless the open block is one."""
        out = b"" if self._open and self._blocks[-1].kind is kind else self._open_block(kind)
        self._blocks[-1].chunks.append(text)
        if not self.stream:
            return out
        return out + self._delta(kind.delta + _json_encoder.encode(text) + b"}")

    def _delta(self, delta: bytes) -> bytes:
        payload = b'{"type":"content_block_delta","index":' + self._index + b',"delta":' + delta + b"}"
        return sse_event(b"content_block_delta", payload)

    def _open_block(self, kind: _BlockKind) -> bytes:
        out = self._close_block()
        self._blocks.append(_Written(kind))
        self._open = True
        self._index = str(len(self._blocks) - 1).encode()
        if not self.stream:
            return out
        payload = b'{"type":"content_block_start","index":' + self._index + b',"content_block":' + kind.start
        return out + sse_event(b"content_block_start", payload + b"}")

    def _close_block(self) -> bytes:
        """The open block's end; a thinking block is signed first (a sha256 of its text: Kimi signs nothing)."""
        if not self._open:
            return b""
        self._open = False
        if not self.stream:
            return b""
        block = self._blocks[-1]
        out = b""
        if block.kind is _THINKING:
            signature = _json_encoder.encode(thinking_signature("".join(block.chunks)))
            out = self._delta(b'{"type":"signature_delta","signature":' + signature + b"}")
        payload = b'{"type":"content_block_stop","index":' + self._index + b"}"
        return out + sse_event(b"content_block_stop", payload)


DIALECT: Final = FunctionDialect(NAME, parse, AnthropicWriter, error_response)
