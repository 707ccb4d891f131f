"""A file Kimi holds for an account, and how each protocol references it in a chat turn.

REST puts the ids in the completion's `refs` and a detail object per file in `refs_file`
(kimi-web-rest.md §4.4, §4.8 step 7); Connect adds a file block after the text block of the Chat message
(kimi-web-connect.md §2.3, kimi-web-2026.md §6). Uploads produce these (upload_rest.py, upload_connect.py);
the upload cache stores them (upload_cache.py).
"""

from __future__ import annotations

from typing import Any

import msgspec

from shared.schema import AttachmentKind

#: Connect's parse status of a file that is ready (the SPA's numeric 3).
CONNECT_READY = "PROCESS_STATUS_SUCCESS"


class KimiFile(msgspec.Struct, frozen=True, forbid_unknown_fields=False):
    """One uploaded and parsed file of one account, on one lane."""

    id: str
    kind: AttachmentKind
    name: str
    size: int


def rest_refs(files: list[KimiFile]) -> tuple[list[str], list[dict[str, Any]]]:
    """`refs` and `refs_file` of a REST completion body, built as kimi-free-api builds them from `/api/file`."""
    refs_file = []
    for file in files:
        detail = {"id": file.id, "name": file.name, "size": file.size, "status": "parsed", "type": file.kind}
        refs_file.append(
            {
                "detail": detail,
                "done": True,
                "file": {},
                "file_info": detail,
                "id": file.id,
                "name": file.name,
                "parse_status": "success",
                "size": file.size,
                "upload_progress": 100,
                "upload_status": "success",
            }
        )
    return [file.id for file in files], refs_file
