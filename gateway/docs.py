"""`GET /` (a docs page) and `GET /openapi.json` (a small hand-written OpenAPI document), both offline."""

from __future__ import annotations

import html
from typing import Any

import msgspec
from aiohttp import web

from shared.models import listed_models

_ROUTES: tuple[tuple[str, str, str], ...] = (
    ("POST", "/v1/chat/completions", "OpenAI Chat Completions (stream and non-stream)"),
    ("GET", "/v1/models", "Every model id, OpenAI list shape"),
    ("GET", "/v1/models/{model}", "One model"),
    ("POST", "/v1/messages", "Anthropic Messages"),
    ("POST", "/v1/messages/count_tokens", "Anthropic token count (estimate)"),
    ("GET", "/v1beta/models", "Gemini model list"),
    ("POST", "/v1beta/models/{model}:generateContent", "Gemini"),
    ("POST", "/v1beta/models/{model}:streamGenerateContent", "Gemini streaming (alt=sse for SSE)"),
    ("POST", "/v1beta/models/{model}:countTokens", "Gemini token count (estimate)"),
    ("GET", "/ping", "pong"),
    ("GET", "/healthz", "The process answers"),
    ("GET", "/readyz", "503 while Redis is unreachable or no worker has a fresh heartbeat"),
    ("GET", "/metrics", "Prometheus exposition"),
    ("POST", "/token/check", "kimi-free-api: is a token live"),
    ("POST", "/auth/save", "Save a kimi-auth or refresh_token account (admin)"),
    ("GET", "/admin/accounts", "The account pool (admin)"),
)

_OPENAI_EXTENSIONS = (
    'Extensions kept from kimi-free-api: `use_search` (bool), `conversation_id` ("none" keeps the chat and '
    "returns its id as the response id; later turns pass that id and send only the new turn), model-name "
    "flags `-search`, `-silent`, `-research`, `-k1`, `-math`, `-thinking` on `kimi`."
)


def _openapi() -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for method, path, summary in _ROUTES:
        paths.setdefault(path, {})[method.lower()] = {
            "summary": summary,
            "responses": {"200": {"description": "OK"}},
        }
    paths["/v1/chat/completions"]["post"]["description"] = _OPENAI_EXTENSIONS
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Kimi gateway",
            "version": "0.1.0",
            "description": "Kimi's web chat as OpenAI, Anthropic and Gemini APIs.",
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}],
        "paths": paths,
    }


def _index() -> str:
    rows = "\n".join(
        f"<tr><td>{m}</td><td><code>{html.escape(p)}</code></td><td>{html.escape(s)}</td></tr>"
        for m, p, s in _ROUTES
    )
    models = ", ".join(f"<code>{html.escape(s.id)}</code>" for s in listed_models())
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Kimi gateway</title>
<style>body{{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem}}
td{{padding:.2rem .6rem;vertical-align:top}}code{{background:#f3f3f3;padding:0 .2rem}}</style></head>
<body><h1>Kimi gateway</h1>
<p>Kimi's web chat as OpenAI, Anthropic and Gemini APIs. Point an SDK's base URL here
(OpenAI: <code>/v1</code>). The machine-readable description is <a href="/openapi.json">/openapi.json</a>.</p>
<h2>Routes</h2><table>{rows}</table>
<h2>OpenAI extensions</h2><p>{html.escape(_OPENAI_EXTENSIONS)}</p>
<h2>Models</h2><p>{models}</p>
</body></html>
"""


_OPENAPI_JSON = msgspec.json.encode(_openapi())
_INDEX_HTML = _index()


async def openapi(request: web.Request) -> web.Response:
    return web.Response(body=_OPENAPI_JSON, content_type="application/json")


async def index(request: web.Request) -> web.Response:
    return web.Response(text=_INDEX_HTML, content_type="text/html")
