"""`GET /openapi.json` (the OpenAPI document gateway/openapi.py builds) and the route table it is built from:
the app's own router, so every registered route appears; summaries come from the route table
(`ROUTE_SUMMARIES`, set by `create_app`) and, for the token service's routes, from `_SUMMARIES`. The page at `/`
(gateway/pages.py) draws itself from the document in the browser."""

from __future__ import annotations

from aiohttp import web

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


OPENAI_EXTENSIONS = (
    'Extensions kept from kimi-free-api: `use_search` (bool), `conversation_id` ("none" keeps the chat and '
    "returns its id as the response id; later turns pass that id and send only the new turn), model-name "
    "flags `-search`, `-silent`, `-research`, `-k1`, `-math`, `-thinking` on `kimi`."
)
#: The encoded `/openapi.json` and its ETag, set at startup by `gateway.openapi.on_startup`.
OPENAPI_DOCUMENT: web.AppKey[tuple[bytes, str]] = web.AppKey("openapi_document", tuple)


async def openapi(request: web.Request) -> web.Response:
    """The document `gateway/openapi.py` built at startup, with its ETag: a matching `If-None-Match` gets 304."""
    body, etag = request.app[OPENAPI_DOCUMENT]
    headers = {"ETag": etag, "Cache-Control": "no-cache"}
    if etag in request.headers.get("If-None-Match", ""):
        return web.Response(status=304, headers=headers)
    return web.Response(body=body, content_type="application/json", headers=headers)
