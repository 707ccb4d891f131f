"""The operations of `/openapi.json`, one row per (method, path) of the app's router: what each takes and answers
beyond its method, path and summary (its tag, schemes, schemas, examples, SDK sample, whether it streams).
A new route adds its row here; tests/test_openapi.py fails on a registered route without one."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from gateway import docs
from gateway import openapi_samples as samples
from gateway.openapi_schemas import MODEL_FLAGS, Schema, ref
from gateway.routes import GEMINI_PREFIXES

JSON: Final = "application/json"
SSE: Final = "text/event-stream"
TEXT: Final = "text/plain"


@dataclass(frozen=True, slots=True)
class Op:
    """What one operation takes and answers, beyond the router's method, path and summary."""

    tag: str
    #: content type → (schema, example) of the success answer.
    ok: Mapping[str, tuple[Schema, Any]]
    security: tuple[str, ...] = ()
    #: The request body's component and a working example, for routes that take a body.
    request: str | None = None
    example: Any = None
    #: The body's `stream: true` (or the route itself) makes it stream.
    stream: bool = False
    #: `openapi_samples.python_samples` kind: the official SDK's call.
    sdk: str = ""
    description: str = ""
    query: tuple[Schema, ...] = ()
    status: str = "200"
    #: The error shapes (component names) when not the tag's own one.
    errors: tuple[str, ...] = ()
    #: A chat route (a job for a worker): its answers carry the request id, the account kind, rate headers.
    job: bool = False
    #: Further responses (e.g. /readyz's 503).
    extra: Mapping[str, Any] = field(default_factory=dict)


def _q(name: str, description: str, schema: Schema | None = None) -> Schema:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": description,
        "schema": schema or {},
    }


def _json(component: str, example: Any) -> dict[str, tuple[Schema, Any]]:
    return {JSON: (ref(component), example)}


_OPENAI_AUTH: Final = ("bearer",)
_ANTHROPIC_AUTH: Final = ("anthropicKey", "bearer")
_GEMINI_AUTH: Final = ("googApiKey", "googKeyQuery", "bearer")
_ADMIN_AUTH: Final = ("adminBearer", "adminKey")
_ORDER: Final = _q("order", "`desc` (default, newest first) or `asc`", {"enum": ["asc", "desc"]})
_ALT: Final = _q("alt", "`sse`: Server-Sent Events; otherwise one JSON array of chunks", {"enum": ["sse"]})
_STREAM_NOTE: Final = (
    "With `stream: true` the answer is `text/event-stream`; its `data:` payloads are described by the "
    "`text/event-stream` schema (one of its event types each). An error before the first byte keeps its HTTP "
    "status; after it, it arrives in band."
)


def _chat_ops() -> dict[tuple[str, str], Op]:
    ops = {
        ("POST", "/v1/chat/completions"): Op(
            "OpenAI",
            {
                JSON: (ref("ChatCompletion"), samples.CHAT_OUT),
                SSE: (ref("ChatCompletionStreamEvent"), samples.CHAT_SSE),
            },
            _OPENAI_AUTH,
            "ChatCompletionRequest",
            samples.CHAT,
            stream=True,
            sdk="chat",
            job=True,
            description=f"{docs.OPENAI_EXTENSIONS}\n\n{_STREAM_NOTE}",
        ),
        ("POST", "/v1/messages"): Op(
            "Anthropic",
            {
                JSON: (ref("MessagesResponse"), samples.MESSAGES_OUT),
                SSE: (ref("MessagesStreamEvent"), samples.MESSAGES_SSE),
            },
            _ANTHROPIC_AUTH,
            "MessagesRequest",
            samples.MESSAGES,
            stream=True,
            sdk="messages",
            job=True,
            description=f"`anthropic-version` is accepted and not required. {MODEL_FLAGS}\n\n{_STREAM_NOTE}",
        ),
        ("POST", "/v1/responses"): Op(
            "Responses",
            {
                JSON: (ref("Response"), samples.RESPONSE_OUT),
                SSE: (ref("ResponsesStreamEvent"), samples.RESPONSES_SSE),
            },
            _OPENAI_AUTH,
            "ResponsesRequest",
            samples.RESPONSES,
            stream=True,
            sdk="responses",
            job=True,
            description="Stored unless `store: false`; `previous_response_id` continues a stored one. "
            f"{MODEL_FLAGS}\n\n{_STREAM_NOTE}",
        ),
    }
    for prefix in GEMINI_PREFIXES:
        version = "v1" if prefix.startswith("/v1/") else "v1beta"
        ops[("POST", f"{prefix}:generateContent")] = Op(
            "Gemini",
            _json("GenerateContentResponse", samples.GEMINI_OUT),
            _GEMINI_AUTH,
            "GenerateContentRequest",
            samples.GEMINI,
            sdk=f"generate:{version}",
            job=True,
            description=MODEL_FLAGS.replace("A model id", "`{model}`: a model id"),
        )
        ops[("POST", f"{prefix}:streamGenerateContent")] = Op(
            "Gemini",
            {
                SSE: (ref("GenerateContentStreamEvent"), samples.GEMINI_SSE),
                JSON: (ref("GenerateContentStreamArray"), [samples.GEMINI_OUT]),
            },
            _GEMINI_AUTH,
            "GenerateContentRequest",
            samples.GEMINI,
            stream=True,
            sdk=f"stream_generate:{version}",
            job=True,
            query=(_ALT,),
            description="Always streams: with `alt=sse` as Server-Sent Events, otherwise as a JSON array "
            "written chunk by chunk. An error after the first byte arrives in band.",
        )
        ops[("POST", f"{prefix}:countTokens")] = Op(
            "Gemini",
            _json("GeminiTokenCount", samples.GEMINI_COUNT_OUT),
            _GEMINI_AUTH,
            "GeminiCountTokensRequest",
            samples.GEMINI_COUNT,
            sdk=f"gemini_count:{version}",
            description="An estimate: Kimi has no tokenizer endpoint. `contents` or `generateContentRequest`.",
        )
    return ops


def _local_ops() -> dict[tuple[str, str], Op]:
    gemini_caller = (
        "A caller that authenticates the Gemini way (`x-goog-api-key`, `?key=`) gets Gemini's shape."
    )
    return {
        ("GET", "/v1/models"): Op(
            "OpenAI",
            {JSON: ({"oneOf": [ref("ModelList"), ref("GeminiModelList")]}, samples.MODELS_OUT)},
            ("bearer", "googApiKey", "googKeyQuery"),
            sdk="models",
            description=gemini_caller,
            errors=("OpenAIError", "GeminiError"),
        ),
        ("GET", "/v1/models/{model}"): Op(
            "OpenAI",
            {JSON: ({"oneOf": [ref("Model"), ref("GeminiModel")]}, samples.MODEL_OUT)},
            ("bearer", "googApiKey", "googKeyQuery"),
            sdk="model",
            description=gemini_caller,
            errors=("OpenAIError", "GeminiError"),
        ),
        ("POST", "/v1/messages/count_tokens"): Op(
            "Anthropic",
            _json("AnthropicTokenCount", samples.MESSAGES_COUNT_OUT),
            _ANTHROPIC_AUTH,
            "AnthropicCountTokensRequest",
            samples.MESSAGES_COUNT,
            sdk="count_tokens",
            description="An estimate: Kimi has no tokenizer endpoint.",
        ),
        ("GET", "/v1beta/models"): Op(
            "Gemini", _json("GeminiModelList", samples.GEMINI_MODELS_OUT), _GEMINI_AUTH, sdk="gemini_models"
        ),
        ("GET", "/v1beta/models/{model}"): Op(
            "Gemini", _json("GeminiModel", samples.GEMINI_MODEL_OUT), _GEMINI_AUTH, sdk="gemini_model"
        ),
        ("GET", "/v1/responses/{response_id}"): Op(
            "Responses", _json("Response", samples.RESPONSE_OUT), _OPENAI_AUTH, sdk="response_get"
        ),
        ("DELETE", "/v1/responses/{response_id}"): Op(
            "Responses",
            _json("ResponseDeleted", samples.RESPONSE_DELETED),
            _OPENAI_AUTH,
            sdk="response_delete",
        ),
        ("GET", "/v1/responses/{response_id}/input_items"): Op(
            "Responses",
            _json("ResponseInputItemList", samples.INPUT_ITEMS),
            _OPENAI_AUTH,
            sdk="input_items",
            query=(_ORDER,),
        ),
    }


_HTML: Final = {"text/html": ({"type": "string"}, "<!doctype html>…")}


def _service_ops() -> dict[tuple[str, str], Op]:
    metrics_401 = {
        "description": "Not loopback, not METRICS_ALLOW, no admin key",
        "content": {TEXT: {"schema": {"type": "string"}}},
    }
    return {
        ("GET", "/ping"): Op("Service", {TEXT: ({"const": "pong"}, "pong")}),
        ("GET", "/healthz"): Op("Service", _json("Health", {"status": "ok"})),
        ("GET", "/readyz"): Op(
            "Service",
            _json("Readiness", {"status": "ready", "redis": True, "live_workers": 2}),
            extra={
                "503": {
                    "description": "Redis is unreachable or no worker has a fresh heartbeat",
                    "content": {
                        JSON: {
                            "schema": ref("Readiness"),
                            "example": {"status": "no_worker", "redis": True, "live_workers": 0},
                        }
                    },
                }
            },
        ),
        ("GET", "/metrics"): Op(
            "Service",
            {
                TEXT: (
                    {"type": "string", "description": "Prometheus text exposition format"},
                    "kimi_gateway_requests_total{…} 3\n",
                )
            },
            ("adminBearer",),
            description="Loopback callers, METRICS_ALLOW networks, or the admin key (Authorization: Bearer).",
            extra={"401": metrics_401},
        ),
        ("GET", "/"): Op("Service", _HTML),
        # Pages of the other parts: described here so that they are complete once registered.
        ("GET", "/playground"): Op("Service", _HTML, description="A streaming chat page; works offline."),
        ("GET", "/favicon.ico"): Op(
            "Service", {"image/svg+xml": ({"type": "string"}, "<svg …>")}, description="The pages' icon."
        ),
        ("GET", "/static/{path}"): Op(
            "Service",
            {"text/javascript": ({"type": "string"}, "…"), "text/css": ({"type": "string"}, "…")},
            description="The browser pages' scripts, styles and icons (files of gateway/static/ by path; "
            "anything else is 404).",
        ),
        ("GET", "/openapi.json"): Op(
            "Service", {JSON: ({"type": "object", "description": "This document (OpenAPI 3.1)"}, None)}
        ),
    }


def _admin(answer: str, request: str | None = None, example: Any = None, **more: Any) -> Op:
    return Op("Admin", _json(answer, samples.ADMIN_OUT[answer]), _ADMIN_AUTH, request, example, **more)


def _admin_ops() -> dict[tuple[str, str], Op]:
    key = "/admin/keys/{key_id}"
    account = "/admin/accounts/{account_id}"
    requests_query = (
        _q("limit", "Page size, 1…1000 (50)", {"type": "integer", "minimum": 1, "maximum": 1000}),
        _q("before", "The `next` of the previous page", {"type": "string"}),
        _q("key", "A key's name", {"type": "string"}),
        _q("status", "An HTTP status", {"type": "integer"}),
        _q("model", "A model id", {"type": "string"}),
    )
    return {
        ("POST", "/auth/extract"): _admin("AdminExtractResult", "AdminExtractBody", samples.EXTRACT),
        ("POST", "/auth/save"): _admin("AdminSaveResult", "AdminSaveBody", samples.SAVE),
        ("GET", "/auth/status"): _admin("AdminAuthStatus"),
        ("POST", "/auth/clear"): _admin("AdminClearResult"),
        ("GET", "/auth/clear"): _admin(
            "AdminClearResult", description="Answers 405: use POST (kimi-free-api-fix shape)."
        ),
        ("POST", "/token/check"): Op(
            "Admin",
            _json("AdminTokenLive", samples.ADMIN_OUT["AdminTokenLive"]),
            (),
            "AdminCheckBody",
            samples.CHECK,
            description="kimi-free-api compatible; not admin-protected.",
        ),
        ("GET", "/admin"): Op(
            "Admin",
            _HTML,
            description="The operator's console page: it holds no data and calls the admin routes below with"
            " the key typed into it.",
        ),
        ("GET", "/admin/system"): _admin("AdminSystem"),
        ("GET", "/admin/accounts"): _admin("AdminAccountList"),
        ("POST", "/admin/accounts"): _admin(
            "AdminAddResult",
            "AdminAddBody",
            samples.ADD,
            description="`token`, `tokens`, or `text` (one per line; `#` comments skipped); kimi-auth JWTs, "
            "refresh_tokens or official API keys.",
        ),
        ("POST", "/admin/accounts/probe"): _admin("AdminProbeAllResult"),
        ("DELETE", account): _admin("AdminSuccess"),
        ("POST", f"{account}/enable"): _admin("AdminAccountResult"),
        ("POST", f"{account}/disable"): _admin("AdminAccountResult"),
        ("POST", f"{account}/probe"): _admin("AdminProbeResult"),
        ("POST", "/admin/keys"): _admin(
            "AdminKeySecret", "AdminKeyCreateBody", samples.KEY_CREATE, status="201"
        ),
        ("GET", "/admin/keys"): _admin("AdminKeyList"),
        ("GET", key): _admin("AdminKey"),
        ("PATCH", key): _admin("AdminKeyResult", "AdminKeyPatchBody", samples.KEY_PATCH),
        ("DELETE", key): _admin("AdminSuccess"),
        ("POST", f"{key}/revoke"): _admin("AdminKeyResult"),
        ("POST", f"{key}/rotate"): _admin("AdminKeySecret"),
        ("GET", f"{key}/usage"): _admin(
            "AdminKeyUsage",
            query=(_q("days", "UTC days, 1…35 (7)", {"type": "integer", "minimum": 1, "maximum": 35}),),
        ),
        ("GET", "/admin/requests"): _admin("AdminRequestLog", query=requests_query),
    }


OPERATIONS: Final[dict[tuple[str, str], Op]] = {
    **_chat_ops(),
    **_local_ops(),
    **_service_ops(),
    **_admin_ops(),
}
