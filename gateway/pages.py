"""The browser pages: `GET /` (the API docs, drawn in the browser from `/openapi.json`), `GET /playground` (a
chat), `GET /admin` (the operator's console, a client of the admin JSON routes) and their scripts and styles
under `GET /static/{path}`, all files of `gateway/static/`. The pages hold no data, so they are served to
anyone: every call they make is checked like any client's (the console's by the token service's admin rule).

The files are read once, on first use, and looked up by their exact path below `gateway/static/`, so no URL can
reach a file outside it. Every answer carries an ETag and `Cache-Control: no-cache` (the browser revalidates and
gets a 304 while a file is unchanged), `nosniff`, and a Content-Security-Policy that lets scripts, styles and
fetches come from this origin only: the pages have no inline script or style.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from aiohttp import web

from shared.errors import NotFound

STATIC_DIR: Final = Path(__file__).resolve().parent / "static"
DOCS_PAGE: Final = "docs/index.html"
PLAYGROUND_PAGE: Final = "playground/index.html"
CONSOLE_PAGE: Final = "console/index.html"
ICON: Final = "icon.svg"

CONTENT_TYPES: Final[dict[str, str]] = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".json": "application/json",
}
#: `data:` / `blob:` images: the playground previews the images a user attaches before sending them.
CSP: Final = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self' data: blob:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
_HEADERS: Final = {
    "Cache-Control": "no-cache",
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}


@dataclass(frozen=True, slots=True)
class Asset:
    body: bytes
    content_type: str
    etag: str


@functools.cache
def assets() -> dict[str, Asset]:
    """Every servable file under gateway/static/, by its path relative to it ("docs/docs.js")."""
    out: dict[str, Asset] = {}
    for file in sorted(STATIC_DIR.rglob("*")):
        content_type = CONTENT_TYPES.get(file.suffix)
        if content_type is None or not file.is_file():
            continue
        body = file.read_bytes()
        etag = '"' + hashlib.sha256(body).hexdigest()[:20] + '"'
        out[file.relative_to(STATIC_DIR).as_posix()] = Asset(body, content_type, etag)
    return out


async def docs_page(request: web.Request) -> web.Response:
    return serve(request, DOCS_PAGE)


async def playground_page(request: web.Request) -> web.Response:
    return serve(request, PLAYGROUND_PAGE)


async def console_page(request: web.Request) -> web.Response:
    return serve(request, CONSOLE_PAGE)


async def favicon(request: web.Request) -> web.Response:
    """The pages' icon where browsers look for one by themselves (SVG: every current browser takes it)."""
    return serve(request, ICON)


async def static_asset(request: web.Request) -> web.Response:
    """A page's script, style or icon; a page itself has one address only (its route)."""
    name = request.match_info["path"]
    if name.endswith("index.html"):
        raise NotFound(f"No such file: /static/{name}")
    return serve(request, name)


def serve(request: web.Request, name: str) -> web.Response:
    """The file `name` of gateway/static/, or a 304 when the caller already holds this version."""
    asset = assets().get(name)
    if asset is None:
        raise NotFound(f"No such file: /static/{name}")
    headers = {**_HEADERS, "ETag": asset.etag}
    if _matches(request.headers.get("If-None-Match", ""), asset.etag):
        return web.Response(status=304, headers=headers)
    return web.Response(body=asset.body, headers={**headers, "Content-Type": asset.content_type})


def _matches(if_none_match: str, etag: str) -> bool:
    tags = {tag.strip().removeprefix("W/") for tag in if_none_match.split(",")}
    return etag in tags or "*" in tags
