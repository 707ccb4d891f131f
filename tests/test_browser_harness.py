"""The browser harness itself: a page served by the test loop streams into headless Chromium."""

from __future__ import annotations

import asyncio

from aiohttp import web
from aiohttp.test_utils import TestServer

from tests.browser import SCREENSHOTS, Browser

PAGE = """<!doctype html><html><body><pre id="out"></pre><script>
(async () => {
  const r = await fetch('/stream');
  const reader = r.body.getReader(); const dec = new TextDecoder();
  for (;;) { const {done, value} = await reader.read(); if (done) break;
    document.getElementById('out').textContent += dec.decode(value, {stream: true}); }
  document.getElementById('out').dataset.done = '1';
})();
</script></body></html>"""


async def test_a_page_reads_a_stream_while_the_loop_keeps_serving(browser: Browser) -> None:
    async def page(request: web.Request) -> web.Response:
        return web.Response(text=PAGE, content_type="text/html")

    async def stream(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/plain"})
        await response.prepare(request)
        for word in ("one ", "two ", "three"):
            await response.write(word.encode())
            await asyncio.sleep(0.05)
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_get("/", page)
    app.router.add_get("/stream", stream)
    async with TestServer(app, host="127.0.0.1") as server:
        tab = await browser.page()
        await tab.goto(str(server.make_url("/")))
        await tab.wait_js("return document.getElementById('out').dataset.done === '1'")
        assert await tab.text("#out") == "one two three"
        shot = await tab.screenshot("harness")
    assert shot.parent == SCREENSHOTS and shot.stat().st_size > 0
