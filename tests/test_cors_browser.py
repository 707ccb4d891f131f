"""CORS in a real headless Chromium: a page of an allowed origin streams a chat completion from the gateway and
reads its `x-request-id`; a page of another origin is refused by the browser (fetch throws a TypeError)."""

from __future__ import annotations

from aiohttp import web
from aiohttp.test_utils import TestServer

from kimi_sim.answers import answer_for
from tests.browser import Browser
from tests.stack import StackFactory, stack_factory

__all__ = ["stack_factory"]

PROMPT = "hello from a browser"
#: A page that streams `POST /v1/chat/completions` from the gateway named in its query (`?gw=`) and shows the
#: deltas as they arrive; `data-*` on #out say how it ended.
PAGE = """<!doctype html><html><body><pre id="out"></pre><script>
(async () => {
  const out = document.getElementById('out');
  const gateway = new URLSearchParams(location.search).get('gw');
  try {
    const response = await fetch(gateway + '/v1/chat/completions', {
      method: 'POST',
      headers: {'content-type': 'application/json', 'authorization': 'Bearer sk-local'},
      body: JSON.stringify({model: 'kimi', stream: true, messages: [{role: 'user', content: %PROMPT%}]}),
    });
    out.dataset.requestId = response.headers.get('x-request-id') || '';
    const reader = response.body.getReader(); const decoder = new TextDecoder(); let buffer = '';
    for (;;) {
      const {done, value} = await reader.read(); if (done) break;
      buffer += decoder.decode(value, {stream: true});
      const frames = buffer.split('\\n\\n'); buffer = frames.pop();
      for (const frame of frames) {
        const data = frame.startsWith('data: ') ? frame.slice(6) : '';
        if (!data || data === '[DONE]') continue;
        const choice = JSON.parse(data).choices[0];
        if (choice && choice.delta.content) out.textContent += choice.delta.content;
      }
    }
    out.dataset.end = 'done';
  } catch (error) {
    out.dataset.end = error.name;
  }
})();
</script></body></html>""".replace("%PROMPT%", f'"{PROMPT}"')


async def _page(request: web.Request) -> web.Response:
    return web.Response(text=PAGE, content_type="text/html")


def _site() -> TestServer:
    app = web.Application()
    app.router.add_get("/", _page)
    return TestServer(app, host="127.0.0.1")


async def test_an_allowed_page_streams_and_another_is_refused(
    browser: Browser, stack_factory: StackFactory
) -> None:
    """The allowed origin's page shows the simulator's exact answer and the request id; the other's fetch fails."""
    async with _site() as allowed, _site() as other:
        origin = f"http://127.0.0.1:{allowed.port}"
        stack = await stack_factory(cors_allow_origins=(origin,))
        await stack.add("kimi_auth")
        tab = await browser.page()
        await tab.goto(f"{origin}/?gw={stack.url}")
        end = "return document.getElementById('out').dataset.end"
        assert await tab.wait_js(end) == "done"
        assert await tab.text("#out") == answer_for(PROMPT)
        request_id = await tab.js("return document.getElementById('out').dataset.requestId")
        assert len(request_id) == 32
        await tab.screenshot("cors")
        refused = await browser.page()
        await refused.goto(f"http://127.0.0.1:{other.port}/?gw={stack.url}")
        assert await refused.wait_js(end) == "TypeError"
        assert await refused.text("#out") == ""
