"""A file Kimi holds for an account, how each protocol references it in a chat turn, and how getting one fails.

REST puts the ids in the completion's `refs` and a detail object per file in `refs_file`
(kimi-web-rest.md §4.4, §4.8 step 7); Connect adds a file block after the text block of the Chat message
(kimi-web-connect.md §2.3, kimi-web-2026.md §6). Uploads produce these (upload_rest.py, upload_connect.py);
the upload cache stores them (upload_cache.py).

Failures of an upload, besides the account's own (401 → `UpstreamAuthError`, 429 → `UpstreamRateLimited`):
- `UploadFailed` (502): Kimi did not take the bytes (an HTTP error, a broken answer, no connection). It is an
  `UpstreamUnavailable`, so before the first token the worker fails over to another account as for any
  upstream outage; the client sees 502.
- `ParseFailed` (502): Kimi took the file and could not read it. Another account would not read it either:
  no failover.
- `UpstreamTimeout` (504): the upload or Kimi's reading of the file took longer than its bound.
"""

from __future__ import annotations

from typing import Any, ClassVar

import msgspec

from shared.errors import (
    GatewayError,
    UpstreamAuthError,
    UpstreamError,
    UpstreamOverloaded,
    UpstreamRateLimited,
    UpstreamTimeout,
    UpstreamUnavailable,
)
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


class UploadFailed(UpstreamUnavailable):
    """Kimi did not take an attachment's bytes (502; fails over before the first token)."""

    http_status: ClassVar[int] = 502


class ParseFailed(UpstreamError):
    """Kimi took an attachment and could not read it (502; no failover)."""

    retryable = False


class FileForgotten(UpstreamError):
    """A turn referenced a cached upload Kimi no longer holds for the account (REST `file.not_found`, Connect
    `REASON_FILE_NOT_FOUND`): the runner forgets the account's cached files and tries the turn once more,
    which uploads them again (502 when that fails too)."""

    http_status: ClassVar[int] = 502


#: Failures that are the account's, not the upload's: they keep their own class (cooldown, failover).
_ACCOUNT_FAILURES = (UpstreamAuthError, UpstreamRateLimited, UpstreamOverloaded, UpstreamTimeout)


def upload_failure(exc: GatewayError, name: str) -> GatewayError:
    """An error of one upload step, in the terms of the upload: the account's failures as they are, anything
    else (an HTTP error, a malformed answer, a refused request) as `UploadFailed` naming the file."""
    if isinstance(exc, (*_ACCOUNT_FAILURES, UploadFailed, ParseFailed)):
        return exc
    return UploadFailed(f"Kimi did not take the upload of {name!r}: {exc.message}")
