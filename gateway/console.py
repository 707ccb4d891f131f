"""`GET /admin`: the operator's console, a static page (gateway/static/console/) that is a client of the JSON
admin routes and nothing else; it holds no data, so it is served to anyone and every call it makes is checked
by the token service (the admin key the operator types, or the loopback rule).

    GET /admin                     index.html
    GET /admin/console/{file}      console.js, console.css, icon.svg (the folder's files, by name)

The folder is read once, at the first request, into a table of name → bytes; a request names a key of that
table or gets 404, so no path reaches the file system (`..`, `%2F` or any other spelling included). Every
answer carries a Content-Security-Policy of 'self' only (the page has no inline script or style), nosniff,
`X-Frame-Options: DENY` and an ETag; `If-None-Match` gets 304. The asset prefix is not one of the admin
routes the gateway forwards (token_service/admin.py `ADMIN_ROUTES`: `/admin/accounts…`, `/admin/keys…`,
`/admin/requests`, `/admin/system`).
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from aiohttp import web

#: Where the console's files live (packaged with the gateway: pyproject's package-data).
STATIC_DIR: Final = Path(__file__).resolve().parent / "static" / "console"
INDEX = "index.html"
CONTENT_TYPES: Final = {
    ".html": "text/html",
    ".js": "text/javascript",
    ".css": "text/css",
    ".svg": "image/svg+xml",
}
#: Only this origin's scripts, styles and fetches; no frame may hold the page, no <base> may move it.
CSP: Final = "default-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
SECURITY_HEADERS: Final = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    # Revalidate each time (a 304 when unchanged): an upgraded gateway serves its new page at once.
    "Cache-Control": "no-cache",
}


@dataclass(frozen=True, slots=True)
class Asset:
    body: bytes
    content_type: str
    etag: str


@functools.cache
def assets() -> dict[str, Asset]:
    """Every file of the console folder with a known type, by name."""
    table = {}
    for path in sorted(STATIC_DIR.iterdir()):
        content_type = CONTENT_TYPES.get(path.suffix)
        if path.is_file() and content_type is not None:
            body = path.read_bytes()
            table[path.name] = Asset(body, content_type, f'"{hashlib.sha256(body).hexdigest()[:32]}"')
    return table


async def page(request: web.Request) -> web.Response:
    return _serve(request, INDEX)


async def asset(request: web.Request) -> web.Response:
    name = request.match_info["file"]
    if name == INDEX:  # one address per file: the page is /admin
        raise web.HTTPNotFound()
    return _serve(request, name)


def _serve(request: web.Request, name: str) -> web.Response:
    found = assets().get(name)
    if found is None:
        raise web.HTTPNotFound()
    headers = {**SECURITY_HEADERS, "ETag": found.etag}
    if found.etag in _etags(request.headers.get("If-None-Match", "")):
        return web.Response(status=304, headers=headers)
    charset = "utf-8"
    return web.Response(body=found.body, content_type=found.content_type, charset=charset, headers=headers)


def _etags(header: str) -> set[str]:
    return {tag.strip().removeprefix("W/") for tag in header.split(",") if tag.strip()}
