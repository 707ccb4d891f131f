"""Anthropic Messages: wire request → `ChatRequest`, canonical events → the exact bytes a client sees.

Wire format: ../shared/spec/client-formats.md §2. A stream is `message_start`, then per content block
`content_block_start`, its deltas and `content_block_stop` (indices contiguous from 0), then `message_delta`
(stop reason, cumulative usage) and `message_stop`; `ping` is the keep-alive; an error after the first byte is
an in-band `event: error`. Reasoning becomes a `thinking` block, closed by the `signature_delta` the SDK
expects (a sha256 of the thinking text: Kimi signs nothing; thinking blocks sent back are ignored).

Kimi takes neither `max_tokens` nor `stop_sequences`: the gateway cuts the answer text itself
(adapters/shaping.py) and reports `max_tokens` / `stop_sequence`. `temperature`, `top_p`, `top_k`, `metadata`,
`output_config`, `context_management`, `cache_control` anywhere, any `anthropic-beta` header and `?beta=true`
are accepted and ignored; `thinking: {"type": "disabled"}` hides the thinking blocks of a thinking model (`adaptive` and `enabled` show
them). A `role: "system"` message (or a `mid_conv_system` block) inside `messages` is system text at its place,
as Claude Code 2.x sends it (../shared/spec/tools-and-attachments.md §2.3, §7.1). `image` and `document`
blocks (base64, URL, plain-text or string-content sources) in any message become attachments
(adapters/attachments.py); a `file` source is a 400 (the gateway has no Files API).

Tools (§2): client tools (`input_schema`) become `ToolSpec`s, server tools (a dated `type`) are dropped since
Kimi cannot run them; `tool_choice` auto / any / tool / none and `disable_parallel_tool_use`; `tool_use` blocks
are the assistant's calls, `tool_result` blocks (string or block content, `is_error`) become `tool` messages
before the rest of their user message. A call is answered as a `tool_use` block (`content_block_start` with
`input: {}`, one `input_json_delta`, `content_block_stop` in a stream) and `stop_reason: "tool_use"`.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass, field
from typing import Annotated, Any, Final, Literal, NamedTuple

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
from adapters.common import (
    ANTHROPIC_BOUNDS,
    ChoiceMode,
    ReplyUsage,
    arguments_object,
    chat_options,
    check_bounds,
    check_named_tool,
    compact_json,
    decode_body,
    model_spec,
    prompt_tokens,
    require_text,
)
from adapters.dispatch import Ending, EndReason, FunctionDialect
from shared.attachment_input import AttachmentInput
from shared.errors import BadRequest, GatewayError
from shared.models import ModelSpec
from shared.schema import AttachmentKind, ChatRequest, Message, Part, TextPart, ToolCall, ToolChoice, ToolSpec

NAME: Final = "anthropic"

# ---------------------------------------------------------------- wire request (unknown fields ignored)


class _Wire(msgspec.Struct, tag_field="type"):
    pass


class _Text(_Wire, tag="text"):
    text: str


class _Source(msgspec.Struct):
    #: Empty when absent: a tool result's image of an unknown source reads as a placeholder only (`_attachable`);
    #: a message's is refused.
    type: str = ""
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
    id: str
    name: str
    input: dict[str, Any] = msgspec.field(default_factory=dict)


class _SearchResult(_Wire, tag="search_result"):
    pass


class _ToolReference(_Wire, tag="tool_reference"):
    pass


class _BrowserState(_Wire, tag="browser_state"):
    pass


class _ToolResult(_Wire, tag="tool_result"):
    tool_use_id: str
    content: str | list[_Text | _Image | _Document | _SearchResult | _ToolReference | _BrowserState] = ""
    is_error: bool = False


class _MidConvSystem(_Wire, tag="mid_conv_system"):
    content: list[_Text] = msgspec.field(default_factory=list)


# Blocks of Anthropic's own server tools and containers, sent back in a history: accepted and left out (Kimi
# ran none of them).
class _ServerToolUse(_Wire, tag="server_tool_use"):
    pass


class _WebSearchToolResult(_Wire, tag="web_search_tool_result"):
    pass


class _WebFetchToolResult(_Wire, tag="web_fetch_tool_result"):
    pass


class _CodeExecutionToolResult(_Wire, tag="code_execution_tool_result"):
    pass


class _BashCodeExecutionToolResult(_Wire, tag="bash_code_execution_tool_result"):
    pass


class _TextEditorCodeExecutionToolResult(_Wire, tag="text_editor_code_execution_tool_result"):
    pass


class _ToolSearchToolResult(_Wire, tag="tool_search_tool_result"):
    pass


class _ContainerUpload(_Wire, tag="container_upload"):
    pass


_Block = (
    _Text
    | _Image
    | _Document
    | _Thinking
    | _RedactedThinking
    | _ToolUse
    | _ToolResult
    | _MidConvSystem
    | _SearchResult
    | _ServerToolUse
    | _WebSearchToolResult
    | _WebFetchToolResult
    | _CodeExecutionToolResult
    | _BashCodeExecutionToolResult
    | _TextEditorCodeExecutionToolResult
    | _ToolSearchToolResult
    | _ContainerUpload
)


class _Message(msgspec.Struct):
    role: Literal["user", "assistant", "system"]
    content: str | list[_Block]


class _ToolIn(msgspec.Struct):
    name: str
    description: str = ""
    input_schema: dict[str, Any] | None = None
    #: Absent or "custom" for a client tool; a dated name (`web_search_20250305`) for a server tool.
    type: str = "custom"


class _ToolChoiceIn(msgspec.Struct):
    type: Literal["auto", "any", "tool", "none"]
    name: str | None = None
    disable_parallel_tool_use: bool = False


class _ThinkingParam(msgspec.Struct):
    type: str = "enabled"


class _CountRequest(msgspec.Struct):
    model: str
    messages: list[_Message]
    system: str | list[_Text] = ""
    tools: list[_ToolIn] = msgspec.field(default_factory=list)
    tool_choice: _ToolChoiceIn | None = None


class _Request(_CountRequest):
    max_tokens: Annotated[int, msgspec.Meta(ge=1)] = 0
    stop_sequences: list[str] = msgspec.field(default_factory=list)
    stream: bool = False
    thinking: _ThinkingParam | None = None


_request_decoder: Final = msgspec.json.Decoder(_Request)
_count_decoder: Final = msgspec.json.Decoder(_CountRequest)
_json_encoder: Final = msgspec.json.Encoder()
#: What a non-text block of a tool result reads as in the prompt (an image or document that `_attachable` takes
#: becomes an attachment instead).
_RESULT_PLACEHOLDER: Final[dict[type[_Wire], str]] = {
    _Image: "[image]",
    _Document: "[document]",
    _SearchResult: "[search result]",
    _ToolReference: "[tool reference]",
    _BrowserState: "[browser state]",
}
_CHOICE_MODE: Final[dict[str, ChoiceMode]] = {
    "auto": "auto",
    "any": "required",
    "tool": "named",
    "none": "none",
}


def parse(body: bytes, ctx: RequestContext) -> Parsed:
    """The canonical request of a `POST /v1/messages` body; raises BadRequest / ModelNotFound."""
    wire = decode_body(body, _request_decoder.decode)
    if wire.max_tokens == 0:
        raise BadRequest("max_tokens: Field required", param="max_tokens")
    spec = _resolve(wire.model)
    messages = _messages(wire, ctx.attachments)
    param = f"messages.{len(wire.messages) - 1}.content"
    require_text(
        messages, ctx.attachments, param, f"{param}: the messages hold no text; there is nothing to answer"
    )
    check_bounds(
        ANTHROPIC_BOUNDS,
        wire.stop_sequences,
        messages,
        stop_param="stop_sequences",
        messages_param="messages",
    )
    tools = _tools(wire.tools)
    choice = wire.tool_choice
    request = ChatRequest(
        request_id=ctx.request_id,
        model=wire.model.strip(),
        messages=messages,
        stream=wire.stream,
        options=chat_options(spec),
        dialect=NAME,
        tools=tools,
        tool_choice=_tool_choice(choice, tools),
        parallel_tool_calls=choice is None or not choice.disable_parallel_tool_use,
    )
    reply = ReplyOptions(
        stop_sequences=tuple(wire.stop_sequences),
        max_tokens=wire.max_tokens,
        show_reasoning=wire.thinking is None or wire.thinking.type != "disabled",
    )
    return Parsed(request, reply)


def _resolve(model: str) -> ModelSpec:
    return model_spec(model, f"model: {model}")


def _tools(wire: list[_ToolIn]) -> list[ToolSpec]:
    """Client tools; server tools (a dated `type` such as `web_search_20250305`) are dropped: Kimi cannot run
    them and the client does not expect to."""
    return [
        ToolSpec(t.name, t.description, compact_json(t.input_schema or {}))
        for t in wire
        if t.type == "custom"
    ]


def _tool_choice(wire: _ToolChoiceIn | None, tools: list[ToolSpec]) -> ToolChoice:
    if wire is None or not tools:
        return ToolChoice()
    if wire.type == "tool":
        if not wire.name:
            raise BadRequest("tool_choice.name: Field required", param="tool_choice.name")
        check_named_tool(tools, wire.name, "tool_choice.name")
        return ToolChoice("named", wire.name)
    return ToolChoice(_CHOICE_MODE[wire.type])


def _messages(wire: _CountRequest, attachments: list[AttachmentInput] | None = None) -> list[Message]:
    """The canonical messages; image and document blocks go to `attachments` (dropped when None)."""
    if not wire.messages:
        raise BadRequest("messages: at least one message is required", param="messages")
    system = _system(wire.system)
    offset = 1 if system is not None else 0
    found = attachments if attachments is not None else []
    turns: list[Message] = []
    names: dict[str, str] = {}  # tool_use id → tool name, for the results that follow
    for i, message in enumerate(wire.messages):
        turns.extend(_turn(message, i, names, offset + len(turns), found))
    return [system, *turns] if system is not None else turns


def _system(system: str | list[_Text]) -> Message | None:
    if isinstance(system, str):
        return Message(role="system", content=system) if system else None
    return Message(role="system", content=[TextPart(text=b.text) for b in system]) if system else None


def _turn(
    message: _Message, index: int, names: dict[str, str], at: int, attachments: list[AttachmentInput]
) -> list[Message]:
    """One wire message as canonical messages: its tool results first (as `tool` messages), then a system text
    it carries (`mid_conv_system`), then its own role's content and calls (at canonical index `at` + the
    messages before it, where its image and document blocks are placed)."""
    placed: list[AttachmentInput] = []
    content = _content(message.content, index, placed)
    if isinstance(message.content, str):
        return [Message(role=message.role, content=content)]
    out: list[Message] = []
    calls: list[ToolCall] = []
    for j, block in enumerate(message.content):
        match block:
            case _ToolUse():
                names[block.id] = block.name
                calls.append(ToolCall(block.id, block.name, compact_json(block.input)))
            case _ToolResult():
                files: list[AttachmentInput] = []
                out.append(_result(block, names, f"messages.{index}.content.{j}", files))
                attachments.extend(msgspec.structs.replace(a, message_index=at + len(out) - 1) for a in files)
            case _MidConvSystem(content=blocks):
                out.append(Message(role="system", content=[TextPart(text=b.text) for b in blocks]))
    if content or calls or placed or not out:
        attachments.extend(msgspec.structs.replace(a, message_index=at + len(out)) for a in placed)
        out.append(Message(role=message.role, content=content, tool_calls=calls or None))
    return out


def _content(content: str | list[_Block], index: int, attachments: list[AttachmentInput]) -> str | list[Part]:
    """The text of one wire message; its image and document blocks go to `attachments`, placed among its parts
    (their message index is the caller's to set: one wire message may become several canonical ones)."""
    if isinstance(content, str):
        return content
    parts: list[Part] = []
    placed = 0
    for j, block in enumerate(content):
        if isinstance(block, _Text):
            parts.append(TextPart(text=block.text))
        elif isinstance(block, _Image | _Document):
            place = Place(f"messages.{index}.content.{j}", 0, len(parts) + placed)  # index: set by `_turn`
            attachments.append(_attachment(block, place))
            placed += 1
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


def _result(block: _ToolResult, names: dict[str, str], param: str, files: list[AttachmentInput]) -> Message:
    """A tool result as a `tool` message. Its images and documents (a screenshot, a file Claude Code's Read
    returned) go to `files`, placed among its text, so Kimi gets them as attachments of the turn (the prompt
    names each where it stood); its other non-text blocks read as placeholders."""
    content: str | list[Part] = block.content if isinstance(block.content, str) else []
    if isinstance(block.content, list):
        parts: list[Part] = []
        for k, b in enumerate(block.content):
            if isinstance(b, _Image | _Document) and _attachable(b):
                place = Place(f"{param}.content.{k}", 0, len(parts) + len(files))  # index: set by `_turn`
                files.append(_attachment(b, place))
            else:
                parts.append(TextPart(text=b.text if isinstance(b, _Text) else _RESULT_PLACEHOLDER[type(b)]))
        content = parts
    name = names.get(block.tool_use_id)
    return Message("tool", content, tool_call_id=block.tool_use_id, name=name, is_error=block.is_error)


def _attachable(block: _Image | _Document) -> bool:
    """Whether a tool result's image or document reaches Kimi as an attachment: inline or URL bytes, or a
    document's text. Another source leaves the placeholder alone rather than failing a whole agent turn."""
    source = block.source.type
    return source in ("base64", "url") or (isinstance(block, _Document) and source == "text")


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


class _ToolUseOut(msgspec.Struct, tag="tool_use", tag_field="type"):
    id: str
    name: str
    input: dict[str, Any]


_BlockOut = _TextOut | _ThinkingOut | _ToolUseOut


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
    "tool_calls": "tool_use",
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


@dataclass(slots=True)
class _WrittenCall:
    """A `tool_use` block of the reply."""

    call: ToolCall

    def out(self) -> _BlockOut:
        return _ToolUseOut(self.call.id, self.call.name, arguments_object(self.call.arguments))


class AnthropicWriter:
    """The pieces of one Messages response: content blocks opened and closed as the answer goes, or one body."""

    keepalive: Final = sse_event(b"ping", b'{"type":"ping"}')
    echoes_keepalive: Final = True

    def __init__(self, request: ChatRequest, reply: ReplyOptions, ctx: RequestContext) -> None:
        self.stream = request.stream
        self.content_type = SSE_CONTENT_TYPE if request.stream else JSON_CONTENT_TYPE
        self._request = request
        self._id = f"msg_{request.request_id}"
        self._blocks: list[_Written | _WrittenCall] = []
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

    def tool_call(self, index: int, call: ToolCall) -> bytes:
        """A whole `tool_use` block: its start with `input: {}`, the arguments as one `input_json_delta`, its end."""
        out = self._close_block()
        self._blocks.append(_WrittenCall(call))
        if not self.stream:
            return out
        self._index = str(len(self._blocks) - 1).encode()
        start = _json_encoder.encode(_ToolUseOut(call.id, call.name, {}))
        payload = (
            b'{"type":"content_block_start","index":' + self._index + b',"content_block":' + start + b"}"
        )
        out += sse_event(b"content_block_start", payload)
        out += self._delta(
            b'{"type":"input_json_delta","partial_json":' + _json_encoder.encode(call.arguments) + b"}"
        )
        return out + sse_event(
            b"content_block_stop", b'{"type":"content_block_stop","index":' + self._index + b"}"
        )

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
        last = self._blocks[-1] if self._open else None
        if not (isinstance(last, _Written) and last.kind is kind):
            out, last = self._open_block(kind), _Written(kind)
            self._blocks.append(last)
        else:
            out = b""
        last.chunks.append(text)
        if not self.stream:
            return out
        return out + self._delta(kind.delta + _json_encoder.encode(text) + b"}")

    def _delta(self, delta: bytes) -> bytes:
        payload = b'{"type":"content_block_delta","index":' + self._index + b',"delta":' + delta + b"}"
        return sse_event(b"content_block_delta", payload)

    def _open_block(self, kind: _BlockKind) -> bytes:
        """The open block's end, then the start of a block of `kind` (the caller appends it)."""
        out = self._close_block()
        self._open = True
        self._index = str(len(self._blocks)).encode()
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
        if isinstance(block, _Written) and block.kind is _THINKING:
            signature = _json_encoder.encode(thinking_signature("".join(block.chunks)))
            out = self._delta(b'{"type":"signature_delta","signature":' + signature + b"}")
        payload = b'{"type":"content_block_stop","index":' + self._index + b"}"
        return out + sse_event(b"content_block_stop", payload)


DIALECT: Final = FunctionDialect(NAME, parse, AnthropicWriter, error_response)
