"""What every dialect's image and document parts become: an `AttachmentInput` for the gateway's intake.

Each dialect reads its own part shapes (its module's `_attachment` helpers) and calls these with the pieces:
a URL (http(s) to fetch, or a data URL decoded here), base64 data, or plain text. The part leaves the message's
content; its place is recorded instead: the message's index in the canonical message list and the position
the part takes among that message's parts (text and attachments counted in request order). Pure: nothing is
fetched here (gateway/attachments/intake.py does that).

Refusals are 400s naming the part: a URL that is neither http(s) nor data:, a file id (the gateway has no
Files API), audio and video.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from shared.attachment_input import AttachmentInput, decode_base64, decode_data_url
from shared.errors import BadRequest
from shared.schema import AttachmentKind

_FETCHED: Final = ("http://", "https://")
#: Kimi's web chat reads images and documents only.
_MEDIA_REFUSED: Final = ("audio/", "video/")


@dataclass(frozen=True, slots=True)
class Place:
    """Where a part goes back: its JSON path (for errors), message index and position among the parts."""

    param: str
    message_index: int
    part_index: int


def from_url(
    url: str,
    place: Place,
    *,
    kind: AttachmentKind | None = None,
    mime: str | None = None,
    name: str | None = None,
) -> AttachmentInput:
    """An http(s) URL for the gateway to fetch, or a data URL decoded now; any other scheme is a 400."""
    url = url.strip()
    if url[:5].lower() == "data:":
        data, declared = decode_data_url(url, place.param)
        return _input(place, kind, data=data, mime=declared or mime, name=name)
    if url.lower().startswith(_FETCHED):
        return _input(place, kind, url=url, mime=mime, name=name)
    raise BadRequest(f"{place.param}: only http(s) and data: URLs are accepted", param=place.param)


def from_base64(
    data: str,
    place: Place,
    *,
    kind: AttachmentKind | None = None,
    mime: str | None = None,
    name: str | None = None,
) -> AttachmentInput:
    """Base64 bytes (a data URL is accepted too, as some clients send one where base64 is expected)."""
    if data.lstrip()[:5].lower() == "data:":
        return from_url(data, place, kind=kind, mime=mime, name=name)
    return _input(place, kind, data=decode_base64(data, place.param), mime=mime, name=name)


def from_text(text: str, place: Place, *, name: str | None = None) -> AttachmentInput:
    """A plain-text document (Anthropic's text source)."""
    if not text:
        raise BadRequest(f"{place.param}: the document is empty", param=place.param)
    return _input(place, None, data=text.encode(), mime="text/plain", name=name)


def refuse_file_id(place: Place) -> BadRequest:
    """The gateway has no Files API: a file id names nothing it holds."""
    return BadRequest(
        f"{place.param}: file ids are not supported (the gateway has no Files API); send the bytes or a URL",
        param=place.param,
    )


def refuse_media(mime: str | None, place: Place) -> None:
    """Audio and video have no path into Kimi's web chat: a 400 naming the part."""
    if mime is not None and mime.strip().lower().startswith(_MEDIA_REFUSED):
        raise BadRequest(
            f"{place.param}: {mime.strip().lower()} is not supported; Kimi reads images and documents only",
            param=place.param,
        )


def _input(
    place: Place,
    kind: AttachmentKind | None,
    *,
    data: bytes | None = None,
    url: str | None = None,
    mime: str | None = None,
    name: str | None = None,
) -> AttachmentInput:
    refuse_media(mime, place)
    return AttachmentInput(
        param=place.param,
        message_index=place.message_index,
        part_index=place.part_index,
        kind=kind,
        data=data,
        url=url,
        mime=mime,
        name=name,
    )
