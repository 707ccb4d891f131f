"""CORS for the public API routes, set by CORS_ALLOW_ORIGINS (docs/SECURITY.md, "Browsers and CORS").

Public means the dialect routes under `/v1/` and `/v1beta/` (chat, models, count_tokens, stored responses).
For an allowed `Origin` there:
- a preflight (`OPTIONS` with `Access-Control-Request-Method`) answers 204 with the allowed origin, methods,
  the requested headers (when each is a valid header name) and a max age;
- every response, errors and SSE streams included, carries `Access-Control-Allow-Origin` and exposes the
  headers a client reads (request id, rate limits, Retry-After, the serving account's kind). It is added in
  `on_response_prepare`, so a stream's headers have it before its first byte.
Any other preflight (a disallowed origin, the admin routes, `/metrics`) is refused with a plain 403, and
those responses carry no CORS header: the browser keeps their bodies from the page. No credentials mode:
clients authenticate with headers (`Authorization`, `x-api-key`, `x-goog-api-key`), never cookies.
"""

from __future__ import annotations

import re
from typing import Final

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from shared.settings import GatewaySettings

#: The path prefixes of the public API routes; `/admin/*`, `/auth/*`, `/token/check`, `/metrics` are not here.
PUBLIC_PREFIXES: Final = ("/v1/", "/v1beta/")
ALLOW_METHODS: Final = "GET, POST, DELETE, OPTIONS"
#: What a page's script may read besides the CORS-safelisted headers (gateway/middleware.py, relay.py,
#: shared/client_keys.py and Anthropic's `request-id` name them).
EXPOSE_HEADERS: Final = (
    "x-request-id, request-id, x-upstream-kind, retry-after, "
    "x-ratelimit-limit, x-ratelimit-remaining, x-ratelimit-reset"
)
#: Browsers cache a preflight this long (Chromium caps it at 2 h): one preflight per route per 10 minutes.
MAX_AGE_S: Final = 600
#: A comma-separated list of RFC 9110 header names (`token`), as `Access-Control-Request-Headers` sends them.
_HEADER_LIST = re.compile(r"^\s*[!#$%&'*+.^_`|~0-9A-Za-z-]+(\s*,\s*[!#$%&'*+.^_`|~0-9A-Za-z-]+)*\s*$")
_REFUSED: Final = "CORS: this origin may not call this route (CORS_ALLOW_ORIGINS)\n"


class Cors:
    """The policy of one app, built once from its settings: a middleware for preflights and a prepare hook."""

    def __init__(self, settings: GatewaySettings) -> None:
        origins = settings.cors_allow_origins
        self.any_origin = "*" in origins
        self.origins = frozenset(o for o in origins if o != "*")
        self.enabled = self.any_origin or bool(self.origins)

    def allow_origin(self, origin: str | None) -> str | None:
        """The `Access-Control-Allow-Origin` value for `origin`, or None when it is not allowed."""
        if origin is None or not self.enabled:
            return None
        if self.any_origin:
            return "*"
        return origin if origin in self.origins else None

    def middleware(self) -> Middleware:
        @web.middleware
        async def cors(request: web.Request, handler: Handler) -> web.StreamResponse:
            if _is_preflight(request):
                return self.preflight(request)
            return await handler(request)

        return cors

    def preflight(self, request: web.Request) -> web.Response:
        allowed = self.allow_origin(request.headers.get("Origin")) if is_public(request.path) else None
        requested = request.headers.get("Access-Control-Request-Headers", "")
        if allowed is None or (requested and not _HEADER_LIST.match(requested)):
            return web.Response(status=403, text=_REFUSED)
        headers = {
            "Access-Control-Allow-Origin": allowed,
            "Access-Control-Allow-Methods": ALLOW_METHODS,
            "Access-Control-Max-Age": str(MAX_AGE_S),
            "Vary": "Origin",
        }
        if requested:
            headers["Access-Control-Allow-Headers"] = ", ".join(h.strip() for h in requested.split(","))
        return web.Response(status=204, headers=headers)

    async def on_prepare(self, request: web.Request, response: web.StreamResponse) -> None:
        """`on_response_prepare`: the CORS headers of an actual response on a public route."""
        if not self.enabled or not is_public(request.path) or _is_preflight(request):
            return
        response.headers.add("Vary", "Origin")
        allowed = self.allow_origin(request.headers.get("Origin"))
        if allowed is not None:
            response.headers["Access-Control-Allow-Origin"] = allowed
            response.headers["Access-Control-Expose-Headers"] = EXPOSE_HEADERS


def is_public(path: str) -> bool:
    return path.startswith(PUBLIC_PREFIXES)


def _is_preflight(request: web.Request) -> bool:
    return (
        request.method == "OPTIONS"
        and "Origin" in request.headers
        and "Access-Control-Request-Method" in request.headers
    )
