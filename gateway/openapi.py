"""`/openapi.json`: an OpenAPI 3.1 document of the app's own router, built once per app.

The paths come from the router (`gateway.docs.routes`), so every registered route appears; what each
operation takes and answers comes from its row of `gateway/openapi_operations.py`: its tag (one group per
operation: OpenAI, Responses, Anthropic, Gemini, Service, Admin — the docs page groups by `tags[0]`), its
schemes, its request and answer schemas (gateway/openapi_schemas.py: the wire Structs, hand schemas for
stream events), examples and `x-codeSamples` (gateway/openapi_samples.py), `x-stream` where it can stream,
and the dialect's error shape on 400/401/403/404/429/5XX. A registered route without a row is still listed,
with only its summary; tests/test_openapi.py fails on it.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any, Final

import msgspec
from aiohttp import web

from adapters import anthropic, gemini, openai
from gateway import docs
from gateway import openapi_samples as samples
from gateway.openapi_operations import JSON, OPERATIONS, Op
from gateway.openapi_schemas import COMPONENTS, MODEL_FLAGS, one_of, ref

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
