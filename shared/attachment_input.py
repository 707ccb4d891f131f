"""What a dialect adapter found in a request body: an attachment to take in, before the gateway holds its bytes.

Adapters are pure, so they cannot fetch a URL. For each image or document part they record an
`AttachmentInput` (inline bytes they decoded with `decode_base64` / `decode_data_url`, or an http(s) URL) with
the part's place in the request and its JSON path for error messages, and leave the part out of the message's
content. The gateway's intake (gateway/attachments/intake.py) fetches the URLs, sniffs and caps every input,
stores the bytes (shared/attachments.py) and puts an `AttachmentPart` in each recorded place.
"""

from __future__ import annotations

import base64
import binascii
import re
from urllib.parse import unquote_to_bytes

import msgspec

from shared.errors import BadRequest
from shared.schema import AttachmentKind

_WHITESPACE = re.compile(r"\s+")


class AttachmentInput(msgspec.Struct, frozen=True, kw_only=True):
    """One image or document part of a request, as its adapter found it."""

    #: The part's JSON path, named in every error about it (`messages[2].content[1]`, `contents[0].parts[3]`).
    param: str
    #: Where the `AttachmentPart` goes: the message's index in `ChatRequest.messages` and its position in that
    #: message's content list once the part is back (text parts keep their own positions).
    message_index: int
    part_index: int
    #: "image" when the part type promises an image (OpenAI `image_url`, Anthropic `image`): other bytes are
    #: refused. None (documents, Gemini blobs) accepts any supported type; images then take the image path.
    kind: AttachmentKind | None = None
    #: Inline bytes, already decoded from base64 / a data URL / plain text.
    data: bytes | None = None
    #: An http(s) URL for the gateway to fetch (exactly one of `data` and `url` is set).
    url: str | None = None
    #: The MIME type the client declared (data URL, `media_type`, `mimeType`), if any.
    mime: str | None = None
    #: The file name the client gave (OpenAI `filename`, Anthropic `title`), if any.
    name: str | None = None


def decode_base64(text: str, param: str) -> bytes:
    """Strict base64 (standard or URL-safe alphabet, padding optional, whitespace ignored); 400 otherwise."""
    compact = _WHITESPACE.sub("", text)
    if not compact:
        raise BadRequest(f"{param}: the attachment's data is empty", param=param)
    compact += "=" * (-len(compact) % 4)
    try:
        if "-" in compact or "_" in compact:
            return base64.b64decode(compact, altchars=b"-_", validate=True)
        return base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError):
        raise BadRequest(f"{param}: the attachment's data is not valid base64", param=param) from None


def decode_data_url(url: str, param: str) -> tuple[bytes, str | None]:
    """`data:[<mime>][;base64],<data>` → (bytes, declared MIME type or None); 400 for anything else."""
    if not url[:5].lower() == "data:" or "," not in url:
        raise BadRequest(f"{param}: expected a data: URL", param=param)
    header, _, payload = url[5:].partition(",")
    params = [p.strip() for p in header.split(";")]
    mime = params[0].lower() or None
    if "base64" in (p.lower() for p in params[1:]):
        return decode_base64(payload, param), mime
    data = unquote_to_bytes(payload)
    if not data:
        raise BadRequest(f"{param}: the attachment's data is empty", param=param)
    return data, mime
