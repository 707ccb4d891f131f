"""The gateway in-process on a real Redis: attachments taken in before the job, their bytes stored, body caps."""

from __future__ import annotations

import base64
import dataclasses
import json
from typing import Any

import pytest_asyncio
import redis.asyncio as aioredis
from aiohttp.test_utils import TestClient

from gateway.app import create_app
from shared.attachments import digest
from shared.keys import attachments_key
from shared.schema import AttachmentPart, Done, TextDelta, TextPart
from shared.settings import AttachmentSettings, CommonSettings, GatewaySettings
from tests.attachment_servers import PDF, PNG
from tests.test_gateway_relay import ClientFactory, announce_worker, worker

KB = 1024


@pytest_asyncio.fixture
async def gateway(redis_url: str, aiohttp_client: Any, redis: aioredis.Redis) -> ClientFactory:
    """`await gateway(**attachment_overrides)` → a gateway with a 4 KiB plain body cap."""
    await announce_worker(redis)

    async def factory(**overrides: Any) -> TestClient[Any, Any]:
        settings = GatewaySettings(
            common=CommonSettings(redis_url=redis_url),
            attachments=dataclasses.replace(AttachmentSettings(), **overrides),
            max_body_bytes=4 * KB,
            idle_timeout_s=2.0,
            request_timeout_s=5.0,
        )
        client: TestClient[Any, Any] = await aiohttp_client(create_app(settings))
        return client

    return factory


def _openai(*parts: dict[str, Any]) -> dict[str, Any]:
    return {
        "model": "kimi",
        "messages": [{"role": "user", "content": [*parts, {"type": "text", "text": "what?"}]}],
    }


def _image(data: bytes) -> dict[str, Any]:
    return {
        "type": "image_url",
        "image_url": {"url": "data:image/png;base64," + base64.b64encode(data).decode()},
    }


async def test_inline_image_reaches_the_job_by_reference(
    gateway: ClientFactory, redis: aioredis.Redis
) -> None:
    """The job carries an AttachmentPart in the part's place and Redis holds its bytes under the job's key."""
    client = await gateway()
    task = worker(redis, [TextDelta("a cat"), Done()])
    resp = await client.post("/v1/chat/completions", json=_openai(_image(PNG)))
    assert resp.status == 200 and (await resp.json())["choices"][0]["message"]["content"] == "a cat"
    job = await task
    part = AttachmentPart(
        digest(PNG), "image/png", f"image-{digest(PNG)[:8]}.png", len(PNG), "image", "inline"
    )
    assert job.request.messages[0].content == [part, TextPart("what?")]
    assert await redis.hgetall(attachments_key(job.request.request_id)) == {digest(PNG).encode(): PNG}


async def test_body_over_the_plain_cap_needs_attachments(
    gateway: ClientFactory, redis: aioredis.Redis
) -> None:
    """Above MAX_BODY_BYTES a body of text is a 413; one whose bulk is an attachment is taken."""
    client = await gateway()
    text = {"model": "kimi", "messages": [{"role": "user", "content": "x" * 5 * KB}]}
    resp = await client.post("/v1/chat/completions", json=text)
    assert resp.status == 413
    assert (await resp.json())["error"]["code"] == "request_too_large"
    resp = await client.post("/v1/chat/completions", data=b"x" * 5 * KB)
    assert resp.status == 413
    big_pdf = PDF + b" " * 6 * KB
    task = worker(redis, [TextDelta("ok"), Done()])
    file = {"type": "file", "file": {"file_data": base64.b64encode(big_pdf).decode(), "filename": "r.pdf"}}
    resp = await client.post("/v1/chat/completions", json=_openai(file))
    assert resp.status == 200
    job = await task
    assert await redis.hget(attachments_key(job.request.request_id), digest(big_pdf)) == big_pdf


async def test_errors_come_in_each_dialects_shape(gateway: ClientFactory, redis: aioredis.Redis) -> None:
    """An oversize image is a 413 and bytes of no supported type a 400, each in the caller's dialect."""
    client = await gateway(max_image_bytes=32)
    resp = await client.post("/v1/chat/completions", json=_openai(_image(PNG)))
    assert resp.status == 413
    assert (await resp.json())["error"] == {
        "message": "messages[0].content[0]: the image is 80 bytes; the limit is 32 bytes per image",
        "type": "invalid_request_error",
        "param": "messages[0].content[0]",
        "code": "request_too_large",
    }
    block = {
        "type": "image",
        "source": {"type": "base64", "media_type": "image/png", "data": base64.b64encode(PNG).decode()},
    }
    body = {
        "model": "kimi",
        "max_tokens": 9,
        "messages": [{"role": "user", "content": [block, {"type": "text", "text": "?"}]}],
    }
    resp = await client.post("/v1/messages", json=body)
    assert resp.status == 413
    assert (await resp.json())["error"]["type"] == "request_too_large"
    junk = {
        "inlineData": {"mimeType": "application/pdf", "data": base64.b64encode(b"\x00\xfe junk").decode()}
    }
    body = {"contents": [{"role": "user", "parts": [{"text": "?"}, junk]}]}
    resp = await client.post("/v1beta/models/kimi:generateContent", json=body)
    assert resp.status == 400
    error = (await resp.json())["error"]
    assert (error["status"], error["code"]) == ("INVALID_ARGUMENT", 400)
    assert error["message"].startswith("contents[0].parts[1]: the attachment is not a supported type")
    assert json.dumps(await redis.keys("kimi:att:*")) == "[]"
