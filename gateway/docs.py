"""`GET /` (a docs page) and `GET /openapi.json` (the OpenAPI document gateway/openapi.py builds), both from the
app's own router, so every registered route appears; summaries come from the route table (`ROUTE_SUMMARIES`,
set by `create_app`) and, for the token service's routes, from `_SUMMARIES`."""

from __future__ import annotations

import html

from aiohttp import web

from shared.models import listed_models

#: The summaries of the gateway's route table (gateway/routes.py), keyed by (method, path).
ROUTE_SUMMARIES: web.AppKey[dict[tuple[str, str], str]] = web.AppKey("route_summaries")

#: One line per (method, path) of the routes `token_service.admin.add_admin_routes` registers; the routes
#: themselves come from the app's router, so none can be left out.
_SUMMARIES: dict[tuple[str, str], str] = {
    ("POST", "/token/check"): "kimi-free-api: is a token live",
    ("POST", "/auth/extract"): "Find the kimi-auth token in a cookie string (admin)",
    ("POST", "/auth/save"): "Save a kimi-auth or refresh_token account (admin)",
    ("GET", "/auth/status"): "Every saved account and its state (admin)",
    ("POST", "/auth/clear"): "Remove every saved account (admin)",
    ("GET", "/auth/clear"): "Remove every saved account (admin)",
    ("GET", "/admin/accounts"): "The account pool (admin)",
    ("POST", "/admin/accounts"): "Add accounts (admin)",
    ("POST", "/admin/accounts/probe"): "Probe every account (admin)",
    ("DELETE", "/admin/accounts/{account_id}"): "Remove one account (admin)",
    ("POST", "/admin/accounts/{account_id}/enable"): "Enable one account (admin)",
    ("POST", "/admin/accounts/{account_id}/disable"): "Disable one account (admin)",
    ("POST", "/admin/accounts/{account_id}/probe"): "Probe one account (admin)",
    ("POST", "/admin/keys"): "Create a client key; answers its secret once (admin)",
    ("GET", "/admin/keys"): "The client keys (admin)",
    ("GET", "/admin/keys/{key_id}"): "One client key (admin)",
    ("PATCH", "/admin/keys/{key_id}"): "Change a client key's name, models, limits or expiry (admin)",
    ("DELETE", "/admin/keys/{key_id}"): "Delete a client key (admin)",
    ("POST", "/admin/keys/{key_id}/revoke"): "Revoke a client key at once (admin)",
    ("POST", "/admin/keys/{key_id}/rotate"): "A new secret for a client key; the old one stops (admin)",
    ("GET", "/admin/keys/{key_id}/usage"): "A client key's usage per day and model (admin)",
    ("GET", "/admin/requests"): "The request log, newest first; filters: key, status, model (admin)",
    ("GET", "/admin/system"): "Job queue depth, workers' heartbeats, accounts by state and kind (admin)",
}


def routes(app: web.Application) -> list[tuple[str, str, str]]:
    """(method, path template, summary) of every route registered on `app`; HEAD twins are left out."""
    table = app[ROUTE_SUMMARIES]
    summaries = {**_SUMMARIES, **table}
    out: list[tuple[str, str, str]] = []
    for route in app.router.routes():
        if route.resource is None or route.method in ("HEAD", "*"):
            continue
        path = route.resource.canonical
        out.append((route.method, path, summaries.get((route.method, path), "")))
    return out


_OPENAI_EXTENSIONS = (
    'Extensions kept from kimi-free-api: `use_search` (bool), `conversation_id` ("none" keeps the chat and '
    "returns its id as the response id; later turns pass that id and send only the new turn), model-name "
    "flags `-search`, `-silent`, `-research`, `-k1`, `-math`, `-thinking` on `kimi`."
)
OPENAI_EXTENSIONS = _OPENAI_EXTENSIONS
#: The encoded `/openapi.json` and its ETag, set at startup by `gateway.openapi.on_startup`.
OPENAPI_DOCUMENT: web.AppKey[tuple[bytes, str]] = web.AppKey("openapi_document", tuple)


def _index(table: list[tuple[str, str, str]]) -> str:
    rows = "\n".join(
        f"<tr><td>{m}</td><td><code>{html.escape(p)}</code></td><td>{html.escape(s)}</td></tr>"
        for m, p, s in table
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


async def openapi(request: web.Request) -> web.Response:
    """The document `gateway/openapi.py` built at startup, with its ETag: a matching `If-None-Match` gets 304."""
    body, etag = request.app[OPENAPI_DOCUMENT]
    headers = {"ETag": etag, "Cache-Control": "no-cache"}
    if etag in request.headers.get("If-None-Match", ""):
        return web.Response(status=304, headers=headers)
    return web.Response(body=body, content_type="application/json", headers=headers)


async def index(request: web.Request) -> web.Response:
    return web.Response(text=_index(routes(request.app)), content_type="text/html")
