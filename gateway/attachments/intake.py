"""From an adapter's `AttachmentInput`s to a request with `AttachmentPart`s and the bytes to store.

For each input, in request order: fetch it when it is a URL (fetch.py), sniff its real type (sniff.py), check
the type against what the client declared and what the part promised, apply the caps (per image, per document,
per request, count; the same bytes twice count once), and name it for Kimi. Then every part goes into its
recorded place. Nothing is written anywhere: the caller stores `blobs` (shared.attachments.AttachmentStore)
under the job's id before it enqueues the job.

Errors name the part: 400 for an unsupported or mislabelled type, too many attachments or a refused URL,
413 for a size over its cap.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

import msgspec

from gateway.attachments.fetch import UrlFetcher, count_refusal, human_size
from gateway.attachments.sniff import SUPPORTED, Sniffed, agrees, normalize_mime, sniff
from shared.attachment_input import AttachmentInput
from shared.attachments import digest
from shared.errors import BadRequest, PayloadTooLarge
from shared.schema import AttachmentPart, AttachmentSource, ChatRequest, Message, Part, TextPart
from shared.settings import AttachmentSettings

#: Kimi shows the name; keep it short and free of path and control characters.
MAX_NAME_CHARS = 120
_UNSAFE_NAME = re.compile(r"[\x00-\x1f\x7f/\\]+")


@dataclass(frozen=True, slots=True)
class AttachmentLimits:
    max_image_bytes: int
    max_file_bytes: int
    max_request_bytes: int
    max_count: int

    @classmethod
    def from_settings(cls, settings: AttachmentSettings) -> AttachmentLimits:
        return cls(
            settings.max_image_bytes, settings.max_file_bytes, settings.max_request_bytes, settings.max_count
        )


@dataclass(frozen=True, slots=True)
class TakenAttachments:
    #: The request with every attachment part in its place.
    request: ChatRequest
    #: sha256 → bytes, once per content: what `AttachmentStore.put(job_id, blobs)` stores.
    blobs: dict[str, bytes]


def attachment_body_bytes(max_body_bytes: int, settings: AttachmentSettings) -> int:
    """The body cap of a request that carries attachments: the plain cap plus the base64 size of the most
    attachment bytes a request may hold (base64 makes 3 bytes 4 characters)."""
    return max_body_bytes + 4 * math.ceil(settings.max_request_bytes / 3)


class AttachmentIntake:
    """Takes in one request's attachments; one per app, stateless between requests."""

    def __init__(self, fetcher: UrlFetcher, limits: AttachmentLimits) -> None:
        self._fetcher = fetcher
        self._limits = limits

    async def take(self, request: ChatRequest, inputs: Sequence[AttachmentInput]) -> TakenAttachments:
        """`request` with its attachments in place and their bytes; raises the part's 400 / 413."""
        blobs: dict[str, bytes] = {}
        parts: list[AttachmentPart] = []
        for item in inputs:
            part, data = await self._take_one(item, blobs)
            if part.sha256 not in blobs:
                self._admit(item, data, blobs)
                blobs[part.sha256] = data
            parts.append(part)
        return TakenAttachments(place(request, inputs, parts), blobs)

    async def _take_one(self, item: AttachmentInput, blobs: dict[str, bytes]) -> tuple[AttachmentPart, bytes]:
        source: AttachmentSource
        if item.data is not None:
            data, name, source = item.data, item.name, "inline"
        elif item.url is not None:
            used = sum(len(b) for b in blobs.values())
            if used >= self._limits.max_request_bytes:
                raise self._request_too_large(item, used)
            ceiling = self._limits.max_image_bytes if item.kind == "image" else self._largest
            max_bytes = min(ceiling, self._limits.max_request_bytes - used)
            fetched = await self._fetcher.fetch(item.url, max_bytes=max_bytes, param=item.param)
            data, name, source = fetched.data, item.name or fetched.name, "url"
        else:
            raise BadRequest(f"{item.param}: the attachment has neither data nor a URL", param=item.param)
        sniffed = self._check_type(item, data, source)
        cap = self._limits.max_image_bytes if sniffed.kind == "image" else self._limits.max_file_bytes
        if len(data) > cap:
            what = "image" if sniffed.kind == "image" else "document"
            raise PayloadTooLarge(
                f"{item.param}: the {what} is {human_size(len(data))}; the limit is {human_size(cap)} per {what}",
                param=item.param,
            )
        part = AttachmentPart(
            sha256=digest(data),
            mime=sniffed.mime,
            name=attachment_name(name, sniffed, digest(data)),
            size=len(data),
            kind=sniffed.kind,
            source=source,
        )
        return part, data

    @property
    def _largest(self) -> int:
        return max(self._limits.max_image_bytes, self._limits.max_file_bytes)

    def _check_type(self, item: AttachmentInput, data: bytes, source: str) -> Sniffed:
        sniffed = sniff(data, item.mime)
        if sniffed is None:
            _refused_url(item, source)
            raise BadRequest(
                f"{item.param}: the attachment is not a supported type ({SUPPORTED})", param=item.param
            )
        if not agrees(item.mime, sniffed):
            raise BadRequest(
                f"{item.param}: the attachment is declared as {normalize_mime(item.mime)} but its bytes are "
                f"{sniffed.mime}",
                param=item.param,
            )
        if item.kind == "image" and sniffed.kind != "image":
            _refused_url(item, source)
            raise BadRequest(
                f"{item.param}: an image part must hold a PNG, JPEG, GIF or WebP image, not {sniffed.mime}",
                param=item.param,
            )
        return sniffed

    def _admit(self, item: AttachmentInput, data: bytes, blobs: dict[str, bytes]) -> None:
        """Count new bytes against the request's caps."""
        limits = self._limits
        if len(blobs) + 1 > limits.max_count:
            raise BadRequest(
                f"{item.param}: a request may carry at most {limits.max_count} attachments", param=item.param
            )
        total = sum(len(b) for b in blobs.values()) + len(data)
        if total > limits.max_request_bytes:
            raise self._request_too_large(item, total)

    def _request_too_large(self, item: AttachmentInput, total: int) -> PayloadTooLarge:
        return PayloadTooLarge(
            f"{item.param}: the attachments add up to {human_size(total)} or more; the limit is "
            f"{human_size(self._limits.max_request_bytes)} per request",
            param=item.param,
        )


def _refused_url(item: AttachmentInput, source: str) -> None:
    if source == "url" and item.url is not None:
        count_refusal("unsupported_type", item.url)


def attachment_name(given: str | None, sniffed: Sniffed, sha256: str) -> str:
    """A safe file name whose extension matches the bytes: the client's base name, else `<kind>-<hash>`."""
    base = _UNSAFE_NAME.sub("_", (given or "").rsplit("/", 1)[-1].rsplit("\\", 1)[-1]).strip(" .")
    stem, dot, ext = base.rpartition(".")
    if not dot:
        stem, ext = base, ""
    if not stem:
        stem = f"{'image' if sniffed.kind == 'image' else 'document'}-{sha256[:8]}"
    if ext.lower() not in _extensions(sniffed):
        ext = sniffed.ext
    stem = stem[: MAX_NAME_CHARS - len(ext) - 1]
    return f"{stem}.{ext}"


def _extensions(sniffed: Sniffed) -> frozenset[str]:
    if sniffed.mime == "image/jpeg":
        return frozenset({"jpg", "jpeg"})
    if sniffed.kind == "file" and sniffed.mime.startswith(("text/", "application/json", "application/x")):
        return frozenset({sniffed.ext, "txt", "md", "csv", "tsv", "json", "xml", "yaml", "yml", "log", "py",
                          "js", "ts", "html", "htm", "java", "c", "cpp", "h", "go", "rs", "sh", "sql", "toml",
                          "ini"})  # fmt: skip
    return frozenset({sniffed.ext})


def place(
    request: ChatRequest, inputs: Sequence[AttachmentInput], parts: Sequence[AttachmentPart]
) -> ChatRequest:
    """`request` with each part inserted at its input's (message index, position); text keeps its order."""
    if not parts:
        return request
    by_message: dict[int, list[tuple[int, AttachmentPart]]] = {}
    for item, part in zip(inputs, parts, strict=True):
        by_message.setdefault(item.message_index, []).append((item.part_index, part))
    messages = list(request.messages)
    for index, placed in by_message.items():
        if not 0 <= index < len(messages):
            raise BadRequest(f"{inputs[0].param}: attachment placed outside the request's messages")
        messages[index] = _with_parts(messages[index], placed)
    return msgspec.structs.replace(request, messages=messages)


def _with_parts(message: Message, placed: list[tuple[int, AttachmentPart]]) -> Message:
    content: list[Part]
    if isinstance(message.content, str):
        content = [TextPart(message.content)] if message.content else []
    else:
        content = list(message.content)
    for position, part in sorted(placed, key=lambda pair: pair[0]):
        content.insert(min(position, len(content)), part)
    return msgspec.structs.replace(message, content=content)
