"""The playground (`GET /playground`) in headless Chromium against the full stack: a streamed answer with its
reasoning and search citations, a second turn that carries the first, Stop, and attachments as OpenAI parts."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import struct
import time
import zlib

from kimi_sim.answers import answer_for, attachments_note, reasoning_for, search_results_for
from tests.browser import Browser, Page
from tests.stack import Stack, StackFactory, stack_factory

__all__ = ["stack_factory"]

LAST = "document.querySelectorAll('article.msg.assistant')[arguments[0]]"
#: Attach files the way a user's file picker does: a FileList on the input, then its change event.
ATTACH = """
const input = document.querySelector('#attach');
const transfer = new DataTransfer();
for (const [name, type, b64] of arguments[0]) {
  const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
  transfer.items.add(new File([bytes], name, {type}));
}
input.files = transfer.files;
input.dispatchEvent(new Event('change', {bubbles: true}));
"""


def _png() -> bytes:
    """A valid 1×1 RGB PNG."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00\xff\x80\x00"))
        + chunk(b"IEND", b"")
    )


async def _open(stack: Stack, browser: Browser, model: str) -> Page:
    page = await browser.page()
    await page.goto(f"{stack.url}/playground")
    await page.wait_js("return document.body.dataset.ready === '1'")
    await page.fill("#model", model)
    return page


async def _say(page: Page, text: str, turn: int, state: str = "done") -> None:
    await page.fill("#prompt", text)
    await page.click("#send")
    await page.wait_js(f"const m = {LAST}; return m && m.dataset.state === arguments[1]", turn, state)


async def _answer(page: Page, turn: int) -> str:
    text: str = await page.js(f"return {LAST}.querySelector('.answer').textContent", turn)
    return text


async def _completions(stack: Stack) -> list[str]:
    """The prompt of each REST completion the simulator received, in order."""
    log = await stack.sim_requests("/completion/stream")
    return [entry["body"]["messages"][0]["content"] for entry in log if entry["method"] == "POST"]


async def test_reasoning_citations_and_a_second_turn_with_the_history(
    stack_factory: StackFactory, browser: Browser
) -> None:
    """Thinking and search on `kimi` send kimi-thinking with use_search; the answer shows its reasoning in a
    collapsed block and its citations as links; the next turn sends the first one with it."""
    stack = await stack_factory()
    await stack.add("refresh_token")
    page = await _open(stack, browser, "kimi")
    options = await page.js("return [...document.querySelectorAll('#model option')].map(o => o.value)")
    assert "kimi" in options and "kimi-thinking" in options and len(options) > 10
    await page.click("#thinking")
    await page.click("#search")
    assert await page.text("#model-note") == "sends kimi-thinking"

    prompt = "what is new"
    await _say(page, prompt, 0)
    reasoning = await page.js(
        f"const d = {LAST}.querySelector('details.reasoning');"
        "return {hidden: d.hidden, open: d.open, summary: d.querySelector('summary').textContent,"
        " text: d.querySelector('.reasoning-text').textContent}",
        0,
    )
    assert reasoning == {
        "hidden": False,
        "open": False,
        "summary": "Reasoning",
        "text": reasoning_for(prompt),
    }
    assert await _answer(page, 0) == answer_for(prompt)
    links = await page.js(
        f"return [...{LAST}.querySelectorAll('ol.citations a')].map(a => [a.textContent, a.href, a.rel])", 0
    )
    assert links == [[r["title"], r["url"], "noopener noreferrer"] for r in search_results_for(prompt)]
    first = (await stack.sim_requests("/completion/stream"))[0]["body"]
    assert first["use_search"] is True and first["kimiplus_id"] == "crm40ee9e5jvhsn7ptcg"

    await page.click("#thinking")
    await page.click("#search")
    await _say(page, "and again", 1)
    second = (await _completions(stack))[1]
    assert second.startswith(f"user:{prompt}\nassistant:") and second.endswith("\nuser:and again\n")
    assert answer_for(prompt) in second
    assert await _answer(page, 1) == answer_for(second)
    assert await page.js(f"return {LAST}.querySelector('details.reasoning').hidden", 1) is True
    await page.screenshot("playground")

    await page.click("#new-chat")
    assert await page.js("return document.querySelectorAll('article.msg').length") == 0
    await _say(page, "fresh start", 0)
    assert (await _completions(stack))[2] == "fresh start\n"  # one message: no earlier turn went with it


async def test_stop_keeps_the_partial_answer_and_ends_the_upstream_stream(
    stack_factory: StackFactory, browser: Browser
) -> None:
    """Stop aborts the fetch: the partial answer stays, nothing more arrives, the simulator's stream is closed
    by the gateway, and the page can send again."""
    stack = await stack_factory()
    await stack.add("refresh_token")
    await stack.configure_sim(chunk_count=40, chunk_delay_s=0.15)
    page = await _open(stack, browser, "kimi")
    await page.fill("#prompt", "a long story")
    await page.click("#send")
    await page.wait_js(f"const m = {LAST}; return m && m.querySelector('.answer').textContent.length > 2", 0)
    await page.click("#stop")
    await page.wait_js(f"return {LAST}.dataset.state === 'stopped'", 0)
    partial = await _answer(page, 0)
    full = answer_for("a long story")
    assert 2 < len(partial) < len(full) and full.startswith(partial)
    assert await page.js(f"return {LAST}.querySelector('.note').textContent", 0) == "Stopped."
    assert await page.js(
        "return [document.querySelector('#send').disabled, document.querySelector('#stop').disabled]"
    ) == [False, True]
    deadline = time.monotonic() + 5
    while (streams := (await stack.sim_state())["streams"])[-1]["status"] == "running":
        assert time.monotonic() < deadline, streams
        await asyncio.sleep(0.05)
    assert streams[-1]["status"] == "client_closed"
    await asyncio.sleep(0.4)
    assert await _answer(page, 0) == partial


async def test_attachments_go_as_image_and_file_parts(stack_factory: StackFactory, browser: Browser) -> None:
    """An attached image goes as an `image_url` data URL and a document as a `file` part: the simulator
    receives both files' exact bytes and the answer names them."""
    stack = await stack_factory()
    await stack.add("refresh_token")
    page = await _open(stack, browser, "kimi")
    png, notes = _png(), b"Meeting notes: ship the pages.\n"
    files = [["dot.png", "image/png", base64.b64encode(png).decode()]]
    files.append(["notes.txt", "text/plain", base64.b64encode(notes).decode()])
    await page.js(ATTACH, files)
    await page.wait_js("return document.querySelectorAll('#attachments li').length === 2")
    assert await page.js(
        "return document.querySelector('#attachments img').src.startsWith('data:image/png;base64,')"
    )
    await _say(page, "what is attached", 0)
    uploads = [u.record() for u in stack.sim.state.uploads]
    assert sorted((u["sha256"], u["size"]) for u in uploads) == sorted(
        (hashlib.sha256(data).hexdigest(), len(data)) for data in (png, notes)
    )
    kinds = {u["sha256"]: u["kind"] for u in uploads}
    assert kinds[hashlib.sha256(png).hexdigest()] == "image"
    referenced = [(u["name"], u["size"], u["sha256"]) for u in uploads]
    assert await _answer(page, 0) == answer_for("what is attached") + attachments_note(referenced)
    assert [u["name"] for u in uploads][1] == "notes.txt"
    assert await page.js("return document.querySelectorAll('#attachments li').length") == 0
    assert "Attached: dot.png, notes.txt" in await page.text("article.msg.user")
