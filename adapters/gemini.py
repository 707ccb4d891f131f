"""Google Gemini: wire request → `ChatRequest`, canonical events → the exact bytes a client sees.

Wire format: ../shared/spec/client-formats.md §3. `:generateContent` answers one `GenerateContentResponse`;
`:streamGenerateContent?alt=sse` sends one `data:` frame per response chunk and no `[DONE]` (the end of the
body ends the stream); without `alt=sse` the chunks form one JSON array, written progressively. The last chunk
carries `finishReason` and `usageMetadata`. Errors are google.rpc.Status objects, in-band (a frame, or the
array's last element) after the first byte.

Keep-alive: a bare newline. google-genai hands every non-`data:` line to a JSON parser, so an SSE comment
breaks it, while an empty line is skipped by every SSE parser and is whitespace inside a JSON array.

Field names are accepted in both proto JSON spellings (`systemInstruction` and `system_instruction`).
`maxOutputTokens` and `stopSequences` are enforced by the gateway (adapters/shaping.py); reasoning becomes
parts with `"thought": true` only when `thinkingConfig.includeThoughts` is set; other generation settings
are accepted and ignored. `inlineData` (base64) and `fileData` with an http(s) `fileUri` in any content
become attachments (adapters/attachments.py); other URIs (Files API, gs://), audio and video are a 400.

Function calling (../shared/spec/tools-and-attachments.md §3): `tools[].functionDeclarations` (`parameters` or
`parametersJsonSchema`) become `ToolSpec`s, `toolConfig.functionCallingConfig` (AUTO / VALIDATED / ANY / NONE,
`allowedFunctionNames`) the `ToolChoice`; `functionCall` parts are the model's calls (an id is made up when the
client sent none) and `functionResponse` parts `tool` messages, matched to their call by id, else by name. Field
names are converted to camelCase only where they are the API's own: property names inside a schema and the keys
of `args` / `response` stay as the client wrote them. A call is answered as a whole `functionCall` part (`id`,
`name`, `args`), also in a stream, with `finishReason: "STOP"`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Final, TypeVar

import msgspec

from adapters.attachments import Place, from_base64, from_url, refuse_media
from adapters.base import (
    JSON_CONTENT_TYPE,
    SSE_CONTENT_TYPE,
    LocalReply,
    Parsed,
    ReplyOptions,
    RequestContext,
    sse_data,
)
from adapters.common import (
    GEMINI_BOUNDS,
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
from shared.errors import BadRequest, GatewayError, ModelNotFound
from shared.models import ModelSpec, listed_models
from shared.schema import ChatRequest, Message, Part, Role, TextPart, ToolCall, ToolChoice, ToolSpec

NAME: Final = "gemini"

# ---------------------------------------------------------------- wire request (unknown fields ignored)


class _Wire(msgspec.Struct, rename="camel"):
    pass


class _FunctionCall(_Wire):
    name: str
    id: str | None = None
    args: dict[str, Any] = msgspec.field(default_factory=dict)


class _FunctionResponse(_Wire):
    name: str = ""
    id: str | None = None
    response: dict[str, Any] = msgspec.field(default_factory=dict)


class _Part(_Wire):
    text: str | None = None
    thought: bool = False
    inline_data: dict[str, Any] | None = None
    file_data: dict[str, Any] | None = None
    function_call: _FunctionCall | None = None
    function_response: _FunctionResponse | None = None


class _Content(_Wire):
    parts: list[_Part] = msgspec.field(default_factory=list)
    role: str = "user"


class _ThinkingConfig(_Wire):
    include_thoughts: bool = False


class _GenerationConfig(_Wire):
    max_output_tokens: Annotated[int, msgspec.Meta(ge=1)] | None = None
    stop_sequences: list[str] = msgspec.field(default_factory=list)
    candidate_count: int | None = None
    thinking_config: _ThinkingConfig | None = None


class _FunctionDeclaration(_Wire):
    name: str
    description: str = ""
    parameters: dict[str, Any] | None = None
    parameters_json_schema: dict[str, Any] | None = None


class _Tool(_Wire):
    function_declarations: list[_FunctionDeclaration] = msgspec.field(default_factory=list)


class _FunctionCallingConfig(_Wire):
    mode: str = "AUTO"
    allowed_function_names: list[str] | None = None


class _ToolConfig(_Wire):
    function_calling_config: _FunctionCallingConfig | None = None


class _Request(_Wire):
    contents: list[_Content] = msgspec.field(default_factory=list)
    system_instruction: _Content | str | None = None
    generation_config: _GenerationConfig | None = None
    tools: list[_Tool] = msgspec.field(default_factory=list)
    tool_config: _ToolConfig | None = None


class _CountRequest(_Wire):
    contents: list[_Content] | None = None
    generate_content_request: _Request | None = None


_T = TypeVar("_T")
_json_encoder: Final = msgspec.json.Encoder()
_ROLES: Final[dict[str, Role]] = {"user": "user", "model": "assistant", "system": "system"}


def _camel(key: str) -> str:
    head, *rest = key.split("_")
    return head + "".join(word[:1].upper() + word[1:] for word in rest)


#: Fields whose value is the client's own JSON (call arguments, a result), kept as written.
_OPAQUE: Final = frozenset({"args", "response", "responseJsonSchema"})
#: Fields whose value is a schema: keywords are converted, property names are not.
_SCHEMAS: Final = frozenset({"parameters", "parametersJsonSchema"})
#: Schema keywords whose value maps names to schemas, and those whose value is data.
_SCHEMA_MAPS: Final = frozenset({"properties", "patternProperties", "$defs", "definitions"})
_SCHEMA_DATA: Final = frozenset({"enum", "default", "example", "examples", "const", "required"})


def _camel_keys(value: Any) -> Any:
    """Proto JSON accepts snake_case and lowerCamelCase field names; the structs read the latter."""
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            name = _camel(key)
            if name in _OPAQUE:
                out[name] = item
            elif name in _SCHEMAS:
                out[name] = _schema_keys(item)
            else:
                out[name] = _camel_keys(item)
        return out
    if isinstance(value, list):
        return [_camel_keys(v) for v in value]
    return value


def _schema_keys(value: Any) -> Any:
    """A schema's keywords in camelCase (`any_of` → `anyOf`); property names and data values as written."""
    if isinstance(value, list):
        return [_schema_keys(v) for v in value]
    if not isinstance(value, dict):
        return value
    out: dict[str, Any] = {}
    for key, item in value.items():
        name = _camel(key) if not key.startswith("$") else key
        if name in _SCHEMA_MAPS and isinstance(item, dict):
            out[name] = {prop: _schema_keys(sub) for prop, sub in item.items()}
        elif name in _SCHEMA_DATA:
            out[name] = item
        else:
            out[name] = _schema_keys(item)
    return out


def _decode(body: bytes, kind: type[_T]) -> _T:
    def convert(raw: bytes) -> _T:
        return msgspec.convert(_camel_keys(msgspec.json.decode(raw)), kind)

    invalid = "Invalid JSON payload received. "
    return decode_body(body, convert, invalid=invalid, malformed=invalid)


def _resolve(ctx: RequestContext) -> ModelSpec:
    name = (ctx.path_model or "").strip()
    missing = f"models/{name.removeprefix('models/')} is not found."
    spec = model_spec(name, missing)
    if not ctx.may_use(name.removeprefix("models/")):
        raise ModelNotFound(missing, param="model")
    return spec


def _model_id(ctx: RequestContext) -> str:
    return (ctx.path_model or "").strip().removeprefix("models/")


def _messages(wire: _Request, attachments: list[AttachmentInput] | None = None) -> list[Message]:
    """The canonical messages; media parts go to `attachments` (dropped when None)."""
    if not wire.contents:
        raise BadRequest("* GenerateContentRequest.contents: contents is not specified", param="contents")
    system = _system(wire.system_instruction)
    offset = 1 if system is not None else 0
    found = attachments if attachments is not None else []
    calls = _Calls()
    turns: list[Message] = []
    for i, content in enumerate(wire.contents):
        turns.extend(_turn(content, f"contents[{i}]", calls, offset + len(turns), found))
    return [system, *turns] if system is not None else turns


class _Calls:
    """The history's calls still waiting for a result: a `functionResponse` finds its call by id, else by name.
    Calls sent without an id get `call_{n}` (n counts the history's calls)."""

    def __init__(self) -> None:
        self._count = 0
        self._open: list[ToolCall] = []

    def call(self, wire: _FunctionCall) -> ToolCall:
        call = ToolCall(wire.id or f"call_{self._count}", wire.name, compact_json(wire.args))
        self._count += 1
        self._open.append(call)
        return call

    def result(self, wire: _FunctionResponse) -> Message:
        match = next((c for c in self._open if wire.id and c.id == wire.id), None)
        match = match or next((c for c in self._open if c.name == wire.name), None)
        if match is not None:
            self._open.remove(match)
        call_id = wire.id or (match.id if match else f"call_{wire.name}")
        response = wire.response
        is_error = "error" in response and "output" not in response
        return Message(
            "tool", compact_json(response), tool_call_id=call_id, name=wire.name, is_error=is_error
        )


def _turn(
    content: _Content, param: str, calls: _Calls, at: int, attachments: list[AttachmentInput]
) -> list[Message]:
    """One content as canonical messages: its function responses (as `tool` messages), then its text, media
    and calls (at canonical index `at` + the responses before it)."""
    role = _ROLES.get(content.role)
    if role is None:
        raise BadRequest(f"* {param}.role: unknown role `{content.role}`", param=f"{param}.role")
    results = [calls.result(p.function_response) for p in content.parts if p.function_response is not None]
    made = [calls.call(p.function_call) for p in content.parts if p.function_call is not None]
    placed: list[AttachmentInput] = []
    body = _body(content, param, placed)
    if body or made or placed or not results:
        attachments.extend(msgspec.structs.replace(a, message_index=at + len(results)) for a in placed)
        return [*results, Message(role=role, content=body, tool_calls=made or None)]
    return results


def _system(system: _Content | str | None) -> Message | None:
    if system is None:
        return None
    if not isinstance(system, str) and any(p.inline_data or p.file_data for p in system.parts):
        raise BadRequest(
            "* system_instruction: images and documents belong in `contents`", param="system_instruction"
        )
    text = system if isinstance(system, str) else _text(system, "system_instruction")
    return Message(role="system", content=text) if text else None


def _body(content: _Content, param: str, attachments: list[AttachmentInput]) -> str | list[Part]:
    """A content's text, joined; with media, its text parts kept apart and each blob or file recorded in its
    place (the message index is `_turn`'s to set)."""
    if not any(p.inline_data is not None or p.file_data is not None for p in content.parts):
        return _text(content, param)
    parts: list[Part] = []
    placed = 0
    for j, part in enumerate(content.parts):
        if part.inline_data is not None or part.file_data is not None:
            place = Place(f"{param}.parts[{j}]", 0, len(parts) + placed)
            attachments.append(_attachment(part, place))
            placed += 1
        elif part.text is not None and not part.thought:
            parts.append(TextPart(part.text))
    return parts


def _attachment(part: _Part, place: Place) -> AttachmentInput:
    """`inlineData` {mimeType, data} or `fileData` {fileUri, mimeType}, each with an optional `displayName`
    (keys already camelCase)."""
    blob = part.inline_data if part.inline_data is not None else part.file_data or {}
    mime, name = blob.get("mimeType"), blob.get("displayName")
    mime = mime if isinstance(mime, str) else None
    name = name if isinstance(name, str) else None
    refuse_media(mime, place)
    if part.inline_data is not None:
        data = blob.get("data")
        return from_base64(data if isinstance(data, str) else "", place, mime=mime, name=name)
    uri = blob.get("fileUri")
    if not isinstance(uri, str) or not uri.lower().startswith(("http://", "https://")):
        raise BadRequest(
            f"* {place.param}.fileData.fileUri: only http(s) URLs are fetched (the gateway has no Files API)",
            param=place.param,
        )
    return from_url(uri, place, mime=mime, name=name)


def _text(content: _Content, param: str) -> str:
    """The text parts of one content, joined; thoughts sent back are dropped, media skipped (`_body`)."""
    texts: list[str] = []
    for part in content.parts:
        if part.text is not None and not part.thought:
            texts.append(part.text)
    return "".join(texts)


def parse(body: bytes, ctx: RequestContext) -> Parsed:
    """The canonical request of a generateContent body; the route says whether it streams (`ctx.stream`)."""
    spec = _resolve(ctx)
    wire = _decode(body, _Request)
    messages = _messages(wire, ctx.attachments)
    param = f"contents[{len(wire.contents) - 1}].parts"
    require_text(messages, ctx.attachments, param, f"* GenerateContentRequest.{param}: contents hold no text")
    reply = _reply_options(wire.generation_config)
    check_bounds(
        GEMINI_BOUNDS,
        reply.stop_sequences,
        messages,
        stop_param="generationConfig.stopSequences",
        messages_param="contents",
    )
    tools = _tools(wire.tools)
    request = ChatRequest(
        request_id=ctx.request_id,
        model=_model_id(ctx),
        messages=messages,
        stream=bool(ctx.stream),
        options=chat_options(spec),
        dialect=NAME,
        tools=tools,
        tool_choice=_tool_choice(wire.tool_config, tools),
    )
    return Parsed(request, reply)


def _tools(wire: list[_Tool]) -> list[ToolSpec]:
    """Every function declaration (built-in tools such as googleSearch declare none and are dropped)."""
    return [
        ToolSpec(d.name, d.description, compact_json(d.parameters_json_schema or d.parameters or {}))
        for tool in wire
        for d in tool.function_declarations
    ]


_MODES: Final[dict[str, ChoiceMode]] = {
    "AUTO": "auto",
    "VALIDATED": "auto",
    "MODE_UNSPECIFIED": "auto",
    "ANY": "required",
    "NONE": "none",
}


def _tool_choice(wire: _ToolConfig | None, tools: list[ToolSpec]) -> ToolChoice:
    """The calling mode; ANY with one allowed name is that function, named."""
    config = wire.function_calling_config if wire is not None else None
    if config is None or not tools:
        return ToolChoice()
    mode = _MODES.get(config.mode.upper())
    if mode is None:
        raise BadRequest(f"Invalid function calling mode `{config.mode}`.", param="tool_config.mode")
    allowed = config.allowed_function_names or None
    for name in allowed or ():
        check_named_tool(tools, name, "tool_config.function_calling_config.allowed_function_names")
    if mode == "required" and allowed is not None and len(allowed) == 1:
        return ToolChoice("named", allowed[0])
    return ToolChoice(mode, allowed=allowed if mode != "none" else None)


def _reply_options(config: _GenerationConfig | None) -> ReplyOptions:
    if config is None:
        return ReplyOptions(show_reasoning=False)
    if config.candidate_count is not None and config.candidate_count > 1:
        raise BadRequest("Kimi returns one candidate; candidateCount must be 1.", param="candidate_count")
    thinking = config.thinking_config
    return ReplyOptions(
        stop_sequences=tuple(config.stop_sequences),
        max_tokens=config.max_output_tokens,
        show_reasoning=thinking is not None and thinking.include_thoughts,
    )


# ---------------------------------------------------------------- count tokens, models


class _TokenCount(msgspec.Struct, rename="camel"):
    total_tokens: int


class _ModelOut(msgspec.Struct, rename="camel"):
    name: str
    display_name: str
    description: str
    supported_generation_methods: list[str]
    thinking: bool


class _ModelList(msgspec.Struct):
    models: list[_ModelOut]


_METHODS: Final = ["generateContent", "streamGenerateContent", "countTokens"]
_JSON_HEADERS: Final = {"Content-Type": JSON_CONTENT_TYPE}


def _model_out(spec: ModelSpec, model_id: str) -> _ModelOut:
    protocol = "Connect" if spec.protocol == "connect" else "REST"
    description = (
        f"Kimi web chat ({protocol} lane{', thinking' if spec.thinking else ''}) through the gateway."
    )
    return _ModelOut(f"models/{model_id}", model_id, description, list(_METHODS), spec.thinking)


_MODELS_JSON: Final = _json_encoder.encode(_ModelList([_model_out(s, s.id) for s in listed_models()]))


def list_models(body: bytes, ctx: RequestContext) -> LocalReply:
    """`GET /v1beta/models`: every model id of the table (those the caller's key may use), Gemini's shape."""
    if ctx.allowed_models is None:
        return 200, dict(_JSON_HEADERS), _MODELS_JSON
    models = [_model_out(s, s.id) for s in listed_models() if ctx.may_use(s.id)]
    return 200, dict(_JSON_HEADERS), _json_encoder.encode(_ModelList(models))


def get_model(body: bytes, ctx: RequestContext) -> LocalReply:
    """`GET /v1beta/models/{model}`: one model, or 404 NOT_FOUND."""
    spec = _resolve(ctx)
    return 200, dict(_JSON_HEADERS), _json_encoder.encode(_model_out(spec, _model_id(ctx)))


def is_gemini_caller(headers: Mapping[str, str], query: Mapping[str, str]) -> bool:
    """A caller that authenticates the Gemini way (`x-goog-api-key` or `?key=`): google-genai on `/v1`."""
    return "x-goog-api-key" in headers or "key" in query


def count_tokens(body: bytes, ctx: RequestContext) -> LocalReply:
    """`POST …/models/{model}:countTokens` with `contents` or `generateContentRequest` → `{"totalTokens"}`."""
    _resolve(ctx)
    wire = _decode(body, _CountRequest)
    if wire.contents is not None and wire.generate_content_request is not None:
        raise BadRequest("contents and generateContentRequest are mutually exclusive.", param="contents")
    request = wire.generate_content_request or _Request(contents=wire.contents or [])
    tokens = prompt_tokens(_messages(request))
    return 200, dict(_JSON_HEADERS), _json_encoder.encode(_TokenCount(tokens))


# ---------------------------------------------------------------- errors

_RPC_STATUS: Final[dict[str, str]] = {
    "invalid_request": "INVALID_ARGUMENT",
    "authentication": "UNAUTHENTICATED",
    "permission": "PERMISSION_DENIED",
    "not_found": "NOT_FOUND",
    "model_not_found": "NOT_FOUND",
    "too_large": "INVALID_ARGUMENT",
    "rate_limited": "RESOURCE_EXHAUSTED",
    "overloaded": "UNAVAILABLE",
    "upstream": "UNAVAILABLE",
    "upstream_auth": "UNAVAILABLE",
    "unavailable": "UNAVAILABLE",
    "timeout": "DEADLINE_EXCEEDED",
    "protocol": "INTERNAL",
    "content_filter": "INVALID_ARGUMENT",
    "cancelled": "CANCELLED",
    "internal": "INTERNAL",
}


class _RetryInfo(msgspec.Struct, rename={"type": "@type", "retry_delay": "retryDelay"}):
    type: str
    retry_delay: str


class _Status(msgspec.Struct, omit_defaults=True):
    code: int
    message: str
    status: str
    details: list[_RetryInfo] = msgspec.field(default_factory=list)


class _ErrorEnvelope(msgspec.Struct):
    error: _Status


def error_json(exc: GatewayError) -> bytes:
    """`{"error": {"code", "message", "status"}}`, plus a RetryInfo detail when a retry delay is known."""
    details = []
    if exc.retry_after_s is not None:
        delay = f"{max(0, round(exc.retry_after_s))}s"
        details.append(_RetryInfo("type.googleapis.com/google.rpc.RetryInfo", delay))
    status = _Status(exc.status, exc.message, _RPC_STATUS.get(exc.kind, "INTERNAL"), details)
    return _json_encoder.encode(_ErrorEnvelope(status))


def error_response(exc: GatewayError, request_id: str) -> tuple[int, dict[str, str], bytes]:
    return exc.status, {}, error_json(exc)


# ---------------------------------------------------------------- rendering


class _PartOut(msgspec.Struct, omit_defaults=True):
    text: str
    thought: bool = False


class _FunctionCallOut(msgspec.Struct):
    id: str
    name: str
    args: dict[str, Any]


class _CallPartOut(msgspec.Struct, rename="camel"):
    function_call: _FunctionCallOut


def _call_part(call: ToolCall) -> _CallPartOut:
    return _CallPartOut(_FunctionCallOut(call.id, call.name, arguments_object(call.arguments)))


class _ContentOut(msgspec.Struct):
    parts: list[_PartOut | _CallPartOut]
    role: str = "model"


class _CandidateOut(msgspec.Struct, rename="camel", omit_defaults=True):
    content: _ContentOut
    index: int
    finish_reason: str | None = None


class _UsageOut(msgspec.Struct, rename="camel", omit_defaults=True):
    prompt_token_count: int
    candidates_token_count: int
    total_token_count: int
    thoughts_token_count: int = 0


class _ResponseOut(msgspec.Struct, rename="camel", omit_defaults=True):
    candidates: list[_CandidateOut]
    usage_metadata: _UsageOut | None = None
    model_version: str = ""
    response_id: str = ""


#: Gemini's finish reason of each ending.
_FINISH_REASON: Final[dict[EndReason, str]] = {
    "stop": "STOP",
    "length": "MAX_TOKENS",
    "content_filter": "SAFETY",
    "stop_sequence": "STOP",
    "max_tokens": "MAX_TOKENS",
}


def _finish_reason(reason: EndReason | None) -> str | None:
    return None if reason is None else _FINISH_REASON.get(reason, "STOP")


def _usage_out(usage: ReplyUsage) -> _UsageOut:
    prompt, completion, thoughts = usage.prompt_tokens, usage.completion_tokens, usage.reasoning_tokens
    return _UsageOut(prompt, completion - thoughts, prompt + completion, thoughts)


class GeminiWriter:
    """The pieces of one generateContent response: SSE frames, a progressively written JSON array, or one body."""

    #: google-genai feeds every non-`data:` line to a JSON parser: an empty line is the only safe keep-alive.
    keepalive: Final = b"\n"
    echoes_keepalive: Final = True

    def __init__(self, request: ChatRequest, reply: ReplyOptions, ctx: RequestContext) -> None:
        self.stream = request.stream
        self._sse = request.stream and ctx.query.get("alt") == "sse"
        self.content_type = SSE_CONTENT_TYPE if self._sse else JSON_CONTENT_TYPE
        self._model = request.model
        self._response_id = request.request_id
        self._show_thoughts = reply.show_reasoning
        self._chunks = 0
        #: The answer's calls, for the non-stream body.
        self._calls: list[ToolCall] = []

    def head(self) -> bytes:
        return b"" if self._sse else b"["

    def adopt(self, conversation_id: str) -> None:
        """Nothing to adopt: a response's id is the gateway's own (the request id)."""

    def answer(self, text: str) -> bytes:
        return self._chunk([_PartOut(text)])

    def reasoning(self, text: str) -> bytes:
        return self._chunk([_PartOut(text, thought=True)]) if text else b""

    def tool_call(self, index: int, call: ToolCall) -> bytes:
        """One chunk with the whole `functionCall` part (Gemini never streams arguments)."""
        self._calls.append(call)
        return self._chunk([_call_part(call)])

    def finish(self, ending: Ending, text: str) -> bytes:
        """The last chunk: the last text, the finish reason and usage; `]` closes a JSON array."""
        last = self._chunk([_PartOut(text)], _finish_reason(ending.reason), _usage_out(ending.usage))
        return last if self._sse else last + b"]"

    def error(self, exc: GatewayError) -> bytes:
        if self._sse:
            return sse_data(error_json(exc))
        return (b"," if self._chunks else b"") + error_json(exc) + b"]"

    def body(self, ending: Ending, answer: str, reasoning: str) -> bytes:
        parts: list[_PartOut | _CallPartOut] = []
        if self._show_thoughts and reasoning:
            parts.append(_PartOut(reasoning, thought=True))
        if answer or not self._calls:
            parts.append(_PartOut(answer))
        parts.extend(_call_part(c) for c in self._calls)
        response = self._response(parts, _finish_reason(ending.reason), _usage_out(ending.usage))
        return _json_encoder.encode(response)

    def _chunk(
        self, parts: list[_PartOut | _CallPartOut], reason: str | None = None, usage: _UsageOut | None = None
    ) -> bytes:
        if not self.stream:
            return b""
        payload = _json_encoder.encode(self._response(parts, reason, usage))
        self._chunks += 1
        if self._sse:
            return sse_data(payload)
        return payload if self._chunks == 1 else b",\r\n" + payload

    def _response(
        self, parts: list[_PartOut | _CallPartOut], reason: str | None, usage: _UsageOut | None
    ) -> _ResponseOut:
        candidate = _CandidateOut(_ContentOut(parts), 0, reason)
        return _ResponseOut([candidate], usage, self._model, self._response_id)


DIALECT: Final = FunctionDialect(NAME, parse, GeminiWriter, error_response)
