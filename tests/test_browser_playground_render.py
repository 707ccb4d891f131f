"""The playground's rendering and errors against a scripted /v1/chat/completions beside the real page: markdown
is drawn as nodes (only http(s) links), markup in answers stays text, and errors, before or during a stream,
show in the page."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest_asyncio
from aiohttp import web
from aiohttp.test_utils import TestServer

from gateway import pages
from tests.browser import Browser, Page

LAST = "[...document.querySelectorAll('article.msg.assistant')].pop()"
MARKDOWN = (
    "Hello **bold** and `co",
    "de` and [ok](https://a.example/x?y=1&z=2), [bad](javascript:alert(1)), [ftp](ftp://a.example/) "
    '<img src=x onerror="window.__pwned=1">\nline two\n\n```py\nprint("<b>")\n',
    "```\n【检索 1】 [T &amp; <i>](https://c.example/)\n",
)
ANSWER_HTML = (
    "<p>Hello <strong>bold</strong> and <code>code</code> and "
    '<a href="https://a.example/x?y=1&amp;z=2" rel="noopener noreferrer" target="_blank">ok</a>, '
    "[bad](javascript:alert(1)), [ftp](ftp://a.example/) "
    '&lt;img src=x onerror="window.__pwned=1"&gt;<br>line two</p>'
    '<pre><code class="lang-py">print("&lt;b&gt;")</code></pre>'
)


def _chunk(content: str) -> bytes:
    return (
        b"data: " + json.dumps({"choices": [{"index": 0, "delta": {"content": content}}]}).encode() + b"\n\n"
    )


@pytest_asyncio.fixture
async def playground() -> AsyncIterator[tuple[str, list[dict[str, Any]]]]:
    """The real playground and a scripted chat route: the prompt picks the answer; bodies are recorded."""
    bodies: list[dict[str, Any]] = []

    async def models(request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "m-1"}, {"id": "m-1-thinking"}]})

    async def chat(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        bodies.append(body)
        prompt = body["messages"][-1]["content"]
        if prompt == "refuse":
            return web.json_response({"error": {"message": "Slow down.", "type": "rate_limit"}}, status=429)
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        if prompt == "break":
            await response.write(_chunk("Half an ans"))
            await response.write(b'data: {"error": {"message": "Upstream broke."}}\n\n')
            return response
        for piece in MARKDOWN:
            await response.write(_chunk(piece))
        await response.write(b"data: [DONE]\n\n")
        return response

    app = web.Application()
    app.router.add_get("/playground", pages.playground_page)
    app.router.add_get("/static/{path:.+}", pages.static_asset)
    app.router.add_get("/v1/models", models)
    app.router.add_post("/v1/chat/completions", chat)
    async with TestServer(app, host="127.0.0.1") as server:
        yield str(server.make_url("/playground")), bodies


async def _send(page: Page, text: str, state: str) -> None:
    await page.fill("#prompt", text)
    await page.click("#send")
    await page.wait_js(f"const m = {LAST}; return m && m.dataset.state === arguments[0]", state)


async def test_answers_render_as_safe_markdown(
    browser: Browser, playground: tuple[str, list[dict[str, Any]]]
) -> None:
    """Bold, code, fenced code, http(s) links (rel=noopener) and citations are drawn; other links and any
    markup stay text; the request is an OpenAI streaming chat with the thinking variant when asked."""
    url, bodies = playground
    page = await browser.page()
    await page.goto(url)
    await page.wait_js("return document.body.dataset.ready === '1'")
    assert await page.js("return document.querySelector('#thinking').disabled") is False
    await page.click("#thinking")
    await _send(page, "show me", "done")
    assert bodies == [
        {"model": "m-1-thinking", "messages": [{"role": "user", "content": "show me"}], "stream": True}
    ]
    assert await page.js(f"return {LAST}.querySelector('.answer').innerHTML") == ANSWER_HTML
    assert await page.js(f"return {LAST}.querySelector('ol.citations').innerHTML") == (
        '<li value="1"><a href="https://c.example/" rel="noopener noreferrer" target="_blank">'
        "T &amp;amp; &lt;i&gt;</a></li>"
    )
    assert await page.js("return [window.__pwned, document.querySelectorAll('.msg img').length]") == [None, 0]


async def test_errors_show_in_the_page(
    browser: Browser, playground: tuple[str, list[dict[str, Any]]]
) -> None:
    """An error status shows the OpenAI error's message and the turn is not kept; an error inside the stream
    keeps the partial answer, which the next turn carries."""
    url, bodies = playground
    page = await browser.page()
    await page.goto(url)
    await page.wait_js("return document.body.dataset.ready === '1'")
    await _send(page, "refuse", "error")
    assert await page.text("#error") == "Slow down."
    assert await page.js(f"return {LAST}.querySelector('.note').textContent") == "Slow down."
    await _send(page, "break", "error")
    assert await page.text("#error") == "Upstream broke."
    assert await page.js(f"return {LAST}.querySelector('.answer').textContent") == "Half an ans"
    await _send(page, "again", "done")
    assert await page.js("return document.querySelector('#error').hidden") is True
    assert bodies[-1]["messages"] == [
        {"role": "user", "content": "break"},
        {"role": "assistant", "content": "Half an ans"},
        {"role": "user", "content": "again"},
    ]
