"""`/openapi.json`: an OpenAPI 3.1 document of the app's own router, built once per app.

The paths come from the router (`gateway.docs.routes`), so every registered route appears; what each operation
takes and answers comes from `OPERATIONS`, keyed by (method, path): its tag (one group per operation:
OpenAI, Responses, Anthropic, Gemini, Service, Admin — the docs page groups by `tags[0]`), its schemes, its
request and answer schemas (gateway/openapi_schemas.py: the wire Structs, hand schemas for stream events),
examples and `x-codeSamples` (gateway/openapi_samples.py), `x-stream` where it can stream, and the dialect's
error shape on 400/401/403/404/429/5XX. A registered route missing from `OPERATIONS` is still listed, with
only its summary; tests/test_openapi.py fails on it.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import msgspec
from aiohttp import web

from adapters import anthropic, gemini, openai
from gateway import docs
from gateway import openapi_samples as samples
from gateway.openapi_schemas import COMPONENTS, MODEL_FLAGS, Schema, one_of, ref
from gateway.routes import GEMINI_PREFIXES

JSON: Final = "application/json"
SSE: Final = "text/event-stream"
TEXT: Final = "text/plain"

TAGS: Final = (
    ("OpenAI", "OpenAI Chat Completions and model list: point the `openai` SDK at `$BASE/v1`."),
    (
        "Responses",
        "OpenAI Responses API (Codex CLI, the newer `openai` SDK surface) and its stored responses.",
    ),
    ("Anthropic", "Anthropic Messages: point the `anthropic` SDK at `$BASE`."),
    ("Gemini", "Gemini `generateContent` on `/v1beta` and on google-genai's `/v1` prefix."),
    ("Service", "Health, readiness, metrics and this documentation."),
    ("Admin", "The account pool, client keys and request log (forwarded to the token service; admin key)."),
)
SECURITY_SCHEMES: Final = {
    "bearer": {
        "type": "http",
        "scheme": "bearer",
        "description": "A client key (GATEWAY_API_KEYS or a managed key), or your own Kimi token(s) "
        "`Bearer T1,T2` (pass-through). Any value while no client key is configured.",
    },
    "anthropicKey": {
        "type": "apiKey",
        "in": "header",
        "name": "x-api-key",
        "description": "Anthropic style.",
    },
    "googApiKey": {
        "type": "apiKey",
        "in": "header",
        "name": "x-goog-api-key",
        "description": "Gemini style.",
    },
    "googKeyQuery": {
        "type": "apiKey",
        "in": "query",
        "name": "key",
        "description": "Gemini style, in the URL.",
    },
    "adminBearer": {"type": "http", "scheme": "bearer", "description": "ADMIN_API_KEY."},
    "adminKey": {"type": "apiKey", "in": "header", "name": "X-Admin-Key", "description": "ADMIN_API_KEY."},
}
_ERROR_SCHEMA: Final = {
    "OpenAI": "OpenAIError",
    "Responses": "OpenAIError",
    "Anthropic": "AnthropicError",
    "Gemini": "GeminiError",
    "Admin": "AdminError",
}
_ERROR_EXAMPLES: Final = {
    "OpenAI": samples.dialect_errors(openai.DIALECT),
    "Responses": samples.dialect_errors(openai.DIALECT),
    "Anthropic": samples.dialect_errors(anthropic.DIALECT),
    "Gemini": samples.dialect_errors(gemini.DIALECT),
    "Admin": samples.admin_errors(),
}
_STATUS_TEXT: Final = {
    "400": "Invalid request (the message names the field in `param`)",
    "401": "Missing or wrong key",
    "403": "The key may not do this (its models, revoked, expired)",
    "404": "No such model, response, account or key",
    "429": "Rate limited (a key's limit, or the queue is full); `Retry-After` says when to retry",
    "5XX": "Kimi or the gateway failed (502 upstream, 503 unavailable, 504 timeout)",
}
#: The header (or query) the curl samples send the key in, by tag.
_CURL_AUTH: Final = {
    "OpenAI": ("Authorization: Bearer $KEY",),
    "Responses": ("Authorization: Bearer $KEY",),
    "Anthropic": ("x-api-key: $KEY", "anthropic-version: 2023-06-01"),
    "Gemini": ("x-goog-api-key: $KEY",),
    "Admin": ("Authorization: Bearer $ADMIN_KEY",),
    "Service": (),
}
_PATH_EXAMPLES: Final = {
    "model": "kimi",
    "response_id": "$RESPONSE_ID",
    "account_id": "$ACCOUNT_ID",
    "key_id": "$KEY_ID",
}
_PARAMETER: Final = re.compile(r"\{(\w+)\}")
_JOB_HEADERS: Final = (
    ("x-request-id", "RequestId"),
    ("x-upstream-kind", "UpstreamKind"),
    ("x-ratelimit-limit", "RateLimitLimit"),
    ("x-ratelimit-remaining", "RateLimitRemaining"),
    ("x-ratelimit-reset", "RateLimitReset"),
)


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
        ("GET", "/admin"): Op("Admin", _HTML, _ADMIN_AUTH, description="The operator's console page."),
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


# ---------------------------------------------------------------- assembly


def build(app: web.Application) -> dict[str, Any]:
    """The OpenAPI document of every route registered on `app`."""
    paths: dict[str, dict[str, Any]] = {}
    for method, path, summary in docs.routes(app):
        paths.setdefault(path, {})[method.lower()] = operation(method, path, summary)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Kimi gateway",
            "version": "0.1.0",
            "description": _INFO,
        },
        "servers": [{"url": "/", "description": "This gateway"}],
        "tags": [{"name": name, "description": text} for name, text in TAGS],
        "paths": paths,
        "components": {
            "schemas": COMPONENTS,
            "securitySchemes": SECURITY_SCHEMES,
            "headers": _HEADERS,
        },
    }


_INFO: Final = (
    "Kimi's web chat as OpenAI Chat Completions, OpenAI Responses, Anthropic Messages and Gemini APIs. "
    "Point an official SDK's base URL at this gateway. Every operation lists the key styles it accepts; "
    "while no client key is configured (GATEWAY_API_KEYS unset, no managed keys) the gateway serves its "
    "account pool to any caller, and a bearer made of Kimi tokens is served with those tokens (pass-through). "
    f"Code samples use `BASE={samples.BASE_URL}`."
)
_HEADERS: Final = {
    "RequestId": {
        "description": "The request's id, in the logs and the request log",
        "schema": {"type": "string"},
    },
    "UpstreamKind": {
        "description": "The kind of account that served it (e.g. kimi_auth)",
        "schema": {"type": "string"},
    },
    "RetryAfter": {"description": "Seconds to wait before retrying", "schema": {"type": "integer"}},
    "RateLimitLimit": {"description": "A managed key's tightest limit", "schema": {"type": "integer"}},
    "RateLimitRemaining": {"description": "What is left of it", "schema": {"type": "integer"}},
    "RateLimitReset": {"description": "Seconds until it resets", "schema": {"type": "integer"}},
}


def operation(method: str, path: str, summary: str) -> dict[str, Any]:
    """One operation object; a route without an `OPERATIONS` row gets its summary and parameters only."""
    out: dict[str, Any] = {"summary": summary, "operationId": _operation_id(method, path)}
    parameters = [_path_parameter(name) for name in _PARAMETER.findall(path)]
    op = OPERATIONS.get((method, path))
    if op is None:
        out["tags"] = ["Admin" if path.startswith(("/admin", "/auth")) else "Service"]
        out["responses"] = {"200": {"description": "OK"}}
        if parameters:
            out["parameters"] = parameters
        return out
    parameters += list(op.query)
    if parameters:
        out["parameters"] = parameters
    out["tags"] = [op.tag]
    if op.description:
        out["description"] = op.description
    out["security"] = [{scheme: []} for scheme in op.security]
    if op.request is not None:
        out["requestBody"] = {
            "required": True,
            "content": {JSON: {"schema": ref(op.request), "example": op.example}},
        }
    out["responses"] = _responses(op)
    if op.stream:
        out["x-stream"] = True
    out["x-codeSamples"] = _code_samples(method, path, op)
    return out


def _responses(op: Op) -> dict[str, Any]:
    content = {}
    for content_type, (schema, example) in op.ok.items():
        content[content_type] = {"schema": schema} | ({} if example is None else {"example": example})
    ok: dict[str, Any] = {"description": "OK", "content": content}
    if op.job:
        ok["headers"] = {
            name: {"$ref": f"#/components/headers/{component}"} for name, component in _JOB_HEADERS
        }
    responses: dict[str, Any] = {op.status: ok, **op.extra}
    errors = op.errors or ((_ERROR_SCHEMA[op.tag],) if op.tag in _ERROR_SCHEMA else ())
    for status, text in _STATUS_TEXT.items() if errors else ():
        schema = ref(errors[0]) if len(errors) == 1 else one_of(*errors)
        error: dict[str, Any] = {
            "description": text,
            "content": {JSON: {"schema": schema, "example": _ERROR_EXAMPLES[op.tag][status]}},
        }
        if status == "429":
            error["headers"] = {"Retry-After": {"$ref": "#/components/headers/RetryAfter"}}
        responses[status] = error
    return responses


def _code_samples(method: str, path: str, op: Op) -> list[dict[str, str]]:
    url = _PARAMETER.sub(lambda m: _PATH_EXAMPLES.get(m.group(1), f"${m.group(1).upper()}"), path)
    auth = _CURL_AUTH[op.tag] if op.security else ()
    if path == "/metrics":
        auth = ("Authorization: Bearer $ADMIN_KEY",)
    admin = op.tag == "Admin" or path == "/metrics"
    out = [
        {"lang": "curl", "label": "curl", "source": samples.curl(method, url, auth, op.example, admin=admin)}
    ]
    if op.stream:
        body = {**op.example, "stream": True} if "stream" in op.example else op.example
        stream_url = f"{url}?alt=sse" if op.tag == "Gemini" else url
        source = samples.curl(method, stream_url, auth, body, stream=True)
        out.append({"lang": "curl", "label": "curl (stream)", "source": source})
    kind, _, version = op.sdk.partition(":")
    return out + samples.python_samples(kind, version or "v1beta")


def _operation_id(method: str, path: str) -> str:
    return method.lower() + re.sub(r"[^0-9A-Za-z]+", "_", path).rstrip("_")


def _path_parameter(name: str) -> dict[str, Any]:
    parameter: dict[str, Any] = {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
    if name == "model":
        parameter["example"] = "kimi"
        parameter["description"] = MODEL_FLAGS
    return parameter


# ---------------------------------------------------------------- serving

_encoder: Final = msgspec.json.Encoder()


async def on_startup(app: web.Application) -> None:
    """Build the document once per app, its routes all registered, for `gateway.docs.openapi` to serve."""
    body = _encoder.encode(build(app))
    app[docs.OPENAPI_DOCUMENT] = (body, f'"{hashlib.sha256(body).hexdigest()[:32]}"')
