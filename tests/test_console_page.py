"""`GET /admin`, the operator's console (gateway/pages.py): its files, their headers, no path out of its folder,
and the admin JSON routes under `/admin/` still forwarded to the token service beside it."""

from __future__ import annotations

import re
import tomllib
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from yarl import URL

from gateway.app import create_app
from gateway.pages import CSP
from gateway.pages import STATIC_DIR as PAGES_DIR
from kimi_sim.server import SimServer
from shared.settings import CommonSettings, GatewaySettings
from tests.test_gateway_admin_proxy import AUTH, common, gateway, servers, token_service
from token_service.client import ADMIN_ROUTES

__all__ = ["servers"]  # the fixture, imported for pytest

Client = TestClient[web.Request, web.Application]
ClientFactory = Callable[..., Awaitable[Client]]
STATIC_DIR = PAGES_DIR / "console"
FILES = [
    ("/admin", "index.html", "text/html"),
    ("/static/console/console.js", "console.js", "text/javascript"),
    ("/static/console/console.css", "console.css", "text/css"),
    ("/static/icon.svg", "../icon.svg", "image/svg+xml"),  # no charset: not text; the pages' one icon
    ("/favicon.ico", "../icon.svg", "image/svg+xml"),
]


@pytest.fixture
async def client(aiohttp_client: ClientFactory, redis_url: str) -> Client:
    return await aiohttp_client(create_app(GatewaySettings(common=CommonSettings(redis_url=redis_url))))


@pytest.mark.parametrize(("path", "name", "content_type"), FILES)
async def test_the_console_files_are_served_with_their_type_and_security_headers(
    client: Client, path: str, name: str, content_type: str
) -> None:
    """Each file answers its own bytes, its type in UTF-8, a 'self'-only CSP, nosniff, DENY, no-cache and an
    ETag; the same ETag in If-None-Match is a 304 with no body."""
    resp = await client.get(path)
    assert resp.status == 200
    assert await resp.read() == (STATIC_DIR / name).read_bytes()
    charset = "" if name.endswith(".svg") else "; charset=utf-8"
    assert resp.headers["Content-Type"] == content_type + charset
    assert resp.headers["Content-Security-Policy"] == CSP
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
    assert resp.headers["X-Frame-Options"] == "DENY"
    assert resp.headers["Cache-Control"] == "no-cache"
    etag = resp.headers["ETag"]
    assert re.fullmatch(r'"[0-9a-f]{20}"', etag)
    again = await client.get(path, headers={"If-None-Match": f'W/"other", {etag}'})
    assert again.status == 304
    assert await again.read() == b""
    assert again.headers["ETag"] == etag
    assert again.headers["Content-Security-Policy"] == CSP
    assert (await client.get(path, headers={"If-None-Match": '"other"'})).status == 200


async def test_the_page_has_no_inline_script_or_style(client: Client) -> None:
    """Under a 'self'-only CSP an inline script, handler or style would not run: the page has none, and loads
    only its own files."""
    page = await (await client.get("/admin")).text()
    assert re.findall(r"<script\b[^>]*>", page) == ['<script src="/static/console/console.js" defer>']
    assert re.findall(r"<link\b[^>]*>", page) == [
        '<link rel="icon" href="/static/icon.svg" type="image/svg+xml">',
        '<link rel="stylesheet" href="/static/console/console.css">',
    ]
    assert "<style" not in page and " style=" not in page and not re.search(r"\son[a-z]+=", page)
    script = (STATIC_DIR / "console.js").read_text()
    assert "innerHTML" not in script and "insertAdjacentHTML" not in script and "eval(" not in script


@pytest.mark.parametrize(
    "raw_path",
    [
        "/static/console/../app.py",
        "/static/console/..%2Fconsole.py",
        "/static/console/%2e%2e%2f%2e%2e%2fpyproject.toml",
        "/static/console/..%5C..%5Cpyproject.toml",
        "/static/console/%2Fetc%2Fpasswd",
        "/static/console/..",
        "/static/console/",
        "/static/console/index.html",
        "/static/console/missing.js",
        "/static/console/console.js%00.css",
        "/admin/",
    ],
)
async def test_no_path_leaves_the_console_folder(client: Client, raw_path: str) -> None:
    """Any other spelling (dot segments, encoded slashes or backslashes, NUL, the page's own file, a name the
    folder lacks) is a 404 that carries no file."""
    resp = await client.get(URL(raw_path, encoded=True))
    assert resp.status == 404
    body = await resp.read()
    assert b"import " not in body and b"[project]" not in body and b"root:" not in body


async def test_the_console_routes_do_not_clash_with_the_forwarded_admin_routes(
    aiohttp_client: ClientFactory, servers: Any, redis_url: str, kimi_sim: SimServer
) -> None:
    """Beside /admin and /static/console/…, every admin JSON route is still forwarded to the token service: the
    account list, the system view, a client key's 404; none of their paths is the console's."""
    assert all(path != "/admin" and not path.startswith("/static/console/") for _, path in ADMIN_ROUTES)
    settings = common(redis_url, kimi_sim.url)
    client = await gateway(aiohttp_client, settings, await token_service(servers, settings))
    assert (await client.get("/admin")).content_type == "text/html"
    accounts = await client.get("/admin/accounts", headers=AUTH)
    assert accounts.status == 200 and await accounts.json() == {"accounts": []}
    refused = await client.get("/admin/accounts")
    assert refused.status == 401 and (await refused.json())["type"] == "authentication"
    system = await client.get("/admin/system", headers=AUTH)
    assert system.status == 200 and (await system.json())["jobs"]["stream_length"] == 0
    missing = await client.get("/admin/keys/0123456789abcdef", headers=AUTH)
    assert missing.status == 404
    assert await missing.json() == {
        "success": False,
        "error": "no client key '0123456789abcdef'",
        "type": "not_found",
        "param": "key_id",
    }


async def test_a_page_of_the_gateways_own_origin_manages_accounts_without_a_key(
    aiohttp_client: ClientFactory, servers: Any, redis_url: str, kimi_sim: SimServer
) -> None:
    """With no ADMIN_API_KEY, the console's own requests (a POST carries the page's Origin, a GET none) pass the
    loopback rule through the gateway; the same POST from another origin is refused."""
    settings = common(redis_url, kimi_sim.url, key=None)
    client = await gateway(aiohttp_client, settings, await token_service(servers, settings))
    own = {"Origin": f"http://127.0.0.1:{client.port}"}
    token = kimi_sim.state.add_account("kimi_auth").token
    added = await client.post("/admin/accounts", json={"text": token}, headers=own)
    assert added.status == 200, await added.text()
    assert [a["kind"] for a in (await added.json())["added"]] == ["kimi_auth"]
    assert len((await (await client.get("/admin/accounts")).json())["accounts"]) == 1
    foreign = await client.post(
        "/admin/accounts", json={"text": token}, headers={"Origin": "http://localhost:3000"}
    )
    assert foreign.status == 401


async def test_the_console_is_packaged_with_the_gateway() -> None:
    """pyproject ships gateway/static/** as package data, so an installed gateway serves the console too."""
    pyproject = tomllib.loads((STATIC_DIR.parents[2] / "pyproject.toml").read_text())
    assert pyproject["tool"]["setuptools"]["package-data"]["gateway"] == ["static/**/*"]
    assert {p.name for p in STATIC_DIR.iterdir()} == {"index.html", "console.js", "console.css"}


async def test_the_page_links_to_docs_metrics_readiness_and_openapi(client: Client) -> None:
    """The console links the gateway's other pages, each of which answers."""
    page = await (await client.get("/admin")).text()
    links = re.findall(r'<a href="([^"]+)">', page)
    assert links == ["/", "/playground", "/openapi.json", "/metrics", "/readyz"]
    async with aiohttp.ClientSession() as session:
        for link in ("/", "/openapi.json", "/metrics"):
            async with session.get(client.make_url(link)) as resp:
                assert resp.status == 200, link
