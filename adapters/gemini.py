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
from adapters.common import ReplyUsage, chat_options, decode_body, model_spec, prompt_tokens, require_text
from adapters.dispatch import Ending, EndReason, FunctionDialect
from shared.attachment_input import AttachmentInput
from shared.errors import BadRequest, GatewayError
from shared.models import ModelSpec, listed_models
from shared.schema import ChatRequest, Message, Part, Role, TextPart

NAME: Final = "gemini"

# ---------------------------------------------------------------- wire request (unknown fields ignored)


class _Wire(msgspec.Struct, rename="camel"):
    pass


class _Part(_Wire):
    text: str | None = None
    thought: bool = False
    inline_data: dict[str, Any] | None = None
    file_data: dict[str, Any] | None = None
    function_call: dict[str, Any] | None = None
    function_response: dict[str, Any] | None = None


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


class _Request(_Wire):
    contents: list[_Content] = msgspec.field(default_factory=list)
    system_instruction: _Content | str | None = None
    generation_config: _GenerationConfig | None = None


class _CountRequest(_Wire):
    contents: list[_Content] | None = None
    generate_content_request: _Request | None = None


_T = TypeVar("_T")
_json_encoder: Final = msgspec.json.Encoder()
_ROLES: Final[dict[str, Role]] = {"user": "user", "model": "assistant", "system": "system"}


def _camel(key: str) -> str:
    head, *rest = key.split("_")
    return head + "".join(word[:1].upper() + word[1:] for word in rest)


def _camel_keys(value: Any) -> Any:
    """Proto JSON accepts snake_case and lowerCamelCase field names; the structs read the latter."""
    if isinstance(value, dict):
        return {_camel(k): _camel_keys(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_camel_keys(v) for v in value]
    return value


def _decode(body: bytes, kind: type[_T]) -> _T:
    def convert(raw: bytes) -> _T:
        return msgspec.convert(_camel_keys(msgspec.json.decode(raw)), kind)

    invalid = "Invalid JSON payload received. "
    return decode_body(body, convert, invalid=invalid, malformed=invalid)


def _resolve(ctx: RequestContext) -> ModelSpec:
    name = (ctx.path_model or "").strip()
    return model_spec(name, f"models/{name.removeprefix('models/')} is not found.")


def _model_id(ctx: RequestContext) -> str:
    return (ctx.path_model or "").strip().removeprefix("models/")


def _messages(wire: _Request, attachments: list[AttachmentInput] | None = None) -> list[Message]:
    """The canonical messages; media parts go to `attachments` (dropped when None)."""
    if not wire.contents:
        raise BadRequest("* GenerateContentRequest.contents: contents is not specified", param="contents")
    system = _system(wire.system_instruction)
    offset = 1 if system is not None else 0
    found = attachments if attachments is not None else []
    turns = [_message(c, f"contents[{i}]", i + offset, found) for i, c in enumerate(wire.contents)]
    return [system, *turns] if system is not None else turns


def _system(system: _Content | str | None) -> Message | None:
    if system is None:
        return None
    if not isinstance(system, str) and any(p.inline_data or p.file_data for p in system.parts):
        raise BadRequest(
            "* system_instruction: images and documents belong in `contents`", param="system_instruction"
        )
    text = system if isinstance(system, str) else _text(system, "system_instruction")
    return Message(role="system", content=text) if text else None


def _message(content: _Content, param: str, index: int, attachments: list[AttachmentInput]) -> Message:
    role = _ROLES.get(content.role)
    if role is None:
        raise BadRequest(f"* {param}.role: unknown role `{content.role}`", param=f"{param}.role")
    if not any(p.inline_data is not None or p.file_data is not None for p in content.parts):
        return Message(role=role, content=_text(content, param))
    return Message(role=role, content=_media_parts(content, param, index, attachments))


def _media_parts(content: _Content, param: str, index: int, attachments: list[AttachmentInput]) -> list[Part]:
    """A content with media: its text parts kept apart, each blob or file recorded in its place."""
    _text(content, param)  # the other parts' checks
    parts: list[Part] = []
    placed = 0
    for j, part in enumerate(content.parts):
        if part.inline_data is not None or part.file_data is not None:
            place = Place(f"{param}.parts[{j}]", index, len(parts) + placed)
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
    """The text parts of one content, joined; thoughts sent back are dropped, media skipped (`_media_parts`)."""
    texts: list[str] = []
    for j, part in enumerate(content.parts):
        if part.function_call is not None or part.function_response is not None:
            raise BadRequest(
                "Function calling is not supported by Kimi's web chat.", param=f"{param}.parts[{j}]"
            )
        if part.text is not None and not part.thought:
            texts.append(part.text)
    return "".join(texts)


def parse(body: bytes, ctx: RequestContext) -> Parsed:
    """The canonical request of a generateContent body; the route says whether it streams (`ctx.stream`)."""
    spec = _resolve(ctx)
    wire = _decode(body, _Request)
    messages = _messages(wire, ctx.attachments)
    param = f"contents[{len(wire.contents) - 1}].parts"
    require_text(messages, param, f"* GenerateContentRequest.{param}: contents hold no text")
    reply = _reply_options(wire.generation_config)
    request = ChatRequest(
        request_id=ctx.request_id,
        model=_model_id(ctx),
        messages=messages,
        stream=bool(ctx.stream),
        options=chat_options(spec),
        dialect=NAME,
    )
    return Parsed(request, reply)


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
    """`GET /v1beta/models`: every model id of the table, Gemini's list shape."""
    return 200, dict(_JSON_HEADERS), _MODELS_JSON


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


class _ContentOut(msgspec.Struct):
    parts: list[_PartOut]
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

    def head(self) -> bytes:
        return b"" if self._sse else b"["

    def adopt(self, conversation_id: str) -> None:
        """Nothing to adopt: a response's id is the gateway's own (the request id)."""

    def answer(self, text: str) -> bytes:
        return self._chunk([_PartOut(text)])

    def reasoning(self, text: str) -> bytes:
        return self._chunk([_PartOut(text, thought=True)]) if text else b""

    def finish(self, ending: Ending, text: str) -> bytes:
        """The last chunk: the last text, the finish reason and usage; `]` closes a JSON array."""
        last = self._chunk([_PartOut(text)], _finish_reason(ending.reason), _usage_out(ending.usage))
        return last if self._sse else last + b"]"

    def error(self, exc: GatewayError) -> bytes:
        if self._sse:
            return sse_data(error_json(exc))
        return (b"," if self._chunks else b"") + error_json(exc) + b"]"

    def body(self, ending: Ending, answer: str, reasoning: str) -> bytes:
        parts = []
        if self._show_thoughts and reasoning:
            parts.append(_PartOut(reasoning, thought=True))
        parts.append(_PartOut(answer))
        response = self._response(parts, _finish_reason(ending.reason), _usage_out(ending.usage))
        return _json_encoder.encode(response)

    def _chunk(
        self, parts: list[_PartOut], reason: str | None = None, usage: _UsageOut | None = None
    ) -> bytes:
        if not self.stream:
            return b""
        payload = _json_encoder.encode(self._response(parts, reason, usage))
        self._chunks += 1
        if self._sse:
            return sse_data(payload)
        return payload if self._chunks == 1 else b",\r\n" + payload

    def _response(self, parts: list[_PartOut], reason: str | None, usage: _UsageOut | None) -> _ResponseOut:
        candidate = _CandidateOut(_ContentOut(parts), 0, reason)
        return _ResponseOut([candidate], usage, self._model, self._response_id)


DIALECT: Final = FunctionDialect(NAME, parse, GeminiWriter, error_response)
