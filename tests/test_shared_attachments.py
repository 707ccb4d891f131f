"""Attachment bytes in Redis per job, the request's attachment list, and the adapters' strict decoders."""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis

from shared import keys
from shared.attachment_input import decode_base64, decode_data_url
from shared.attachments import AttachmentStore, attachment_ttl_s, digest, request_attachments
from shared.errors import BadRequest, ServiceUnavailable
from shared.schema import AttachmentPart, Message, TextPart

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 8
PDF = b"%PDF-1.7\n%%EOF\n"


def part(data: bytes, name: str) -> AttachmentPart:
    kind = "image" if name.endswith(".png") else "file"
    mime = "image/png" if kind == "image" else "application/pdf"
    return AttachmentPart(
        sha256=digest(data), mime=mime, name=name, size=len(data), kind=kind, source="inline"
    )


async def test_store_keeps_each_jobs_bytes_apart_with_a_ttl(redis: aioredis.Redis) -> None:
    """Two jobs' bytes live under their own keys with the TTL; deleting one job leaves the other's intact."""
    store = AttachmentStore(redis)
    await store.put("j1", {digest(PNG): PNG, digest(PDF): PDF})
    await store.put("j2", {digest(PNG): PNG}, ttl_s=1234)
    assert await store.get("j1", digest(PDF)) == PDF
    assert 0 < await redis.ttl(keys.attachments_key("j1")) <= keys.ATTACHMENT_TTL_S
    assert 1200 < await redis.ttl(keys.attachments_key("j2")) <= 1234
    await store.delete("j1")
    assert await redis.exists(keys.attachments_key("j1")) == 0
    assert await store.get("j2", digest(PNG)) == PNG


async def test_store_answers_503_for_bytes_that_are_gone(redis: aioredis.Redis) -> None:
    """Reading bytes whose key expired or was deleted is a 503 asking to send the request again."""
    store = AttachmentStore(redis)
    with pytest.raises(ServiceUnavailable, match="no longer held"):
        await store.get("j-gone", digest(PNG))
    await store.put("j-empty", {})
    assert await redis.exists(keys.attachments_key("j-empty")) == 0


def test_attachment_key_shares_the_jobs_hash_tag() -> None:
    """The bytes' key carries the job's `{id}` hash tag, as its reply key does."""
    assert keys.attachments_key("abc") == "kimi:att:{abc}"
    assert keys.reply_key("abc").endswith("{abc}")
    assert keys.upload_cache_key("rest", "a1", "ff") == "kimi:upload:{rest:a1}:ff"


def test_ttl_covers_longer_request_timeouts() -> None:
    """The default TTL covers the default timeout; a longer timeout stretches it past the reply TTL."""
    assert attachment_ttl_s(600.0) == keys.ATTACHMENT_TTL_S
    assert attachment_ttl_s(3600.5) == 3601 + keys.REPLY_TTL_S


def test_request_attachments_lists_each_hash_once_in_order() -> None:
    """The same image in turns 1 and 3 of a history is listed once, before the PDF of turn 2."""
    image, pdf = part(PNG, "a.png"), part(PDF, "b.pdf")
    messages = [
        Message(role="user", content=[TextPart("look"), image]),
        Message(role="assistant", content="ok"),
        Message(role="user", content=[pdf]),
        Message(role="user", content=[image, TextPart("again")]),
    ]
    assert request_attachments(messages) == [image, pdf]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("aGVsbG8=", b"hello"),
        ("aGVsbG8", b"hello"),  # padding optional
        ("aGVs\nbG8=\n", b"hello"),  # line breaks ignored
        ("_-8=", b"\xff\xef"),  # URL-safe alphabet
        ("/+8=", b"\xff\xef"),
    ],
)
def test_decode_base64_accepts_both_alphabets(text: str, expected: bytes) -> None:
    """Standard and URL-safe base64 decode, with or without padding and line breaks."""
    assert decode_base64(text, "p") == expected


@pytest.mark.parametrize("text", ["", "   ", "aGVsbG8*", "a"])
def test_decode_base64_refuses_garbage_naming_the_part(text: str) -> None:
    """Empty or invalid base64 is a 400 whose message and param name the part."""
    with pytest.raises(BadRequest) as caught:
        decode_base64(text, "messages[0].content[1]")
    assert caught.value.param == "messages[0].content[1]"
    assert caught.value.message.startswith("messages[0].content[1]: the attachment's data is")


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("data:image/png;base64,iVBORw0KGgo=", (b"\x89PNG\r\n\x1a\n", "image/png")),
        ("DATA:Application/PDF;name=a.pdf;BASE64,JVBERi0=", (b"%PDF-", "application/pdf")),
        ("data:,hello%20world", (b"hello world", None)),
        ("data:text/plain;charset=utf-8,%E4%BD%A0%E5%A5%BD", ("你好".encode(), "text/plain")),
    ],
)
def test_decode_data_url(url: str, expected: tuple[bytes, str | None]) -> None:
    """Data URLs give their bytes and declared type, base64 or percent-encoded."""
    assert decode_data_url(url, "p") == expected


@pytest.mark.parametrize("url", ["https://a.example/x.png", "data:image/png;base64", "data:image/png,"])
def test_decode_data_url_refuses_non_data_urls(url: str) -> None:
    """Anything but a data URL with data is a 400 naming the part."""
    with pytest.raises(BadRequest) as caught:
        decode_data_url(url, "contents[0].parts[1]")
    assert caught.value.param == "contents[0].parts[1]"
