"""OpenAI Chat Completions: wire request → `ChatRequest`, canonical events → the exact bytes a client sees.

Wire format: ../shared/spec/client-formats.md §1. Chunks share one `id` and `created`; the first carries the
role; the last content chunk carries `finish_reason`; `stream_options.include_usage` adds a usage chunk (with
`choices: []`) before `data: [DONE]`, and `"usage": null` on every other chunk. Errors after the first byte
are `data: {"error": …}` and the stream closes without `[DONE]`.

Kimi takes neither `stop` nor a maximum length: the gateway cuts the answer text itself (adapters/shaping.py) at
the first `stop` sequence (finish_reason "stop") or at the `max_completion_tokens` / `max_tokens` budget
(finish_reason "length"; reasoning is never cut nor counted), then ends the response and cancels the job.

Tool calls (../shared/spec/tools-and-attachments.md §1, docs/TOOLS.md): `tools` of type function, `tool_choice`
(none / auto / required / a named function / `allowed_tools`), `parallel_tool_calls`, assistant `tool_calls` and
`tool` (or legacy `function`) messages in the history. A call is answered as `message.tool_calls` with
`finish_reason: "tool_calls"`; a stream sends each call as two `delta.tool_calls` fragments, the first with
`index`, `id`, `type`, `function.name` and empty `arguments`, the second with the whole `arguments`, which is
exactly what openai-python's accumulator concatenates (`id` and `name` only once).

Parameters Kimi's web chat cannot honour (README, "OpenAI parameters"):
- accepted and ignored: temperature, top_p, presence_penalty, frequency_penalty, seed, user, logit_bias,
  metadata, store, service_tier, `response_format` of type text / json_object, `n: 1`, `logprobs: false`;
- refused with 400: `n` > 1, `logprobs: true`, `custom` tools, `response_format` of type json_schema,
  audio content parts, file ids, a request without any text.
Images (`image_url`: http(s) or data URL) and files (`file.file_data` + `filename`; kimi-free-api's
`{"type": "file", "file_url": {"url"}}`) in any message become attachments (adapters/attachments.py).
kimi-free-api extensions: `use_search`, `conversation_id`, model-name flags (see shared/models.py).
"""

from __future__ import annotations

import time
from typing import Annotated, Any, Final

import msgspec

from adapters.attachments import Place, from_base64, from_url, refuse_file_id
from adapters.base import (
    JSON_CONTENT_TYPE,
    SSE_CONTENT_TYPE,
    LocalReply,
    Parsed,
    ReplyOptions,
    RequestContext,
    sse_comment,
)
from adapters.common import (
    OPENAI_BOUNDS,
    ChoiceMode,
    ReplyUsage,
    chat_options,
    check_bounds,
    check_named_tool,
    compact_json,
    decode_body,
    model_spec,
    require_text,
)
from adapters.dispatch import Ending, EndReason, FunctionDialect
from shared.attachment_input import AttachmentInput
from shared.errors import BadRequest, GatewayError, ModelNotFound
from shared.models import ModelSpec, listed_models
from shared.schema import ChatRequest, Message, Part, Role, TextPart, ToolCall, ToolChoice, ToolSpec

NAME: Final = "openai"

# ---------------------------------------------------------------- wire request (unknown fields ignored)


class _Wire(msgspec.Struct, omit_defaults=True):
    pass


class _ImageURL(_Wire):
    url: str
    detail: str | None = None


class _FileURL(_Wire):
    url: str


class _FileRef(_Wire):
    file_data: str | None = None
    file_id: str | None = None
    filename: str | None = None


class _Part(_Wire):
    type: str
    text: str | None = None
    image_url: _ImageURL | str | None = None
    file: _FileRef | None = None
    file_url: _FileURL | None = None


class _FunctionCall(_Wire):
    name: str
    arguments: str = "{}"


class _ToolCall(_Wire):
    id: str
    function: _FunctionCall
    type: str = "function"


class _Message(_Wire):
    role: str
    content: str | list[_Part] | None = None
    tool_calls: list[_ToolCall] | None = None
    tool_call_id: str | None = None
    name: str | None = None


class _Function(_Wire):
    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None


class _Tool(_Wire):
    type: str = "function"
    function: _Function | None = None


class _ChoiceName(_Wire):
    name: str


class _AllowedTools(_Wire):
    mode: str = "auto"
    tools: list[_Tool] = msgspec.field(default_factory=list)


class _ToolChoice(_Wire):
    type: str = "function"
    function: _ChoiceName | None = None
    allowed_tools: _AllowedTools | None = None


class _StreamOptions(_Wire):
    include_usage: bool | None = None


class _ResponseFormat(_Wire):
    type: str = "text"


class _Request(_Wire):
    messages: list[_Message]
    model: str = "kimi"
    stream: bool | None = None
    stream_options: _StreamOptions | None = None
    n: int | None = None
    logprobs: bool | None = None
    tools: list[_Tool] | None = None
    tool_choice: str | _ToolChoice | None = None
    parallel_tool_calls: bool | None = None
    response_format: _ResponseFormat | None = None
    use_search: bool | None = None
    conversation_id: str | None = None
    stop: str | list[str] | None = None
    max_tokens: Annotated[int, msgspec.Meta(ge=1)] | None = None
    max_completion_tokens: Annotated[int, msgspec.Meta(ge=1)] | None = None


_request_decoder: Final = msgspec.json.Decoder(_Request)
_json_encoder: Final = msgspec.json.Encoder()

_ROLES: Final[dict[str, Role]] = {
    "system": "system",
    "developer": "system",
    "user": "user",
    "assistant": "assistant",
    "tool": "tool",
    "function": "tool",
}


def parse(body: bytes, ctx: RequestContext) -> Parsed:
    """The canonical request of a `POST /v1/chat/completions` body; raises BadRequest / ModelNotFound."""
    wire = decode_body(body, _request_decoder.decode)
    if not wire.messages:
        raise BadRequest("`messages` must hold at least one message.", param="messages")
    _refuse_unsupported(wire)
    spec = model_spec(wire.model, f"The model `{wire.model}` does not exist.")
    messages = [_message(m, i, ctx.attachments) for i, m in enumerate(wire.messages)]
    param = f"messages[{len(messages) - 1}].content"
    require_text(messages, ctx.attachments, param, "The messages hold no text; there is nothing to answer.")
    tools = _tools(wire.tools or [])
    reply = _reply_options(wire)
    check_bounds(OPENAI_BOUNDS, reply.stop_sequences, messages, stop_param="stop", messages_param="messages")
    request = ChatRequest(
        request_id=ctx.request_id,
        model=wire.model.strip(),
        messages=messages,
        stream=bool(wire.stream),
        options=chat_options(spec, search=bool(wire.use_search), conversation_id=wire.conversation_id),
        dialect=NAME,
        tools=tools,
        tool_choice=_tool_choice(wire.tool_choice, tools),
        parallel_tool_calls=wire.parallel_tool_calls is not False,
    )
    return Parsed(request, reply)


def _tools(wire: list[_Tool]) -> list[ToolSpec]:
    specs = []
    for i, tool in enumerate(wire):
        if tool.type != "function":
            raise BadRequest(f"Tools of type `{tool.type}` are not supported.", param=f"tools[{i}].type")
        if tool.function is None:
            raise BadRequest("A function tool needs `function`.", param=f"tools[{i}].function")
        function = tool.function
        specs.append(
            ToolSpec(function.name, function.description or "", compact_json(function.parameters or {}))
        )
    return specs


_CHOICE_MODES: Final[dict[str, ChoiceMode]] = {"none": "none", "auto": "auto", "required": "required"}


def _tool_choice(wire: str | _ToolChoice | None, tools: list[ToolSpec]) -> ToolChoice:
    """`none` / `auto` / `required`, a named function, or `allowed_tools` (a mode and the allowed names)."""
    if wire is None or not tools:
        return ToolChoice()
    if isinstance(wire, str):
        if wire not in _CHOICE_MODES:
            raise BadRequest(f"Invalid value for `tool_choice`: `{wire}`.", param="tool_choice")
        return ToolChoice(_CHOICE_MODES[wire])
    if wire.type == "function" and wire.function is not None:
        check_named_tool(tools, wire.function.name, "tool_choice")
        return ToolChoice("named", wire.function.name)
    if wire.type == "allowed_tools" and wire.allowed_tools is not None:
        allowed = wire.allowed_tools
        names = [t.function.name for t in allowed.tools if t.function is not None]
        for name in names:
            check_named_tool(tools, name, "tool_choice.allowed_tools.tools")
        return ToolChoice("required" if allowed.mode == "required" else "auto", allowed=names)
    raise BadRequest(f"Tool choice of type `{wire.type}` is not supported.", param="tool_choice")


def _reply_options(wire: _Request) -> ReplyOptions:
    return ReplyOptions(
        stop_sequences=(wire.stop,) if isinstance(wire.stop, str) else tuple(wire.stop or ()),
        max_tokens=wire.max_completion_tokens or wire.max_tokens,
        stream_usage=wire.stream_options is not None and bool(wire.stream_options.include_usage),
    )


def _refuse_unsupported(wire: _Request) -> None:
    if wire.n is not None and wire.n > 1:
        raise BadRequest("Kimi returns one choice per request; `n` must be 1.", param="n")
    if wire.logprobs:
        raise BadRequest("Kimi's web chat does not return log probabilities.", param="logprobs")
    if wire.response_format is not None and wire.response_format.type == "json_schema":
        raise BadRequest("Kimi's web chat does not support structured outputs.", param="response_format")


def _message(wire: _Message, index: int, attachments: list[AttachmentInput]) -> Message:
    role = _ROLES.get(wire.role)
    if role is None:
        raise BadRequest(f"Unknown role `{wire.role}`.", param=f"messages[{index}].role")
    content: str | list[Part] = wire.content if isinstance(wire.content, str) else ""
    if isinstance(wire.content, list):
        content = _parts(wire.content, index, attachments)
    if role == "assistant" and wire.tool_calls:
        calls = [ToolCall(c.id, c.function.name, c.function.arguments) for c in wire.tool_calls]
        return Message(role=role, content=content, tool_calls=calls)
    if role == "tool":  # `function` (legacy) names its function and has no call id
        return Message(role=role, content=content, tool_call_id=wire.tool_call_id, name=wire.name)
    return Message(role=role, content=content)


def _parts(wire: list[_Part], index: int, attachments: list[AttachmentInput]) -> list[Part]:
    """A message's text parts; its image and file parts go to `attachments`, each with its place."""
    parts: list[Part] = []
    for j, part in enumerate(wire):
        place = Place(f"messages[{index}].content[{j}]", index, j)
        found = _attachment(part, place)
        if found is not None:
            attachments.append(found)
        else:
            parts.append(_part(part, place.param))
    return parts


def _part(wire: _Part, param: str) -> Part:
    if wire.type == "text":
        return TextPart(text=wire.text or "")
    raise BadRequest(f"Unsupported content part of type `{wire.type}`.", param=param)


def _attachment(wire: _Part, place: Place) -> AttachmentInput | None:
    """An `image_url` or `file` part as an attachment; None for every other part type."""
    if wire.type == "image_url":
        image = wire.image_url
        if image is None:
            raise BadRequest("An `image_url` part needs `image_url.url`.", param=place.param)
        return from_url(image if isinstance(image, str) else image.url, place, kind="image")
    if wire.type != "file":
        return None
    if wire.file_url is not None:
        return from_url(wire.file_url.url, place)
    if wire.file is not None and wire.file.file_data:
        return from_base64(wire.file.file_data, place, name=wire.file.filename)
    if wire.file is not None and wire.file.file_id:
        raise refuse_file_id(place)
    raise BadRequest("A `file` part needs `file.file_data` (and `file.filename`).", param=place.param)


# ---------------------------------------------------------------- errors

_ERROR_TYPE: Final[dict[str, tuple[str, str | None]]] = {
    "invalid_request": ("invalid_request_error", None),
    "authentication": ("invalid_request_error", "invalid_api_key"),
    "permission": ("permission_error", "permission_denied"),
    "not_found": ("invalid_request_error", "not_found"),
    "model_not_found": ("invalid_request_error", "model_not_found"),
    "too_large": ("invalid_request_error", "request_too_large"),
    "rate_limited": ("rate_limit_error", "rate_limit_exceeded"),
    "overloaded": ("server_error", "server_is_overloaded"),
    "upstream": ("server_error", "upstream_error"),
    "upstream_auth": ("server_error", "upstream_auth_failed"),
    "unavailable": ("server_error", "service_unavailable"),
    "timeout": ("server_error", "timeout"),
    "protocol": ("server_error", "upstream_protocol_error"),
    "content_filter": ("invalid_request_error", "content_filter"),
    "cancelled": ("invalid_request_error", "cancelled"),
    "internal": ("server_error", "internal_error"),
}


class _ErrorBody(msgspec.Struct):
    message: str
    type: str
    param: str | None
    code: str | None


class _ErrorEnvelope(msgspec.Struct):
    error: _ErrorBody


def error_json(exc: GatewayError) -> bytes:
    """`{"error": {"message", "type", "param", "code"}}`, OpenAI's error object."""
    kind_type, code = _ERROR_TYPE.get(exc.kind, ("server_error", "internal_error"))
    return _json_encoder.encode(_ErrorEnvelope(_ErrorBody(exc.message, kind_type, exc.param, code)))


def error_response(exc: GatewayError, request_id: str) -> tuple[int, dict[str, str], bytes]:
    return exc.status, {}, error_json(exc)


# ---------------------------------------------------------------- rendering


class _UsageOut(msgspec.Struct):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class _FunctionOut(msgspec.Struct):
    name: str
    arguments: str


class _ToolCallOut(msgspec.Struct):
    id: str
    type: str
    function: _FunctionOut


class _MessageOut(msgspec.Struct, omit_defaults=True):
    role: str
    #: null when the answer is only calls.
    content: str | None
    reasoning_content: str | None = None
    tool_calls: list[_ToolCallOut] | None = None


class _ChoiceOut(msgspec.Struct):
    index: int
    message: _MessageOut
    logprobs: None
    finish_reason: str


class _CompletionOut(msgspec.Struct):
    id: str
    object: str
    created: int
    model: str
    choices: list[_ChoiceOut]
    usage: _UsageOut


_DONE_BYTES: Final = b"data: [DONE]\n\n"
#: Finish reasons of a cut; every canonical finish reason keeps its name.
_FINISH_REASON: Final[dict[EndReason | None, str]] = {
    None: "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
}


def _finish_reason(reason: EndReason | None) -> str:
    return _FINISH_REASON.get(reason) or str(reason)


def _usage_out(usage: ReplyUsage) -> _UsageOut:
    return _UsageOut(
        usage.prompt_tokens, usage.completion_tokens, usage.prompt_tokens + usage.completion_tokens
    )


class OpenAIWriter:
    """The pieces of one chat completion: chunks built from byte heads and tails precomputed once, or one body."""

    keepalive: Final = sse_comment(b"keep-alive")
    #: The relay's timer pings an OpenAI stream; a worker's Keepalive writes nothing (so it commits no headers).
    echoes_keepalive: Final = False

    def __init__(self, request: ChatRequest, reply: ReplyOptions, ctx: RequestContext) -> None:
        self.stream = request.stream
        self.content_type = SSE_CONTENT_TYPE if request.stream else JSON_CONTENT_TYPE
        self._model = request.model
        self._usage_chunk = reply.stream_usage and request.stream
        self._created = int(ctx.now_s or time.time())
        kept = request.options.conversation_id if request.options.keep_chat else None
        self._id = kept or f"chatcmpl-{request.request_id}"
        self._started = False
        #: The answer's calls, for the non-stream body.
        self._calls: list[ToolCall] = []
        #: `data: {"id":…,"choices":`, then the heads of a content and a reasoning delta, and every delta's tail.
        self._prefix = self._content = self._reasoning = self._delta_tail = self._suffix = b""

    def head(self) -> bytes:
        return b""

    def adopt(self, conversation_id: str) -> None:
        """A kept chat answers with the Kimi chat id (kimi-free-api), until the first chunk fixed the id."""
        if not self._started:
            self._id = conversation_id

    def answer(self, text: str) -> bytes:
        if not self.stream:
            return b""
        first = b"" if self._started else self._begin()
        return first + self._content + _json_encoder.encode(text) + self._delta_tail

    def reasoning(self, text: str) -> bytes:
        if not self.stream:
            return b""
        first = b"" if self._started else self._begin()
        return first + self._reasoning + _json_encoder.encode(text) + self._delta_tail

    def tool_call(self, index: int, call: ToolCall) -> bytes:
        """Two `delta.tool_calls` fragments: `id`, `type` and `name` once with empty arguments, then the arguments."""
        if not self.stream:
            self._calls.append(call)
            return b""
        first = b"" if self._started else self._begin()
        head = b'{"tool_calls":[{"index":' + str(index).encode()
        opening = _json_encoder.encode(_ToolCallOut(call.id, "function", _FunctionOut(call.name, "")))
        arguments = b',"function":{"arguments":' + _json_encoder.encode(call.arguments) + b"}}]}"
        return (
            first
            + self._choice(head + b"," + opening[1:] + b"]}", b"null")
            + self._choice(head + arguments, b"null")
        )

    def finish(self, ending: Ending, text: str) -> bytes:
        """The last text, the finish chunk, the usage chunk when asked, `[DONE]`."""
        out = self.answer(text) if text else b""
        if not self._started:
            out += self._begin()
        out += self._choice(b"{}", _json_encoder.encode(_finish_reason(ending.reason)))
        if self._usage_chunk:
            usage = _json_encoder.encode(_usage_out(ending.usage))
            out += self._prefix + b'[],"usage":' + usage + b"}\n\n"
        return out + _DONE_BYTES

    def error(self, exc: GatewayError) -> bytes:
        return b"data: " + error_json(exc) + b"\n\n"

    def body(self, ending: Ending, answer: str, reasoning: str) -> bytes:
        calls = [_ToolCallOut(c.id, "function", _FunctionOut(c.name, c.arguments)) for c in self._calls]
        content = answer if answer or not calls else None
        message = _MessageOut("assistant", content, reasoning or None, calls or None)
        choice = _ChoiceOut(0, message, None, _finish_reason(ending.reason))
        usage = _usage_out(ending.usage)
        out = _CompletionOut(self._id, "chat.completion", self._created, self._model, [choice], usage)
        return _json_encoder.encode(out)

    def _begin(self) -> bytes:
        """The role chunk, once; builds the bytes every later chunk shares (the id is fixed from here on)."""
        self._started = True
        head = b'{"id":' + _json_encoder.encode(self._id) + b',"object":"chat.completion.chunk","created":'
        head += (
            str(self._created).encode() + b',"model":' + _json_encoder.encode(self._model) + b',"choices":'
        )
        self._prefix = b"data: " + head
        self._suffix = b',"usage":null}\n\n' if self._usage_chunk else b"}\n\n"
        self._content = self._prefix + b'[{"index":0,"delta":{"content":'
        self._reasoning = self._prefix + b'[{"index":0,"delta":{"reasoning_content":'
        self._delta_tail = b'},"logprobs":null,"finish_reason":null}]' + self._suffix
        return self._choice(b'{"role":"assistant","content":""}', b"null")

    def _choice(self, delta: bytes, finish: bytes) -> bytes:
        choice = b'[{"index":0,"delta":' + delta + b',"logprobs":null,"finish_reason":' + finish + b"}]"
        return self._prefix + choice + self._suffix


DIALECT: Final = FunctionDialect(NAME, parse, OpenAIWriter, error_response)

# ---------------------------------------------------------------- /v1/models


class _ModelOut(msgspec.Struct):
    id: str
    object: str
    created: int
    owned_by: str


class _ModelList(msgspec.Struct):
    object: str
    data: list[_ModelOut]


def _model_out(spec: ModelSpec) -> _ModelOut:
    return _ModelOut(spec.id, "model", spec.created, spec.owned_by)


_MODELS_JSON: Final = _json_encoder.encode(_ModelList("list", [_model_out(s) for s in listed_models()]))
_JSON_HEADERS: Final = {"Content-Type": JSON_CONTENT_TYPE}


def list_models(body: bytes, ctx: RequestContext) -> LocalReply:
    """`GET /v1/models`: every model id of the table (those the caller's key may use), OpenAI list shape."""
    if ctx.allowed_models is None:
        return 200, dict(_JSON_HEADERS), _MODELS_JSON
    models = [_model_out(s) for s in listed_models() if ctx.may_use(s.id)]
    return 200, dict(_JSON_HEADERS), _json_encoder.encode(_ModelList("list", models))


def get_model(body: bytes, ctx: RequestContext) -> LocalReply:
    """`GET /v1/models/{model}`: one model, or 404 model_not_found."""
    model = ctx.path_model or ""
    missing = f"The model `{model}` does not exist."
    spec = model_spec(model, missing)
    if not ctx.may_use(model.strip()):
        raise ModelNotFound(missing, param="model")
    out = _ModelOut(model.strip(), "model", spec.created, spec.owned_by)
    return 200, dict(_JSON_HEADERS), _json_encoder.encode(out)
