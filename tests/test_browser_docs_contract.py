"""The docs page against the full /openapi.json contract (tags, `$ref` schemas, examples, `x-codeSamples`,
`x-stream`), served beside the real page by a small app: what the richer document will hold is drawn, and
hostile strings in it stay text."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest_asyncio
from aiohttp import web
from aiohttp.test_utils import TestServer

from gateway import pages
from tests.browser import Browser, Page

CHAT = 'details.op[data-method="POST"][data-path="/v1/chat/completions"]'
HOSTILE = '<img src=x onerror="window.__pwned=1">'
EXAMPLE = {"model": "m-1", "messages": [{"role": "user", "content": "<b>hi</b>"}], "stream": True}
SAMPLES = [
    {"lang": "python", "label": "Python SDK", "source": "client.chat.completions.create(model='m-1')"},
    {"lang": "shell", "label": "curl", "source": "curl -N $BASE/v1/chat/completions"},
]
SPEC: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {"title": "Contract gateway", "version": "9.9", "description": "First.\n\nSecond with `code`."},
    "paths": {
        "/v1/chat/completions": {
            "post": {
                "tags": ["OpenAI"],
                "summary": "Chat",
                "description": "Streams with `stream: true`.\n\nSee the extensions.",
                "x-stream": True,
                "x-codeSamples": SAMPLES,
                "requestBody": {
                    "content": {
                        "application/json": {
                            "schema": {"$ref": "#/components/schemas/ChatRequest"},
                            "example": EXAMPLE,
                        }
                    }
                },
                "responses": {
                    "200": {
                        "description": "A completion",
                        "content": {
                            "application/json": {"schema": {"$ref": "#/components/schemas/Completion"}},
                            "text/event-stream": {"schema": {"type": "string"}},
                        },
                    },
                    "400": {"$ref": "#/components/responses/Error"},
                },
            }
        },
        f"/hostile/{HOSTILE}": {"get": {"summary": f"<script>window.__pwned=1</script>{HOSTILE}"}},
        "/custom": {"get": {"tags": ["Extra"], "summary": "A group of its own"}},
    },
    "components": {
        "responses": {"Error": {"description": "The OpenAI error shape"}},
        "schemas": {
            "ChatRequest": {
                "type": "object",
                "required": ["model", "messages"],
                "properties": {
                    "model": {"type": "string", "description": "A model id of GET /v1/models"},
                    "messages": {"type": "array", "items": {"$ref": "#/components/schemas/Message"}},
                    "stream": {"type": "boolean", "default": False},
                },
            },
            "Message": {
                "type": "object",
                "properties": {
                    "role": {"type": "string", "enum": ["system", "user", "assistant"]},
                    "content": {
                        "oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "object"}}]
                    },
                    "reply": {"$ref": "#/components/schemas/Message"},
                },
            },
            "Completion": {"type": "object", "properties": {"id": {"type": "string"}}},
        },
    },
}


@pytest_asyncio.fixture
async def docs_url() -> AsyncIterator[str]:
    """The real docs page and its assets, with SPEC as /openapi.json."""

    async def openapi(request: web.Request) -> web.Response:
        return web.json_response(SPEC)

    async def models(request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "m-1"}]})

    app = web.Application()
    app.router.add_get("/", pages.docs_page)
    app.router.add_get("/static/{path:.+}", pages.static_asset)
    app.router.add_get("/openapi.json", openapi)
    app.router.add_get("/v1/models", models)
    async with TestServer(app, host="127.0.0.1") as server:
        yield str(server.make_url("/"))


async def _page(browser: Browser, url: str) -> Page:
    page = await browser.page()
    await page.goto(url)
    await page.wait_js("return document.body.dataset.ready === '1'")
    return page


async def test_tags_group_and_hostile_strings_stay_text(browser: Browser, docs_url: str) -> None:
    """Groups follow the first tag (unknown ones last), untagged paths are guessed; markup in the document is
    shown as its text and never runs."""
    page = await _page(browser, docs_url)
    groups = await page.js("return [...document.querySelectorAll('section.group')].map(s => s.dataset.group)")
    assert groups == ["OpenAI", "Service", "Extra"]
    assert await page.text(".topbar h1") == "Contract gateway"
    assert await page.js("return [...document.querySelectorAll('#description p')].map(p => p.innerHTML)") == [
        "First.",
        "Second with <code>code</code>.",
    ]
    hostile = 'details.op[data-group="Service"]'
    assert await page.text(f"{hostile} .path") == f"/hostile/{HOSTILE}"
    assert await page.text(f"{hostile} .summary") == f"<script>window.__pwned=1</script>{HOSTILE}"
    await page.click(f"{hostile} > summary")
    await page.wait_js(f"return !!document.querySelector('{hostile} .tryit')")
    assert await page.js(
        "return [window.__pwned, document.querySelectorAll('img, script:not([src])').length]"
    ) == [
        None,
        0,
    ]
    assert await page.text(f"{CHAT} .pill") == "stream"


async def test_schemas_examples_and_code_samples_are_drawn(browser: Browser, docs_url: str) -> None:
    """The request schema is a tree with `$ref`s resolved and recursion cut; the example fills the editor;
    `x-codeSamples` replace the generated curl, each with a copy button; responses list their schemas."""
    page = await _page(browser, docs_url)
    await page.click(f"{CHAT} > summary")
    await page.wait_js(f"return document.querySelector('{CHAT} textarea').value !== ''")
    assert await page.js(f"return JSON.parse(document.querySelector('{CHAT} textarea').value)") == EXAMPLE
    tree = await page.js(
        f"const root = document.querySelector('{CHAT} .op-body > .schema.root');"
        "return [...root.querySelectorAll('li')].map(li => {"
        "  const head = li.querySelector(':scope > details > summary') || li;"
        "  const pick = (c) => [...head.querySelectorAll(':scope > .' + c)].map(e => e.textContent).join(' ');"
        "  return [pick('prop'), pick('type'), pick('req'), pick('desc')];"
        "})"
    )
    assert tree == [
        ["", "ChatRequest", "", ""],
        ["model", "string", "required", "A model id of GET /v1/models"],
        ["messages", "array of Message", "required", ""],
        ["[item]", "Message", "", ""],
        ["role", "string", "", 'one of: "system", "user", "assistant"'],
        ["content", "string | array of object", "", ""],
        ["option 1", "string", "", ""],
        ["option 2", "array of object", "", ""],
        ["reply", "Message", "", "(see above)"],
        ["stream", "boolean", "", "default: false"],
    ]
    assert await page.js(f"return document.querySelector('{CHAT} .schema.root details').open") is True
    samples = await page.js(
        f"return [...document.querySelectorAll('{CHAT} .sample')]"
        ".map(s => [s.querySelector('strong').textContent, s.querySelector('pre').textContent])"
    )
    assert samples == [[s["label"], s["source"]] for s in SAMPLES]
    await page.click(f"{CHAT} .sample button.copy")
    assert await page.text(f"{CHAT} .sample button.copy") == "Copied"
    responses = await page.js(
        f"return [...document.querySelectorAll('{CHAT} .response')].map(r => r.querySelector('h4').textContent"
        " + ' ' + [...r.querySelectorAll('.pill')].map(p => p.textContent).join(','))"
    )
    assert responses == ["200A completion application/json,text/event-stream", "400The OpenAI error shape "]
    await page.fill(f"{CHAT} textarea", "{not json")
    await page.click(f"{CHAT} button.send")
    await page.wait_text(f"{CHAT} .result [role=alert]", "The request body is not valid JSON.")
    assert await page.js(f"return document.querySelector('{CHAT} .result').dataset.state") == "error"
