"""Content sniffing and the intake: real types from bytes, labels checked, caps, names, parts in their places."""

from __future__ import annotations

import io
import zipfile
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from prometheus_client import REGISTRY

from gateway.attachments.fetch import FetchRefused, open_fetcher
from gateway.attachments.intake import AttachmentIntake, AttachmentLimits, attachment_name
from gateway.attachments.sniff import DOCX, PPTX, XLSX, Sniffed, agrees, sniff
from shared.attachment_input import AttachmentInput
from shared.attachments import digest
from shared.errors import BadRequest, PayloadTooLarge
from shared.schema import AttachmentPart, ChatRequest, Message, TextPart
from shared.settings import AttachmentSettings
from tests.attachment_servers import JUNK, PDF, PNG, FileServer
from tests.attachment_servers import file_server as file_server  # the fixture

JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + b"\x01" * 20
GIF = b"GIF89a" + b"\x01" * 20
WEBP = b"RIFF\x24\x00\x00\x00WEBPVP8 " + b"\x01" * 20
LIMITS = AttachmentLimits(max_image_bytes=100, max_file_bytes=200, max_request_bytes=300, max_count=3)


def office(marker: str) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("[Content_Types].xml", "<Types/>")
        archive.writestr(marker, "<x/>")
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("data", "declared", "expected"),
    [
        (PNG, None, Sniffed("image/png", "image", "png")),
        (JPEG, "image/jpeg", Sniffed("image/jpeg", "image", "jpg")),
        (b"\xff\xd8\xff\xdb" + b"\x00" * 8, None, Sniffed("image/jpeg", "image", "jpg")),
        (GIF, None, Sniffed("image/gif", "image", "gif")),
        (b"GIF87a" + b"\x00" * 8, None, Sniffed("image/gif", "image", "gif")),
        (WEBP, None, Sniffed("image/webp", "image", "webp")),
        (PDF, "image/png", Sniffed("application/pdf", "file", "pdf")),
        (office("word/document.xml"), None, Sniffed(DOCX, "file", "docx")),
        (office("xl/workbook.xml"), None, Sniffed(XLSX, "file", "xlsx")),
        (office("ppt/presentation.xml"), None, Sniffed(PPTX, "file", "pptx")),
        ("你好, world\n".encode(), None, Sniffed("text/plain", "file", "txt")),
        (b"a,b\n1,2\n", "text/csv; charset=utf-8", Sniffed("text/csv", "file", "csv")),
        (b'{"a": 1}', "application/json", Sniffed("application/json", "file", "json")),
        (b"# Title\n", "application/x-unknown", Sniffed("text/plain", "file", "txt")),
        (office("other.xml"), None, None),  # a ZIP that is no Office file
        (b"PK\x03\x04broken", None, None),
        (JUNK, "image/png", None),
        (b"\xc3\x28 not utf-8", None, None),
        (b"tab\there\x00nul", None, None),
        (b"", None, None),
        (b"RIFF\x24\x00\x00\x00WAVEfmt ", None, None),
    ],
)
def test_sniff_reads_the_bytes(data: bytes, declared: str | None, expected: Sniffed | None) -> None:
    """The magic bytes decide the type; the label only picks a text subtype; the rest is unsupported."""
    assert sniff(data, declared) == expected


@pytest.mark.parametrize(
    ("declared", "sniffed_mime", "ok"),
    [
        (None, "image/png", True),
        ("application/octet-stream", "application/pdf", True),
        ("image/png", "image/png", True),
        ("IMAGE/JPG", "image/jpeg", True),
        ("image/jpeg", "image/png", True),  # same family: a harmless slip, the bytes win
        ("image/png", "application/pdf", False),
        ("application/pdf", "image/png", False),
        ("application/pdf", "text/plain", False),
        ("text/markdown", "text/plain", True),
        ("text/plain", "image/png", False),
        ("application/zip", DOCX, True),
        ("application/msword", DOCX, False),
    ],
)
def test_declared_type_must_fit_the_family(declared: str | None, sniffed_mime: str, ok: bool) -> None:
    """A label of the bytes' family passes (the sniffed type travels on); another family is refused."""
    kind = "image" if sniffed_mime.startswith("image/") else "file"
    assert agrees(declared, Sniffed(sniffed_mime, kind, "x")) is ok  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("given", "mime", "expected"),
    [
        ("cat.png", "image/png", "cat.png"),
        ("cat.PNG", "image/png", "cat.PNG"),
        ("photo.jpeg", "image/jpeg", "photo.jpeg"),
        ("cat.jpg", "image/png", "cat.png"),
        ("report", "application/pdf", "report.pdf"),
        ("../../etc/passwd", "text/plain", "passwd.txt"),
        ("C:\\temp\\notes.md", "text/plain", "notes.md"),
        ("bad\x00name\n.pdf", "application/pdf", "bad_name_.pdf"),
        (None, "image/png", "image-{h}.png"),
        ("   ", "application/pdf", "document-{h}.pdf"),
        ("x" * 300 + ".pdf", "application/pdf", "x" * 116 + ".pdf"),
    ],
)
def test_attachment_names(given: str | None, mime: str, expected: str) -> None:
    """Names keep the client's base name, lose any path and control characters, and end in the right type."""
    ext = {"image/png": "png", "image/jpeg": "jpg", "application/pdf": "pdf", "text/plain": "txt"}[mime]
    kind = "image" if mime.startswith("image/") else "file"
    sha = "0123456789abcdef" * 4
    assert attachment_name(given, Sniffed(mime, kind, ext), sha) == expected.format(h="01234567")  # type: ignore[arg-type]


def request_of(*messages: Message) -> ChatRequest:
    return ChatRequest(request_id="r1", model="kimi", messages=list(messages))


def inline(data: bytes, param: str, index: int, position: int, **fields: object) -> AttachmentInput:
    return AttachmentInput(param=param, message_index=index, part_index=position, data=data, **fields)  # type: ignore[arg-type]


@pytest_asyncio.fixture
async def intake(file_server: FileServer) -> AsyncIterator[AttachmentIntake]:
    settings = AttachmentSettings(fetch_allow=(f"127.0.0.1:{file_server.port}",), fetch_timeout_s=2.0)
    async with open_fetcher(settings) as fetcher:
        yield AttachmentIntake(fetcher, LIMITS)


async def test_parts_go_back_in_place_with_their_bytes(
    intake: AttachmentIntake, file_server: FileServer
) -> None:
    """Inline and URL attachments become references in their recorded places; the same bytes are stored once."""
    request = request_of(
        Message(role="user", content=[TextPart("look"), TextPart("and")]),
        Message(role="assistant", content="a cat"),
        Message(role="user", content="again"),
    )
    inputs = [
        inline(PNG, "messages[0].content[1]", 0, 1, kind="image", mime="image/jpeg", name="cat.png"),
        AttachmentInput(
            param="messages[0].content[3]", message_index=0, part_index=3, url=f"{file_server.url}/doc.pdf"
        ),
        inline(PNG, "messages[2].content[0]", 2, 0, kind="image"),
    ]
    taken = await intake.take(request, inputs)
    png = AttachmentPart(
        sha256=digest(PNG), mime="image/png", name="cat.png", size=len(PNG), kind="image", source="inline"
    )
    pdf = AttachmentPart(
        sha256=digest(PDF), mime="application/pdf", name="doc.pdf", size=len(PDF), kind="file", source="url"
    )
    again = AttachmentPart(
        sha256=digest(PNG),
        mime="image/png",
        name=f"image-{digest(PNG)[:8]}.png",
        size=len(PNG),
        kind="image",
        source="inline",
    )
    assert taken.request.messages == [
        Message(role="user", content=[TextPart("look"), png, TextPart("and"), pdf]),
        Message(role="assistant", content="a cat"),
        Message(role="user", content=[again, TextPart("again")]),
    ]
    assert taken.blobs == {digest(PNG): PNG, digest(PDF): PDF}
    assert taken.request.request_id == "r1"


async def test_no_inputs_leave_the_request_alone(intake: AttachmentIntake) -> None:
    """A request without attachments comes back as it was, with nothing to store."""
    request = request_of(Message(role="user", content="hi"))
    taken = await intake.take(request, [])
    assert taken.request is request and taken.blobs == {}


@pytest.mark.parametrize(
    ("item", "error", "message"),
    [
        (
            inline(PDF, "p", 0, 0, kind="image"),
            BadRequest,
            "p: an image part must hold a PNG, JPEG, GIF or WebP image, not application/pdf",
        ),
        (
            inline(PDF, "p", 0, 0, mime="image/png"),
            BadRequest,
            "p: the attachment is declared as image/png but its bytes are application/pdf",
        ),
        (
            inline(JUNK, "p", 0, 0, mime="image/png"),
            BadRequest,
            "p: the attachment is not a supported type (PNG, JPEG, GIF or WebP images; PDF, Word, Excel, "
            "PowerPoint or UTF-8 text documents)",
        ),
        (
            inline(PNG + b"\x00" * 100, "p", 0, 0),
            PayloadTooLarge,
            "p: the image is 180 bytes; the limit is 100 bytes per image",
        ),
        (
            inline(PDF + b" " * 200, "p", 0, 0),
            PayloadTooLarge,
            "p: the document is 251 bytes; the limit is 200 bytes per document",
        ),
        (
            AttachmentInput(param="p", message_index=0, part_index=0),
            BadRequest,
            "p: the attachment has neither data nor a URL",
        ),
    ],
)
async def test_refusals_name_the_part(
    intake: AttachmentIntake, item: AttachmentInput, error: type[BadRequest], message: str
) -> None:
    """Wrong family, wrong label, unsupported bytes and sizes over the per-kind caps are refused for the part."""
    with pytest.raises(error) as caught:
        await intake.take(request_of(Message(role="user", content="x")), [item])
    assert type(caught.value) is error and caught.value.message == message and caught.value.param == "p"


async def test_request_caps_count_distinct_bytes(intake: AttachmentIntake) -> None:
    """Repeats of the same bytes are free; the request's byte total and count caps apply to distinct ones."""
    request = request_of(Message(role="user", content="x"))
    texts = [f"text number {n}".encode() * 5 for n in range(4)]
    repeats = [inline(texts[0], f"p{n}", 0, n) for n in range(6)]
    assert len((await intake.take(request, repeats)).blobs) == 1
    with pytest.raises(BadRequest) as caught:
        await intake.take(request, [inline(t, f"p{n}", 0, n) for n, t in enumerate(texts)])
    assert caught.value.message == "p3: a request may carry at most 3 attachments"
    large = [inline(bytes([65 + n]) * 150, f"p{n}", 0, n) for n in range(3)]
    with pytest.raises(PayloadTooLarge) as too_large:
        await intake.take(request, large)
    assert (
        too_large.value.message
        == "p2: the attachments add up to 450 bytes or more; the limit is 300 bytes per request"
    )


async def test_url_attachments_are_sniffed_too(intake: AttachmentIntake, file_server: FileServer) -> None:
    """Fetched bytes that are no supported type are refused and counted as an `unsupported_type` refusal;
    an image part whose URL is bigger than the image cap stops at that cap."""
    before = (
        REGISTRY.get_sample_value(
            "kimi_gateway_attachment_fetch_refusals_total", {"reason": "unsupported_type"}
        )
        or 0.0
    )
    junk = AttachmentInput(
        param="q", message_index=0, part_index=0, kind="image", url=f"{file_server.url}/junk.bin"
    )
    with pytest.raises(BadRequest, match="not a supported type"):
        await intake.take(request_of(Message(role="user", content="x")), [junk])
    after = REGISTRY.get_sample_value(
        "kimi_gateway_attachment_fetch_refusals_total", {"reason": "unsupported_type"}
    )
    assert after == before + 1
    big = AttachmentInput(
        param="q", message_index=0, part_index=0, kind="image", url=f"{file_server.url}/streamed-big"
    )
    with pytest.raises(PayloadTooLarge, match="larger than 100 bytes, its limit"):
        await intake.take(request_of(Message(role="user", content="x")), [big])
    refused = AttachmentInput(param="q", message_index=0, part_index=0, url="http://10.0.0.1/a.pdf")
    with pytest.raises(FetchRefused):
        await intake.take(request_of(Message(role="user", content="x")), [refused])
