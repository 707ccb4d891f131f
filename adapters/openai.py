"""OpenAI Chat Completions: wire request → `ChatRequest`, canonical events → the exact bytes a client sees.

Wire format: ../shared/spec/client-formats.md §1. Chunks share one `id` and `created`; the first carries the
role; the last content chunk carries `finish_reason`; `stream_options.include_usage` adds a usage chunk (with
`choices: []`) before `data: [DONE]`, and `"usage": null` on every other chunk. Errors after the first byte
are `data: {"error": …}` and the stream closes without `[DONE]`.

Kimi takes neither `stop` nor a maximum length: the gateway cuts the answer text itself (adapters/shaping.py) at
the first `stop` sequence (finish_reason "stop") or at the `max_completion_tokens` / `max_tokens` budget
(finish_reason "length"; reasoning is never cut nor counted), then ends the response and cancels the job.

Parameters Kimi's web chat cannot honour (README, "OpenAI parameters"):
- accepted and ignored: temperature, top_p, presence_penalty, frequency_penalty, seed, user, logit_bias,
  metadata, store, service_tier, parallel_tool_calls, `response_format` of type text / json_object,
  `tool_choice: "none"`, `n: 1`, `logprobs: false`;
- refused with 400: `n` > 1, `logprobs: true`, non-empty `tools` (unless `tool_choice` is "none"),
  `response_format` of type json_schema, image / file / audio content parts (until file upload lands),
  a request without any text.
kimi-free-api extensions: `use_search`, `conversation_id`, model-name flags (see shared/models.py).
"""

from __future__ import annotations

import re
import time
from typing import Annotated, Final

import msgspec

from adapters.base import (
    SSE_CONTENT_TYPE,
    FunctionDialect,
    LocalReply,
    RequestContext,
    has_text,
    sse_comment,
)
from adapters.shaping import StopCause, limiter_from_hints
from shared.errors import BadRequest, GatewayError, ModelNotFound
from shared.models import ModelSpec, listed_models, resolve_model
from shared.schema import (
    ChatOptions,
    ChatRequest,
    Citation,
    Done,
    Event,
    Message,
    Part,
    ReasoningDelta,
    Role,
    Start,
    TextDelta,
    TextPart,
    Usage,
)
from shared.usage_estimate import estimate_prompt_tokens, estimate_tokens

NAME: Final = "openai"
JSON_CONTENT_TYPE: Final = "application/json"

# ---------------------------------------------------------------- wire request (unknown fields ignored)


class _Wire(msgspec.Struct, omit_defaults=True):
    pass


class _ImageURL(_Wire):
    url: str
    detail: str | None = None


class _FileRef(_Wire):
    file_data: str | None = None
    file_id: str | None = None
    filename: str | None = None


class _Part(_Wire):
    type: str
    text: str | None = None
    image_url: _ImageURL | str | None = None
    file: _FileRef | None = None


class _Message(_Wire):
    role: str
    content: str | list[_Part] | None = None


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
    tools: list[msgspec.Raw] | None = None
    tool_choice: str | msgspec.Raw | None = None
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
_NEW_CONVERSATION: Final = frozenset({"none", "null", "new", "undefined"})
_AT_PATH: Final = re.compile(r"at `\$\.?(.*)`$")
#: Parts the worker cannot send Kimi yet (it uploads no files): refused rather than silently dropped.
_NOT_YET: Final = {
    "image_url": "Image content parts are not supported yet (file upload is not implemented).",
    "file": "File content parts are not supported yet (file upload is not implemented).",
}
HINT_INCLUDE_USAGE: Final = "include_usage"
HINT_STOP: Final = "stop"
HINT_MAX_TOKENS: Final = "max_tokens"


def parse(body: bytes, ctx: RequestContext) -> ChatRequest:
    """The canonical request of a `POST /v1/chat/completions` body; raises BadRequest / ModelNotFound."""
    wire = _decode(body)
    _refuse_unsupported(wire)
    spec = resolve_model(wire.model)
    if spec is None:
        raise ModelNotFound(f"The model `{wire.model}` does not exist.", param="model")
    if wire.stream_options is not None and wire.stream_options.include_usage:
        ctx.hints[HINT_INCLUDE_USAGE] = True
    ctx.hints[HINT_STOP] = [wire.stop] if isinstance(wire.stop, str) else list(wire.stop or ())
    ctx.hints[HINT_MAX_TOKENS] = wire.max_completion_tokens or wire.max_tokens
    messages = [_message(m, i) for i, m in enumerate(wire.messages)]
    if not has_text(messages):
        param = f"messages[{len(messages) - 1}].content"
        raise BadRequest("The messages hold no text; there is nothing to answer.", param=param)
    return ChatRequest(
        request_id=ctx.request_id,
        model=wire.model.strip(),
        messages=messages,
        stream=bool(wire.stream),
        options=_options(spec, wire),
        dialect=NAME,
    )


def _decode(body: bytes) -> _Request:
    if not body.strip():
        raise BadRequest("The request body is empty; expected a JSON object.")
    try:
        wire = _request_decoder.decode(body)
    except msgspec.ValidationError as exc:
        match = _AT_PATH.search(str(exc))
        raise BadRequest(f"Invalid request: {exc}", param=match.group(1) if match else None) from exc
    except msgspec.DecodeError as exc:
        raise BadRequest(f"The request body is not valid JSON: {exc}") from exc
    if not wire.messages:
        raise BadRequest("`messages` must hold at least one message.", param="messages")
    return wire


def _refuse_unsupported(wire: _Request) -> None:
    if wire.n is not None and wire.n > 1:
        raise BadRequest("Kimi returns one choice per request; `n` must be 1.", param="n")
    if wire.logprobs:
        raise BadRequest("Kimi's web chat does not return log probabilities.", param="logprobs")
    if wire.tools and wire.tool_choice != "none":
        raise BadRequest("Kimi's web chat does not support tool calls.", param="tools")
    if wire.response_format is not None and wire.response_format.type == "json_schema":
        raise BadRequest("Kimi's web chat does not support structured outputs.", param="response_format")


def _message(wire: _Message, index: int) -> Message:
    role = _ROLES.get(wire.role)
    if role is None:
        raise BadRequest(f"Unknown role `{wire.role}`.", param=f"messages[{index}].role")
    if wire.content is None or isinstance(wire.content, str):
        return Message(role=role, content=wire.content or "")
    parts = [_part(p, f"messages[{index}].content[{j}]") for j, p in enumerate(wire.content)]
    return Message(role=role, content=parts)


def _part(wire: _Part, param: str) -> Part:
    if wire.type == "text":
        return TextPart(text=wire.text or "")
    if wire.type in _NOT_YET:
        raise BadRequest(_NOT_YET[wire.type], param=param)
    raise BadRequest(f"Unsupported content part of type `{wire.type}`.", param=param)


def _options(spec: ModelSpec, wire: _Request) -> ChatOptions:
    conversation = (wire.conversation_id or "").strip()
    keep = bool(conversation)
    return ChatOptions(
        search=spec.search or bool(wire.use_search),
        silent=spec.silent,
        thinking=spec.thinking,
        research=spec.research,
        math=spec.math,
        k1=spec.k1,
        conversation_id=conversation if keep and conversation.lower() not in _NEW_CONVERSATION else None,
        keep_chat=keep,
    )


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


class _MessageOut(msgspec.Struct, omit_defaults=True):
    role: str
    content: str
    reasoning_content: str | None = None


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
_KEEPALIVE_BYTES: Final = sse_comment(b"keep-alive")
_LIMIT_REASON: Final[dict[StopCause, str]] = {"stop_sequence": "stop", "max_tokens": "length"}


class OpenAIRenderer:
    """Bytes of one chat completion response, streamed or whole. Not thread-safe; one per request."""

    content_type: str

    def __init__(self, request: ChatRequest, ctx: RequestContext) -> None:
        self.stream = request.stream
        self.content_type = SSE_CONTENT_TYPE if request.stream else JSON_CONTENT_TYPE
        self._request = request
        self._include_usage = bool(ctx.hints.get(HINT_INCLUDE_USAGE)) and request.stream
        self._created = int(ctx.now_s or time.time())
        self._id = _conversation_or(request.options.conversation_id, request)
        self._model_json = _json_encoder.encode(request.model)
        self._silent = request.options.silent
        #: Holds the answer text sent so far (the non-stream body, the usage estimate).
        self._limiter = limiter_from_hints(ctx.hints, HINT_STOP, HINT_MAX_TOKENS)
        self._prefix = b""
        self._suffix = b""
        self._started = False
        self._finished = False
        self._finish_reason = "stop"
        self._usage: Usage | None = None
        #: Reasoning is kept for the non-stream body, or to estimate usage when the worker sent none.
        self._keep_reasoning = not request.stream or self._include_usage
        self._reasoning: list[str] = []

    @property
    def finished(self) -> bool:
        return self._finished

    def head(self) -> bytes:
        return b""

    def keepalive(self) -> bytes:
        return _KEEPALIVE_BYTES

    def feed(self, event: Event) -> bytes:
        if self._finished:
            return b""
        match event:
            case TextDelta(text=text):
                return self._answer(self._limiter.feed(text))
            case ReasoningDelta(text=text):
                if self._keep_reasoning:
                    self._reasoning.append(text)
                return self._delta(b'{"reasoning_content":', text)
            case Citation():
                return b"" if self._silent else self._answer(self._limiter.feed_citation(event))
            case Start(conversation_id=cid):
                self._adopt(cid)
                return b""
            case Done(conversation_id=cid, finish_reason=reason):
                self._adopt(cid)
                return self._finish(reason)
            case Usage():
                self._usage = event
                return b""
            case _:
                return b""

    def error(self, exc: GatewayError) -> bytes:
        self._finished = True
        return b"data: " + error_json(exc) + b"\n\n"

    def body(self) -> bytes:
        usage = self._final_usage()
        message = _MessageOut("assistant", self._limiter.sent_text, "".join(self._reasoning) or None)
        out = _CompletionOut(
            id=self._id,
            object="chat.completion",
            created=self._created,
            model=self._request.model,
            choices=[_ChoiceOut(0, message, None, self._finish_reason)],
            usage=usage,
        )
        return _json_encoder.encode(out)

    # -- stream pieces

    def _begin(self) -> bytes:
        """The role chunk, once; builds the byte prefix every later chunk shares."""
        self._started = True
        head = b'{"id":' + _json_encoder.encode(self._id) + b',"object":"chat.completion.chunk","created":'
        head += str(self._created).encode() + b',"model":' + self._model_json + b',"choices":'
        self._prefix = b"data: " + head
        self._suffix = b',"usage":null}\n\n' if self._include_usage else b"}\n\n"
        return self._choice(b'{"role":"assistant","content":""}', b"null")

    def _choice(self, delta: bytes, finish: bytes) -> bytes:
        choice = b'[{"index":0,"delta":' + delta + b',"logprobs":null,"finish_reason":' + finish + b"}]"
        return self._prefix + choice + self._suffix

    def _adopt(self, conversation_id: str | None) -> None:
        """A kept chat answers with the Kimi chat id (kimi-free-api), learned from Start or Done."""
        if conversation_id and self._request.options.keep_chat and not self._started:
            self._id = conversation_id

    def _answer(self, sent: str) -> bytes:
        """Answer text the limiter let through; the end of the response once the limiter stopped."""
        out = self._delta(b'{"content":', sent) if sent else b""
        if self._limiter.cause is not None:
            out += self._finish(_LIMIT_REASON[self._limiter.cause])
        return out

    def _delta(self, key: bytes, text: str) -> bytes:
        if not self.stream:
            return b""
        first = b"" if self._started else self._begin()
        return first + self._choice(key + _json_encoder.encode(text) + b"}", b"null")

    def _finish(self, reason: str) -> bytes:
        """The held-back tail, the finish chunk, the usage chunk when asked, `[DONE]`."""
        tail = "" if self._limiter.stopped else self._limiter.flush()
        out = self._delta(b'{"content":', tail) if tail else b""
        self._finished = True
        self._finish_reason = _LIMIT_REASON[self._limiter.cause] if self._limiter.cause else reason
        if not self.stream:
            return b""
        first = b"" if self._started else self._begin()
        out += first + self._choice(b"{}", _json_encoder.encode(self._finish_reason))
        if self._include_usage:
            usage = _json_encoder.encode(self._final_usage())
            out += self._prefix + b'[],"usage":' + usage + b"}\n\n"
        return out + _DONE_BYTES

    def _final_usage(self) -> _UsageOut:
        if self._usage is not None and not self._limiter.stopped:
            prompt, completion = self._usage.prompt_tokens, self._usage.completion_tokens
        else:
            prompt = estimate_prompt_tokens([m.text() for m in self._request.messages])
            completion = estimate_tokens(self._limiter.sent_text) + estimate_tokens("".join(self._reasoning))
        return _UsageOut(prompt, completion, prompt + completion)


def _conversation_or(conversation_id: str | None, request: ChatRequest) -> str:
    if conversation_id and request.options.keep_chat:
        return conversation_id
    return f"chatcmpl-{request.request_id}"


DIALECT: Final = FunctionDialect(NAME, parse, OpenAIRenderer, error_response)

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
    """`GET /v1/models`: every model id of the table, OpenAI list shape."""
    return 200, dict(_JSON_HEADERS), _MODELS_JSON


def get_model(body: bytes, ctx: RequestContext) -> LocalReply:
    """`GET /v1/models/{model}`: one model, or 404 model_not_found."""
    model = ctx.path_model or ""
    spec = resolve_model(model)
    if spec is None:
        raise ModelNotFound(f"The model `{model}` does not exist.", param="model")
    out = _ModelOut(model.strip(), "model", spec.created, spec.owned_by)
    return 200, dict(_JSON_HEADERS), _json_encoder.encode(out)
