"""Images and PDFs end to end through the official SDKs: real Redis, the simulator, the gateway and a worker.

Every request carries two images and two PDFs, one of each inline (base64) and one behind a URL served by a
loopback file server the gateway is allowed to fetch from. The simulator records each upload's sha256 and
its answer names every file the turn referenced, so both prove the bytes arrived unchanged.
"""

from __future__ import annotations

import asyncio
import base64
import struct
import zlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import anthropic
import openai
import pytest
import pytest_asyncio
from aiohttp import web
from google import genai
from google.genai import errors as genai_errors
from google.genai import types

from kimi_sim.answers import answer_for, attachments_note
from shared.attachments import digest
from shared.settings import AttachmentSettings, UpstreamTimeouts
from tests.stack import Stack, StackFactory, stack_factory
from upstream_worker.kimi.flatten import FOCUS_LATEST_WITH_FILES

__all__ = ["stack_factory"]

pytestmark = pytest.mark.filterwarnings("ignore:Inheritance class AiohttpClientSession:DeprecationWarning")

PROMPT = "Describe these files."
#: (account kind, model): a REST (refresh_token) and a Connect (kimi-auth) account.
LANES = [("refresh_token", "kimi"), ("kimi_auth", "kimi-k2.5-instant")]


def png(rgb: tuple[int, int, int]) -> bytes:
    """A valid 1×1 RGB PNG of one colour."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)
    pixels = zlib.compress(b"\x00" + bytes(rgb))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")


def pdf(text: str) -> bytes:
    """A valid one-page PDF showing `text`, with a correct cross-reference table."""
    stream = f"BT /F1 12 Tf 20 50 Td ({text}) Tj ET".encode()
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 200 100] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n%s\nendstream" % (len(stream), stream),
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)


RED, BLUE = png((255, 0, 0)), png((0, 0, 255))
MEMO, REPORT = pdf("memo"), pdf("quarterly report")


@dataclass
class Files:
    """The loopback file server: `url(name)`; it serves blue.png and report.pdf."""

    base: str
    port: int

    def url(self, name: str) -> str:
        return f"{self.base}/{name}"


@pytest_asyncio.fixture
async def files() -> AsyncIterator[Files]:
    async def blue(request: web.Request) -> web.Response:
        return web.Response(body=BLUE, content_type="image/png")

    async def report(request: web.Request) -> web.Response:
        return web.Response(body=REPORT, content_type="application/pdf")

    app = web.Application()
    app.add_routes([web.get("/blue.png", blue), web.get("/report.pdf", report)])
    runner = web.AppRunner(app, shutdown_timeout=0.1, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    yield Files(f"http://127.0.0.1:{port}", port)
    await runner.cleanup()


async def start(stack_factory: StackFactory, files: Files, kind: str, **limits: Any) -> Stack:
    allow = AttachmentSettings(fetch_allow=(f"127.0.0.1:{files.port}",), **limits)
    stack = await stack_factory(attachments=allow)
    await stack.add(kind)
    return stack


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def expected_answer(dialect: str) -> str:
    """The simulator's answer: the prompt's, then every file in the order of the parts (the SDK's Gemini
    blob has no file name, so the gateway names it after its hash)."""
    memo = f"document-{digest(MEMO)[:8]}.pdf" if dialect == "gemini" else "memo.pdf"
    names = [
        (f"image-{digest(RED)[:8]}.png", RED),
        ("blue.png", BLUE),
        (memo, MEMO),
        ("report.pdf", REPORT),
    ]
    return answer_for(PROMPT) + attachments_note([(n, len(d), digest(d)) for n, d in names])


async def uploaded(stack: Stack) -> list[str]:
    """The sha256 of every upload the simulator received, in order."""
    return [record["sha256"] for record in (await stack.sim_state())["uploads"]]


async def held_bytes(stack: Stack) -> list[bytes]:
    """The attachment keys left in Redis once the job has ended (the worker deletes them after the reply's
    end, so the client may read the answer a moment before)."""
    for _ in range(100):
        left: list[bytes] = await stack.redis.keys("kimi:att:*")
        if not left:
            break
        await asyncio.sleep(0.02)
    return left


# ---------------------------------------------------------------- the three dialects' requests


def openai_content(files: Files) -> list[dict[str, Any]]:
    return [
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{b64(RED)}"}},
        {"type": "image_url", "image_url": {"url": files.url("blue.png")}},
        {"type": "file", "file": {"file_data": f"data:application/pdf;base64,{b64(MEMO)}", "filename": "memo.pdf"}},
        {"type": "file", "file_url": {"url": files.url("report.pdf")}},
        {"type": "text", "text": PROMPT},
    ]  # fmt: skip


def anthropic_content(files: Files) -> list[dict[str, Any]]:
    return [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": b64(RED)}},
        {"type": "image", "source": {"type": "url", "url": files.url("blue.png")}},
        {"type": "document", "title": "memo.pdf", "source": {"type": "base64", "media_type": "application/pdf", "data": b64(MEMO)}},
        {"type": "document", "source": {"type": "url", "url": files.url("report.pdf")}},
        {"type": "text", "text": PROMPT},
    ]  # fmt: skip


def gemini_parts(files: Files) -> list[types.Part]:
    return [
        types.Part.from_bytes(data=RED, mime_type="image/png"),
        types.Part.from_uri(file_uri=files.url("blue.png"), mime_type="image/png"),
        types.Part.from_bytes(data=MEMO, mime_type="application/pdf"),
        types.Part.from_uri(file_uri=files.url("report.pdf"), mime_type="application/pdf"),
        types.Part.from_text(text=PROMPT),
    ]


async def ask_openai(stack: Stack, files: Files, model: str, stream: bool) -> str:
    client = openai.AsyncOpenAI(base_url=f"{stack.url}/v1", api_key="sk-local", max_retries=0, timeout=30)
    messages: Any = [{"role": "user", "content": openai_content(files)}]
    try:
        if not stream:
            completion = await client.chat.completions.create(model=model, messages=messages)
            return completion.choices[0].message.content or ""
        text = ""
        async for chunk in await client.chat.completions.create(model=model, messages=messages, stream=True):
            text += (chunk.choices[0].delta.content or "") if chunk.choices else ""
        return text
    finally:
        await client.close()


async def ask_anthropic(stack: Stack, files: Files, model: str, stream: bool) -> str:
    client = anthropic.AsyncAnthropic(base_url=stack.url, api_key="sk-local", max_retries=0, timeout=30)
    messages: Any = [{"role": "user", "content": anthropic_content(files)}]
    try:
        if not stream:
            message = await client.messages.create(model=model, max_tokens=1024, messages=messages)
            return "".join(block.text for block in message.content if block.type == "text")
        async with client.messages.stream(model=model, max_tokens=1024, messages=messages) as events:
            return "".join([text async for text in events.text_stream])
    finally:
        await client.close()


def gemini_client(stack: Stack) -> genai.Client:
    return genai.Client(api_key="local", http_options=types.HttpOptions(base_url=stack.url, timeout=30_000))


async def ask_gemini(stack: Stack, files: Files, model: str, stream: bool) -> str:
    client = gemini_client(stack)
    contents = [types.Content(role="user", parts=gemini_parts(files))]
    try:
        if not stream:
            response = await client.aio.models.generate_content(model=model, contents=contents)
            return response.text or ""
        chunks = await client.aio.models.generate_content_stream(model=model, contents=contents)
        return "".join([chunk.text or "" async for chunk in chunks])
    finally:
        await client.aio.aclose()
        client.close()


ASK = {"openai": ask_openai, "anthropic": ask_anthropic, "gemini": ask_gemini}


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
@pytest.mark.parametrize(("kind", "model"), LANES, ids=["rest", "connect"])
@pytest.mark.parametrize("dialect", list(ASK))
async def test_images_and_pdfs_reach_kimi_byte_for_byte(
    stack_factory: StackFactory, files: Files, dialect: str, kind: str, model: str, stream: bool
) -> None:
    """Two images and two PDFs, inline and by URL, are uploaded unchanged and the answer names each one."""
    stack = await start(stack_factory, files, kind)
    answer = await ASK[dialect](stack, files, model, stream)
    assert answer == expected_answer(dialect)
    assert await uploaded(stack) == [digest(RED), digest(BLUE), digest(MEMO), digest(REPORT)]
    assert await held_bytes(stack) == []


@pytest.mark.parametrize(("kind", "model"), LANES, ids=["rest", "connect"])
async def test_an_image_resent_in_history_is_uploaded_once(
    stack_factory: StackFactory, files: Files, kind: str, model: str
) -> None:
    """The same image in turns 1 and 3 of a history, over two requests, is uploaded once per account."""
    stack = await start(stack_factory, files, kind)
    image = {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{b64(RED)}"}}
    first: Any = [{"role": "user", "content": [image, {"type": "text", "text": "What colour?"}]}]
    client = openai.AsyncOpenAI(base_url=f"{stack.url}/v1", api_key="sk-local", max_retries=0, timeout=30)
    try:
        reply = await client.chat.completions.create(model=model, messages=first)
        history: Any = [
            *first,
            {"role": "assistant", "content": reply.choices[0].message.content},
            {"role": "user", "content": [image, {"type": "text", "text": "And now?"}]},
        ]
        again = await client.chat.completions.create(model=model, messages=history)
    finally:
        await client.close()
    note = attachments_note([(f"image-{digest(RED)[:8]}.png", len(RED), digest(RED))])
    assert (again.choices[0].message.content or "").endswith(note)
    assert await uploaded(stack) == [digest(RED)]


@pytest.mark.parametrize(("kind", "model"), LANES, ids=["rest", "connect"])
async def test_an_image_sent_alone_is_answered(
    stack_factory: StackFactory, files: Files, kind: str, model: str
) -> None:
    """A turn of one image and no text reaches Kimi with the web chat's own request to look at the files the
    user just sent (Kimi takes no empty prompt), and the answer is about that image."""
    stack = await start(stack_factory, files, kind)
    image = {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{b64(RED)}"}}
    client = openai.AsyncOpenAI(base_url=f"{stack.url}/v1", api_key="sk-local", max_retries=0, timeout=30)
    try:
        reply = await client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": [image]}]
        )
    finally:
        await client.close()
    note = attachments_note([(f"image-{digest(RED)[:8]}.png", len(RED), digest(RED))])
    assert reply.choices[0].message.content == answer_for(FOCUS_LATEST_WITH_FILES) + note
    assert await uploaded(stack) == [digest(RED)]


@pytest.mark.parametrize(("kind", "model"), LANES, ids=["rest", "connect"])
async def test_an_image_in_a_tool_result_reaches_kimi(
    stack_factory: StackFactory, files: Files, kind: str, model: str
) -> None:
    """Claude Code's Read of a PNG comes back as an image block inside a tool_result: Kimi gets its bytes as an
    attachment of the turn, named where it stood in the result (the simulator echoes the results it got)."""
    stack = await start(stack_factory, files, kind)
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": b64(RED)}}
    read = {
        "name": "Read",
        "description": "Read a file",
        "input_schema": {"type": "object", "properties": {}},
    }
    messages: Any = [
        {"role": "user", "content": "What colour is logo.png?"},
        {
            "role": "assistant",
            "content": [{"type": "tool_use", "id": "toolu_1", "name": "Read", "input": {}}],
        },
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": [image]}]},
    ]
    client = anthropic.AsyncAnthropic(base_url=stack.url, api_key="sk-local", max_retries=0, timeout=30)
    try:
        message = await client.messages.create(model=model, max_tokens=1024, messages=messages, tools=[read])
    finally:
        await client.close()
    text = "".join(block.text for block in message.content if block.type == "text")
    name = f"image-{digest(RED)[:8]}.png"
    assert text == f"Tool results received. 工具结果如下：\nfunctions.Read:0 returned: [image: {name}]"
    assert await uploaded(stack) == [digest(RED)]


# ---------------------------------------------------------------- errors in each dialect's shape


async def test_oversize_and_unsupported_parts_in_openai_shape(
    stack_factory: StackFactory, files: Files
) -> None:
    """Over the image cap → 413 `request_too_large`; audio → 400 naming the part; nothing reaches Kimi."""
    stack = await start(stack_factory, files, "refresh_token", max_image_bytes=len(RED) - 1)
    client = openai.AsyncOpenAI(base_url=f"{stack.url}/v1", api_key="sk-local", max_retries=0, timeout=30)
    try:
        with pytest.raises(openai.APIStatusError) as too_large:
            await client.chat.completions.create(model="kimi", messages=[{"role": "user", "content": openai_content(files)}])  # type: ignore[misc,list-item]  # fmt: skip
        audio: Any = [{"type": "input_audio", "input_audio": {"data": b64(b"RIFF"), "format": "wav"}}, {"type": "text", "text": "?"}]  # fmt: skip
        with pytest.raises(openai.BadRequestError) as unsupported:
            await client.chat.completions.create(model="kimi", messages=[{"role": "user", "content": audio}])
    finally:
        await client.close()
    assert too_large.value.status_code == 413
    assert too_large.value.body == {
        "message": f"messages[0].content[0]: the image is {len(RED)} bytes; the limit is {len(RED) - 1} bytes per image",
        "type": "invalid_request_error",
        "param": "messages[0].content[0]",
        "code": "request_too_large",
    }  # fmt: skip
    assert unsupported.value.body == {
        "message": "Unsupported content part of type `input_audio`.",
        "type": "invalid_request_error",
        "param": "messages[0].content[0]",
        "code": None,
    }
    assert await uploaded(stack) == []


async def test_oversize_and_refused_url_in_anthropic_shape(stack_factory: StackFactory, files: Files) -> None:
    """Over the document cap → 413 `request_too_large`; a URL on a forbidden address → 400 saying why."""
    stack = await start(stack_factory, files, "kimi_auth", max_file_bytes=len(MEMO) - 1)
    client = anthropic.AsyncAnthropic(base_url=stack.url, api_key="sk-local", max_retries=0, timeout=30)
    memo = {
        "type": "document",
        "source": {"type": "base64", "media_type": "application/pdf", "data": b64(MEMO)},
    }
    private = {"type": "image", "source": {"type": "url", "url": "http://10.0.0.1/cat.png"}}
    try:
        with pytest.raises(anthropic.APIStatusError) as too_large:
            await client.messages.create(model="kimi", max_tokens=9, messages=[{"role": "user", "content": [memo, {"type": "text", "text": "?"}]}])  # type: ignore[list-item]  # fmt: skip
        with pytest.raises(anthropic.BadRequestError) as refused:
            await client.messages.create(model="kimi", max_tokens=9, messages=[{"role": "user", "content": [private, {"type": "text", "text": "?"}]}])  # type: ignore[list-item]  # fmt: skip
    finally:
        await client.close()
    assert too_large.value.status_code == 413
    assert too_large.value.body["error"] == {  # type: ignore[index]
        "type": "request_too_large",
        "message": f"messages.0.content.0: the document is {len(MEMO)} bytes; the limit is {len(MEMO) - 1} bytes per document",
    }  # fmt: skip
    assert refused.value.body["error"] == {  # type: ignore[index]
        "type": "invalid_request_error",
        "message": "messages.0.content.0: the URL's host is not a public address the gateway may fetch from, "
        "or does not resolve",
    }
    assert await uploaded(stack) == []


async def test_unsupported_and_mislabelled_parts_in_gemini_shape(
    stack_factory: StackFactory, files: Files
) -> None:
    """Audio → 400 INVALID_ARGUMENT naming the part; a PDF declared as a PNG → 400 saying what the bytes are;
    an image over its cap → 413."""
    stack = await start(stack_factory, files, "kimi_auth", max_image_bytes=len(RED) - 1)
    client = gemini_client(stack)
    audio = [types.Part.from_bytes(data=b"RIFF", mime_type="audio/wav"), types.Part.from_text(text="?")]
    fake = [types.Part.from_bytes(data=MEMO, mime_type="image/png"), types.Part.from_text(text="?")]
    big = [types.Part.from_text(text="?"), types.Part.from_bytes(data=RED, mime_type="image/png")]
    try:
        with pytest.raises(genai_errors.ClientError) as too_large:
            await client.aio.models.generate_content(
                model="kimi", contents=[types.Content(role="user", parts=big)]
            )
        with pytest.raises(genai_errors.ClientError) as unsupported:
            await client.aio.models.generate_content(
                model="kimi", contents=[types.Content(role="user", parts=audio)]
            )
        with pytest.raises(genai_errors.ClientError) as mislabelled:
            await client.aio.models.generate_content(
                model="kimi", contents=[types.Content(role="user", parts=fake)]
            )
    finally:
        await client.aio.aclose()
        client.close()
    assert (unsupported.value.code, unsupported.value.status) == (400, "INVALID_ARGUMENT")
    assert unsupported.value.message == (
        "contents[0].parts[0]: audio/wav is not supported; Kimi reads images and documents only"
    )
    assert (mislabelled.value.code, mislabelled.value.message) == (
        400,
        "contents[0].parts[0]: the attachment is declared as image/png but its bytes are application/pdf",
    )
    assert (too_large.value.code, too_large.value.status, too_large.value.message) == (
        413,
        "INVALID_ARGUMENT",
        f"contents[0].parts[1]: the image is {len(RED)} bytes; the limit is {len(RED) - 1} bytes per image",
    )
    assert await uploaded(stack) == []


# ---------------------------------------------------------------- Kimi's upload and parse failures


async def test_a_failed_upload_fails_over_to_another_account(
    stack_factory: StackFactory, files: Files
) -> None:
    """Kimi refusing the upload on the first account sends the turn to the second, which uploads and answers."""
    stack = await start(stack_factory, files, "refresh_token")
    await stack.add("refresh_token")
    await stack.arm("upload_failed")
    answer = await ask_openai(stack, files, "kimi", stream=True)
    assert answer == expected_answer("openai")
    assert await uploaded(stack) == [digest(RED), digest(BLUE), digest(MEMO), digest(REPORT)]
    assert len({record["account"] for record in (await stack.sim_state())["uploads"]}) == 1


async def test_a_file_kimi_cannot_read_is_a_502_in_anthropic_shape(
    stack_factory: StackFactory, files: Files
) -> None:
    """A failed parse is a 502 `api_error` (no failover: another account would read it no better)."""
    stack = await start(stack_factory, files, "kimi_auth")
    await stack.add("kimi_auth")
    await stack.arm("parse_failed")
    with pytest.raises(anthropic.APIStatusError) as caught:
        await ask_anthropic(stack, files, "kimi-k2.5-instant", stream=False)
    assert caught.value.status_code == 502
    assert caught.value.body["error"]["type"] == "api_error"  # type: ignore[index]
    assert len((await stack.sim_state())["uploads"]) == 1


async def test_a_parse_over_its_bound_is_a_504_in_gemini_shape(
    stack_factory: StackFactory, files: Files
) -> None:
    """A parse that never ends is cut at KIMI_PARSE_TIMEOUT_S: 504 DEADLINE_EXCEEDED."""
    timeouts = UpstreamTimeouts(connect_s=2.0, first_byte_s=30.0, idle_s=30.0, parse_s=0.5)
    allow = AttachmentSettings(fetch_allow=(f"127.0.0.1:{files.port}",))
    stack = await stack_factory(attachments=allow, worker_overrides={"timeouts": timeouts})
    await stack.add("refresh_token")
    await stack.arm("parse_stalled")
    with pytest.raises(genai_errors.ServerError) as caught:
        await ask_gemini(stack, files, "kimi", stream=False)
    assert (caught.value.code, caught.value.status) == (504, "DEADLINE_EXCEEDED")


@pytest.mark.parametrize(("kind", "model"), LANES, ids=["rest", "connect"])
async def test_a_file_kimi_forgot_is_uploaded_again(
    stack_factory: StackFactory, files: Files, kind: str, model: str
) -> None:
    """A cached upload Kimi no longer holds is forgotten and the turn tried once more, uploading it again."""
    stack = await start(stack_factory, files, kind)
    image = {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{b64(RED)}"}}
    messages: Any = [{"role": "user", "content": [image, {"type": "text", "text": PROMPT}]}]
    note = attachments_note([(f"image-{digest(RED)[:8]}.png", len(RED), digest(RED))])
    client = openai.AsyncOpenAI(base_url=f"{stack.url}/v1", api_key="sk-local", max_retries=0, timeout=30)
    try:
        await client.chat.completions.create(model=model, messages=messages)
        stack.sim.state.files.clear()
        again = await client.chat.completions.create(model=model, messages=messages)
    finally:
        await client.close()
    assert again.choices[0].message.content == answer_for(PROMPT) + note
    assert await uploaded(stack) == [digest(RED), digest(RED)]
