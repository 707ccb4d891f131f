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
parts with `"thought": true` only when `thinkingConfig.includeThoughts` is set. `inlineData` / `fileData`
answer 400 until file uploads are supported; other generation settings are accepted and ignored.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Final, TypeVar

import msgspec

from adapters.base import SSE_CONTENT_TYPE, LocalReply, RequestContext, has_text, sse_data
from adapters.shaping import LimitedRenderer, limiter_from_hints
from shared.errors import BadRequest, GatewayError, ModelNotFound
from shared.models import ModelSpec, listed_models, resolve_model
from shared.schema import (
    ChatOptions,
    ChatRequest,
    Message,
    Role,
    Usage,
)
from shared.usage_estimate import estimate_prompt_tokens, estimate_tokens

NAME: Final = "gemini"
JSON_CONTENT_TYPE: Final = "application/json"
HINT_STOP: Final = "stop_sequences"
HINT_MAX_TOKENS: Final = "max_output_tokens"
HINT_THOUGHTS: Final = "include_thoughts"

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
    if not body.strip():
        raise BadRequest("The request body is empty; expected a JSON object.")
    try:
        return msgspec.convert(_camel_keys(msgspec.json.decode(body)), kind)
    except msgspec.ValidationError as exc:
        raise BadRequest(f"Invalid JSON payload received. {exc}") from exc
    except msgspec.DecodeError as exc:
        raise BadRequest(f"Invalid JSON payload received. {exc}") from exc


def _resolve(ctx: RequestContext) -> ModelSpec:
    name = (ctx.path_model or "").strip()
    spec = resolve_model(name)
    if spec is None:
        raise ModelNotFound(f"models/{name.removeprefix('models/')} is not found.", param="model")
    return spec


def _model_id(ctx: RequestContext) -> str:
    return (ctx.path_model or "").strip().removeprefix("models/")


def _messages(wire: _Request) -> list[Message]:
    if not wire.contents:
        raise BadRequest("* GenerateContentRequest.contents: contents is not specified", param="contents")
    system = _system(wire.system_instruction)
    turns = [_message(c, f"contents[{i}]") for i, c in enumerate(wire.contents)]
    return [system, *turns] if system is not None else turns


def _system(system: _Content | str | None) -> Message | None:
    if system is None:
        return None
    text = system if isinstance(system, str) else _text(system, "system_instruction")
    return Message(role="system", content=text) if text else None


def _message(content: _Content, param: str) -> Message:
    role = _ROLES.get(content.role)
    if role is None:
        raise BadRequest(f"* {param}.role: unknown role `{content.role}`", param=f"{param}.role")
    return Message(role=role, content=_text(content, param))


def _text(content: _Content, param: str) -> str:
    """The text parts of one content, joined; thoughts sent back are dropped, media refused."""
    texts: list[str] = []
    for j, part in enumerate(content.parts):
        if part.inline_data is not None or part.file_data is not None:
            raise BadRequest(
                "inline_data and file_data parts are not supported yet.", param=f"{param}.parts[{j}]"
            )
        if part.function_call is not None or part.function_response is not None:
            raise BadRequest(
                "Function calling is not supported by Kimi's web chat.", param=f"{param}.parts[{j}]"
            )
        if part.text is not None and not part.thought:
            texts.append(part.text)
    return "".join(texts)


def _options(spec: ModelSpec) -> ChatOptions:
    return ChatOptions(
        search=spec.search,
        silent=spec.silent,
        thinking=spec.thinking,
        research=spec.research,
        math=spec.math,
        k1=spec.k1,
    )


def _remember_config(config: _GenerationConfig | None, ctx: RequestContext) -> None:
    if config is None:
        return
    if config.candidate_count is not None and config.candidate_count > 1:
        raise BadRequest("Kimi returns one candidate; candidateCount must be 1.", param="candidate_count")
    ctx.hints[HINT_STOP] = list(config.stop_sequences)
    ctx.hints[HINT_MAX_TOKENS] = config.max_output_tokens
    ctx.hints[HINT_THOUGHTS] = config.thinking_config is not None and config.thinking_config.include_thoughts


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
    tokens = estimate_prompt_tokens([m.text() for m in _messages(request)])
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


_FINISH_REASON: Final = {"stop": "STOP", "length": "MAX_TOKENS", "content_filter": "SAFETY"}
_LIMIT_REASON: Final = {"stop_sequence": "STOP", "max_tokens": "MAX_TOKENS"}
_KEEPALIVE: Final = b"\n"


class GeminiRenderer(LimitedRenderer):
    """Bytes of one generateContent response: whole, SSE frames, or a progressively written JSON array."""

    def __init__(self, request: ChatRequest, ctx: RequestContext) -> None:
        self.stream = request.stream
        self._sse = request.stream and ctx.query.get("alt") == "sse"
        self.content_type = SSE_CONTENT_TYPE if self._sse else JSON_CONTENT_TYPE
        self._request = request
        self._silent = request.options.silent
        self._thoughts = bool(ctx.hints.get(HINT_THOUGHTS, False))
        self._limiter = limiter_from_hints(ctx.hints, HINT_STOP, HINT_MAX_TOKENS)
        self._input_tokens = estimate_prompt_tokens([m.text() for m in request.messages])
        self._usage: Usage | None = None
        self._reasoning: list[str] = []
        self._chunks = 0
        self._finish_reason: str | None = None
        self._finished = False

    def head(self) -> bytes:
        return b"" if self._sse else b"["

    def keepalive(self) -> bytes:
        return _KEEPALIVE

    def _done(self, reason: str) -> bytes:
        return self._finish(_FINISH_REASON.get(reason, "STOP"))

    def error(self, exc: GatewayError) -> bytes:
        self._finished = True
        if self._sse:
            return sse_data(error_json(exc))
        return (b"," if self._chunks else b"") + error_json(exc) + b"]"

    def body(self) -> bytes:
        parts = []
        if self._thoughts and self._reasoning:
            parts.append(_PartOut("".join(self._reasoning), thought=True))
        parts.append(_PartOut(self._limiter.sent_text))
        return _json_encoder.encode(self._response(parts, self._finish_reason, self._final_usage()))

    # -- pieces

    def _answer(self, sent: str) -> bytes:
        """Renders answer text the limiter let through, and the last chunk when it stopped."""
        if self._limiter.cause is not None:
            return self._finish(_LIMIT_REASON[self._limiter.cause], sent)
        return self._chunk([_PartOut(sent)]) if sent else b""

    def _thought(self, text: str) -> bytes:
        self._reasoning.append(text)
        if not self._thoughts or not text:
            return b""
        return self._chunk([_PartOut(text, thought=True)])

    def _finish(self, reason: str, tail: str = "") -> bytes:
        if not self._limiter.stopped:
            tail += self._limiter.flush()
        self._finish_reason = _LIMIT_REASON[self._limiter.cause] if self._limiter.cause else reason
        self._finished = True
        if not self.stream:
            return b""
        last = self._chunk([_PartOut(tail)], self._finish_reason, self._final_usage())
        return last if self._sse else last + b"]"

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
        return _ResponseOut([candidate], usage, self._request.model, self._request.request_id)

    def _final_usage(self) -> _UsageOut:
        thoughts = estimate_tokens("".join(self._reasoning))
        if self._usage is None or self._limiter.stopped:
            prompt = self._usage.prompt_tokens if self._usage else self._input_tokens
            answer = estimate_tokens(self._limiter.sent_text)
        else:
            prompt = self._usage.prompt_tokens
            thoughts = min(thoughts, self._usage.completion_tokens)
            answer = self._usage.completion_tokens - thoughts
        return _UsageOut(prompt, answer, prompt + answer + thoughts, thoughts)


class GeminiDialect:
    """The Gemini dialect; one instance per route, since the route (not the body) says whether to stream."""

    name = NAME

    def __init__(self, *, stream: bool) -> None:
        self._stream = stream

    def parse(self, body: bytes, ctx: RequestContext) -> ChatRequest:
        """The canonical request of a generateContent body; raises BadRequest / ModelNotFound."""
        spec = _resolve(ctx)
        wire = _decode(body, _Request)
        messages = _messages(wire)
        if not has_text(messages):
            param = f"contents[{len(wire.contents) - 1}].parts"
            raise BadRequest(f"* GenerateContentRequest.{param}: contents hold no text", param=param)
        _remember_config(wire.generation_config, ctx)
        return ChatRequest(
            request_id=ctx.request_id,
            model=_model_id(ctx),
            messages=messages,
            stream=self._stream,
            options=_options(spec),
            dialect=NAME,
        )

    def renderer(self, request: ChatRequest, ctx: RequestContext) -> GeminiRenderer:
        return GeminiRenderer(request, ctx)

    def error_response(self, exc: GatewayError, request_id: str) -> tuple[int, dict[str, str], bytes]:
        return error_response(exc, request_id)


GENERATE: Final = GeminiDialect(stream=False)
STREAM: Final = GeminiDialect(stream=True)
