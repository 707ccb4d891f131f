"""The docs page (`GET /`) in headless Chromium against the full stack: it lists every route of the gateway's
router, and its try-it streams a chat answer from the simulator into the page as the events arrive."""

from __future__ import annotations

from typing import Any

from gateway import openapi_samples as samples
from gateway.app import create_app
from kimi_sim.answers import answer_for
from shared.settings import Secret
from tests.browser import Browser, Page
from tests.stack import Stack, StackFactory, stack_factory

__all__ = ["stack_factory"]

KEY = "sk-docs-page"
CHAT = 'details.op[data-method="POST"][data-path="/v1/chat/completions"]'
COUNT = 'details.op[data-method="POST"][data-path="/v1/messages/count_tokens"]'
#: Every (state, answer text) the try-it result of the chat route goes through, recorded by the page itself.
RECORD_STATES = """
const result = document.querySelector(arguments[0] + ' .result');
window.__states = [];
new MutationObserver(() => {
  const text = result.querySelector('.text');
  window.__states.push([result.dataset.state, text ? text.textContent : '']);
}).observe(result, {subtree: true, childList: true, characterData: true, attributes: true});
"""


async def _open_docs(stack: Stack, browser: Browser) -> Page:
    page = await browser.page()
    await page.goto(f"{stack.url}/")
    await page.wait_js("return document.body.dataset.ready === '1'")
    return page


async def _open(page: Page, selector: str) -> None:
    await page.click(f"{selector} > summary")
    await page.wait_js("return !!document.querySelector(arguments[0] + ' .tryit')", selector)


async def test_every_route_of_the_router_is_on_the_page_in_its_group(
    stack_factory: StackFactory, browser: Browser
) -> None:
    """The page shows exactly the router's (method, path) pairs, HEAD twins aside, each in the group its path
    implies while /openapi.json has no tags."""
    stack = await stack_factory()
    router = create_app(stack.settings).router
    registered = {
        (route.method, route.resource.canonical)
        for route in router.routes()
        if route.resource is not None and route.method not in ("HEAD", "*")
    }
    page = await _open_docs(stack, browser)
    listed = await page.js(
        "return [...document.querySelectorAll('details.op')]"
        ".map(d => [d.dataset.method, d.dataset.path, d.closest('section').dataset.group])"
    )
    assert {(method, path) for method, path, _ in listed} == registered
    assert len(listed) == len(registered)
    groups = {(method, path): group for method, path, group in listed}
    assert groups[("POST", "/v1/chat/completions")] == "OpenAI"
    assert groups[("GET", "/v1/models")] == "OpenAI"
    assert groups[("POST", "/v1/responses")] == "Responses"
    assert groups[("GET", "/v1/responses/{response_id}")] == "Responses"
    assert groups[("POST", "/v1/messages")] == groups[("POST", "/v1/messages/count_tokens")] == "Anthropic"
    assert groups[("POST", "/v1beta/models/{model}:streamGenerateContent")] == "Gemini"
    assert groups[("POST", "/v1/models/{model}:generateContent")] == "Gemini"
    assert groups[("GET", "/admin/keys")] == groups[("POST", "/auth/save")] == "Admin"
    assert groups[("POST", "/token/check")] == "Admin"
    assert groups[("GET", "/healthz")] == groups[("GET", "/playground")] == "Service"
    order = await page.js("return [...document.querySelectorAll('section.group')].map(s => s.dataset.group)")
    assert order == ["OpenAI", "Responses", "Anthropic", "Gemini", "Service", "Admin"]
    await page.screenshot("docs-list")


async def test_try_it_streams_a_chat_answer_as_it_arrives(
    stack_factory: StackFactory, browser: Browser
) -> None:
    """The chat route's try-it is prefilled with the document's example, asking for a stream; Send shows the
    status, the request id, the raw SSE events and the answer text, which grows before the stream ends."""
    stack = await stack_factory(api_keys=(Secret(KEY),))
    await stack.add("refresh_token")
    await stack.configure_sim(chunk_count=6, chunk_delay_s=0.15)
    page = await _open_docs(stack, browser)
    await page.fill("#api-key", KEY)
    await _open(page, CHAT)
    await page.wait_js(f"return document.querySelector('{CHAT} textarea').value.includes('Hello')")
    example: dict[str, Any] = await page.js(
        f"return JSON.parse(document.querySelector('{CHAT} textarea').value)"
    )
    assert example == {**samples.CHAT, "stream": True}
    curl = await page.text(f"{CHAT} .samples pre")
    assert 'curl -sS -X POST "$BASE/v1/chat/completions"' in curl

    await page.js(RECORD_STATES, CHAT)
    await page.click(f"{CHAT} button.send")
    await page.wait_js(
        f"return document.querySelector('{CHAT} .result').dataset.state === 'done'", timeout=10
    )
    answer = answer_for(samples.PROMPT)
    assert await page.text(f"{CHAT} .result .text") == answer
    assert await page.text(f"{CHAT} .result .status") == "200 OK"
    request_id = await page.text(f"{CHAT} .result .header-x-request-id")
    assert request_id.startswith("x-request-id: ") and len(request_id) > len("x-request-id: ")
    raw = await page.text(f"{CHAT} .result .raw")
    assert raw.count("data: {") >= 6 and raw.rstrip().endswith("data: [DONE]")
    states = await page.js("return window.__states")
    partial = [text for state, text in states if state == "streaming" and 0 < len(text) < len(answer)]
    assert partial and all(answer.startswith(text) for text in partial)
    assert await page.js(f"return document.querySelector('{CHAT} button.stop').disabled") is True
    await page.js(f"document.querySelector('{CHAT}').scrollIntoView()")
    await page.screenshot("docs")


async def test_try_it_sends_the_key_the_way_each_dialect_expects(
    stack_factory: StackFactory, browser: Browser
) -> None:
    """Anthropic's count_tokens goes out with `x-api-key`: 200 with the key in the field, 401 without it."""
    stack = await stack_factory(api_keys=(Secret(KEY),))
    page = await _open_docs(stack, browser)
    await page.fill("#api-key", KEY)
    await _open(page, COUNT)
    body = '{"model": "kimi", "messages": [{"role": "user", "content": "Hello"}]}'
    await page.fill(f"{COUNT} textarea", body)
    await page.click(f"{COUNT} button.send")
    await page.wait_js(f"return document.querySelector('{COUNT} .result').dataset.state === 'done'")
    assert await page.text(f"{COUNT} .result .status") == "200 OK"
    assert '"input_tokens"' in await page.text(f"{COUNT} .result .raw")
    await page.fill("#api-key", "")
    await page.click(f"{COUNT} button.send")
    await page.wait_js(
        f"return document.querySelector('{COUNT} .result .status').textContent.startsWith('401')"
    )
    assert '"authentication_error"' in await page.text(f"{COUNT} .result .raw")
