"""The browser pages' serving (gateway/pages.py): types, security headers, ETag revalidation, no escape from
gateway/static/, and every file the pages reference is served."""

from __future__ import annotations

import re
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from yarl import URL

from gateway import pages
from gateway.app import create_app
from shared.settings import CommonSettings, GatewaySettings

HTML = "text/html; charset=utf-8"
JS = "text/javascript; charset=utf-8"
CSS = "text/css; charset=utf-8"
#: `src="…"` / `href="…"` in the pages, `import … from "…"` in the scripts.
_REFERENCE = re.compile(r'(?:src|href)="(/static/[^"]+)"|from\s+"(/static/[^"]+)"')


@pytest.fixture
async def client(redis_url: str, aiohttp_client: Any) -> TestClient:
    app = create_app(GatewaySettings(common=CommonSettings(redis_url=redis_url)))
    return await aiohttp_client(app)


async def _raw_get(client: TestClient, path: str) -> tuple[int, bytes]:
    """GET `path` exactly as written (no dot-segment removal, no re-encoding by the client)."""
    url = URL(str(client.make_url("/")).rstrip("/") + path, encoded=True)
    async with client.session.get(url) as response:
        return response.status, await response.read()


@pytest.mark.parametrize(
    ("path", "content_type", "marker"),
    [
        ("/", HTML, b'<script type="module" src="/static/docs/docs.js">'),
        ("/playground", HTML, b'<script type="module" src="/static/playground/playground.js">'),
        ("/static/docs/docs.js", JS, b"/openapi.json"),
        ("/static/common/util.js", JS, b"export async function readSSE"),
        ("/static/common/base.css", CSS, b"--post"),
    ],
)
async def test_pages_and_assets_carry_their_type_and_security_headers(
    client: TestClient, path: str, content_type: str, marker: bytes
) -> None:
    """Each page and asset has its content type, the self-only CSP, nosniff, no-cache and an ETag."""
    response = await client.get(path)
    body = await response.read()
    assert response.status == 200 and marker in body
    assert response.headers["Content-Type"] == content_type
    assert response.headers["Content-Security-Policy"] == pages.CSP
    assert "script-src 'self';" in pages.CSP and "connect-src 'self';" in pages.CSP
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Cache-Control"] == "no-cache"
    assert re.fullmatch(r'"[0-9a-f]{20}"', response.headers["ETag"])


async def test_a_matching_etag_answers_304_and_another_the_file(client: TestClient) -> None:
    """If-None-Match with the current ETag (weak or in a list) is a bodiless 304; a stale one gets the file."""
    first = await client.get("/playground")
    etag = first.headers["ETag"]
    for offered in (etag, f"W/{etag}", f'"stale", {etag}'):
        again = await client.get("/playground", headers={"If-None-Match": offered})
        assert again.status == 304 and await again.read() == b""
        assert again.headers["ETag"] == etag and again.headers["Cache-Control"] == "no-cache"
    stale = await client.get("/playground", headers={"If-None-Match": '"stale"'})
    assert stale.status == 200 and await stale.read() == await first.read()


@pytest.mark.parametrize(
    "path",
    [
        "/static/../pages.py",
        "/static/docs/../../pages.py",
        "/static/%2e%2e/pages.py",
        "/static/%2E%2E%2Fpages.py",
        "/static/docs/%2e%2e%2f%2e%2e%2fpages.py",
        "/static/..%2fpages.py",
        "/static/..%5cpages.py",
        "/static/%252e%252e/pages.py",
        "/static//etc/passwd",
        "/static/docs/index.html%00.js",
        "/static/docs",
        "/static/docs/",
    ],
)
async def test_no_path_leaves_the_static_folder(client: TestClient, path: str) -> None:
    """Dot segments, encoded or not, absolute paths and folders are 404s; no file outside static/ is read."""
    status, body = await _raw_get(client, path)
    assert status == 404
    assert b"from __future__" not in body and b"root:" not in body


async def test_every_file_the_pages_reference_is_served(client: TestClient) -> None:
    """Every script, style, icon and module import reachable from the three pages is served with its type, and
    the pages have no inline script or style (the CSP would block them)."""
    seen: set[str] = set()
    queue = ["/", "/playground", "/admin"]
    while queue:
        path = queue.pop()
        response = await client.get(path)
        assert response.status == 200, path
        text = await response.text()
        if response.headers["Content-Type"] == HTML:
            assert not re.search(r"<script(?![^>]*\bsrc=)", text), path
            assert "<style" not in text and " style=" not in text and "javascript:" not in text, path
        for match in _REFERENCE.finditer(text):
            ref = match.group(1) or match.group(2)
            assert ref.endswith((".js", ".css", ".svg")), ref
            if ref not in seen:
                seen.add(ref)
                queue.append(ref)
    assert {
        "/static/common/base.css",
        "/static/common/util.js",
        "/static/docs/docs.js",
        "/static/playground/playground.js",
        "/static/playground/markdown.js",
        "/static/console/console.js",
        "/static/icon.svg",
    } <= seen


def test_the_wheel_ships_the_static_files() -> None:
    """pyproject.toml's package data takes gateway/static/ into the wheel the Docker image installs."""
    text = (pages.STATIC_DIR.parent.parent / "pyproject.toml").read_text()
    assert "[tool.setuptools.package-data]\n" in text and 'gateway = ["static/**/*"]' in text
    assert set(pages.assets()) >= {pages.DOCS_PAGE, pages.PLAYGROUND_PAGE, "common/util.js"}
