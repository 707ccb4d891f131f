"""The real type of an attachment, from its bytes (tools-and-attachments.md §8.4), never from its label.

Supported: the four image types every dialect and Kimi read (PNG, JPEG, GIF, WebP) and the documents Kimi
reads (PDF; Word, Excel and PowerPoint files; UTF-8 text such as plain text, Markdown, CSV, JSON, code).
Office files are ZIP archives; which one is told by the parts their central directory lists (no member is
decompressed). Text has no magic number: it is UTF-8 without NUL or other binary control bytes.
"""

from __future__ import annotations

import io
import re
import zipfile
from dataclasses import dataclass

from shared.schema import AttachmentKind

DOCX = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
PPTX = "application/vnd.openxmlformats-officedocument.presentationml.presentation"
#: Said in refusals: what a client may send.
SUPPORTED = "PNG, JPEG, GIF or WebP images; PDF, Word, Excel, PowerPoint or UTF-8 text documents"

#: Labels that say nothing about the type: the bytes decide alone.
_GENERIC = frozenset({"", "application/octet-stream", "binary/octet-stream", "application/unknown"})
_ALIASES = {"image/jpg": "image/jpeg", "image/pjpeg": "image/jpeg", "application/x-pdf": "application/pdf"}
_OOXML = (
    (DOCX, "word/document.xml", "docx"),
    (XLSX, "xl/workbook.xml", "xlsx"),
    (PPTX, "ppt/presentation.xml", "pptx"),
)
_ZIP_LABELS = frozenset({"application/zip", "application/x-zip-compressed"})
#: Text types kept as declared (anything else that decodes as text becomes text/plain), with their extension.
_TEXT_TYPES = {
    "text/plain": "txt",
    "text/markdown": "md",
    "text/x-markdown": "md",
    "text/csv": "csv",
    "text/tab-separated-values": "tsv",
    "text/html": "html",
    "text/xml": "xml",
    "application/xml": "xml",
    "application/json": "json",
    "application/x-yaml": "yaml",
    "text/x-python": "py",
    "text/javascript": "js",
    "application/javascript": "js",
}
#: Control bytes that never occur in text (tab, LF, VT, FF, CR and ESC aside).
_BINARY_CONTROL = re.compile(rb"[\x00-\x08\x0e-\x1a\x1c-\x1f\x7f]")


@dataclass(frozen=True, slots=True)
class Sniffed:
    mime: str
    kind: AttachmentKind
    #: The file name extension Kimi expects for this type.
    ext: str


def normalize_mime(declared: str | None) -> str:
    """A declared type without parameters, lower case, common aliases resolved; "" when absent."""
    base = (declared or "").split(";", 1)[0].strip().lower()
    return _ALIASES.get(base, base)


def sniff(data: bytes, declared: str | None = None) -> Sniffed | None:
    """The supported type of `data`, or None. `declared` only picks the subtype of text (CSV vs plain)."""
    head = data[:16]
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return Sniffed("image/png", "image", "png")
    if head.startswith(b"\xff\xd8\xff"):
        return Sniffed("image/jpeg", "image", "jpg")
    if head.startswith((b"GIF87a", b"GIF89a")):
        return Sniffed("image/gif", "image", "gif")
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        return Sniffed("image/webp", "image", "webp")
    if head.startswith(b"%PDF-"):
        return Sniffed("application/pdf", "file", "pdf")
    if head.startswith(b"PK\x03\x04"):
        return _office(data)
    return _text(data, normalize_mime(declared))


def agrees(declared: str | None, sniffed: Sniffed) -> bool:
    """Whether a client's declared type fits the bytes. The sniffed type is what travels on; a label of the
    same family (an image called image/jpeg that is a PNG, text called text/markdown) is a harmless slip, a
    label of another family (a "PNG" that is a PDF) is refused."""
    label = normalize_mime(declared)
    if label in _GENERIC or label == sniffed.mime:
        return True
    if label.startswith("image/"):
        return sniffed.kind == "image"
    if label.startswith("text/") or label in _TEXT_TYPES:
        return sniffed.mime in _TEXT_TYPES
    return label in _ZIP_LABELS and sniffed.mime in (DOCX, XLSX, PPTX)


def _office(data: bytes) -> Sniffed | None:
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            names = set(archive.namelist())
    except (zipfile.BadZipFile, ValueError, OSError):
        return None
    for mime, marker, ext in _OOXML:
        if marker in names:
            return Sniffed(mime, "file", ext)
    return None


def _text(data: bytes, declared: str) -> Sniffed | None:
    if not data or _BINARY_CONTROL.search(data):
        return None
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    mime = declared if declared in _TEXT_TYPES else "text/plain"
    return Sniffed(mime, "file", _TEXT_TYPES[mime])
