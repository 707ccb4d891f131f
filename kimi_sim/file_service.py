"""The Connect file service (`/apiv2-files`, kimi-web-connect.md §5.9, kimi-web-2026.md §6).

- `POST /apiv2-files/file/upload`, multipart field `file` (any part with a file name is taken when there is
  no `file` field) → plain JSON `{"file": {"id", "meta", "blob", "parseResult"}}` as in the 2026 capture.
- `POST /apiv2-files/kimi.gateway.file.v1.FileService/GetFileParseProgress` `{"file_ids" | "fileIds"}` →
  `{"progresses": [{"fileId", "status"}]}`: `PROCESS_STATUS_PROCESSING` for `file_parse_polls` calls, then
  `PROCESS_STATUS_SUCCESS` (or `PROCESS_STATUS_FAILED`; for ever PROCESSING with `parse_stalled`).
- `GET /apiv2-files/sign-obj/<key>?filename=…&sig=…&t=…`: the signed URL, served without auth.
Errors are Connect unary errors: 401 `unauthenticated`, 400 `invalid_argument` (no file), 404 `not_found`
(an unknown or another user's file id), 429 `resource_exhausted` (the per-user storage quota), 500 `internal`
(the `upload_failed` fault).
"""

from __future__ import annotations

import hashlib
from email.parser import BytesParser
from email.policy import HTTP
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import quote

from aiohttp import web

from .common import body_of, json_response, pick, state_of
from .connect import authed, unary_error
from .state import SimAccount, SimFile, iso_time

UPLOAD_PATH = "/apiv2-files/file/upload"
PROGRESS_PATH = "/apiv2-files/kimi.gateway.file.v1.FileService/GetFileParseProgress"
SIGN_PREFIX = "/apiv2-files/sign-obj/"
PROCESS_STATUS = {
    "processing": "PROCESS_STATUS_PROCESSING",
    "ready": "PROCESS_STATUS_SUCCESS",
    "failed": "PROCESS_STATUS_FAILED",
}


def _file_part(request: web.Request, raw: bytes) -> tuple[bytes, str, str] | None:
    """(bytes, file name, content type) of the multipart body's `file` field (else its first file part)."""
    if not request.content_type.startswith("multipart/"):
        return None
    head = b"Content-Type: " + request.headers["Content-Type"].encode("latin-1") + b"\r\n\r\n"
    message = BytesParser(policy=HTTP).parsebytes(head + raw)
    if not message.is_multipart():
        return None
    candidates = [part for part in message.iter_parts() if part.get_filename() is not None]
    named = [p for p in candidates if p.get_param("name", header="content-disposition") == "file"]
    for part in named or candidates:
        payload = part.get_payload(decode=True)
        if isinstance(payload, bytes):
            return payload, str(part.get_filename()), part.get_content_type()
    return None


@authed
async def upload(request: web.Request, account: SimAccount) -> web.StreamResponse:
    state = state_of(request)
    if state.faults.take("upload_failed", request.path) is not None:
        return unary_error(500, "internal", "upload failed")
    found = _file_part(request, await request.read())
    if found is None or not found[0]:
        return unary_error(400, "invalid_argument", "a multipart field `file` with the file is required")
    data, name, content_type = found
    if state.stored_bytes(account.sub) + len(data) > state.config.file_quota_bytes:
        return unary_error(
            429, "resource_exhausted", "storage quota exceeded", "REASON_STORAGE_QUOTA_EXCEEDED"
        )
    kind = "image" if content_type.startswith("image/") else "file"
    sim_file = state.add_file(account.sub, "connect", name, content_type, kind, data, request.path)
    return json_response({"file": _file_json(request, sim_file)})


def _file_json(request: web.Request, sim_file: SimFile) -> dict[str, Any]:
    ext = PurePosixPath(sim_file.name).suffix.lstrip(".")
    key = quote(f"kimi-fs/files/blob/{sim_file.sha256}", safe="")
    sig = hashlib.sha256(f"{sim_file.id}:{sim_file.owner}".encode()).hexdigest()[:32]
    base = f"{request.scheme}://{request.host}{SIGN_PREFIX}{key}?filename={quote(sim_file.name)}&sig={sig}"
    result: dict[str, Any] = {
        "id": sim_file.id,
        "meta": {
            "name": sim_file.name,
            "contentType": sim_file.mime,
            "sizeBytes": str(sim_file.size),
            "checksum": sim_file.sha256,
            "ext": ext,
            "createTime": iso_time(sim_file.create_time),
            "type": "FILE_TYPE_IMAGE" if sim_file.kind == "image" else "FILE_TYPE_DOCUMENT",
        },
        "blob": {"signUrl": f"{base}&t=o", "previewUrl": ""},
        "parseResult": {},
    }
    if sim_file.kind == "image":
        result["parseResult"] = {
            "thumbnail": {
                "thumbnailUrl": f"{base}&t=t",
                "previewUrl": f"{base}&t=p",
                "mobileThumbnailUrl": f"{base}&t=m",
            }
        }
    return result


@authed
async def parse_progress(request: web.Request, account: SimAccount) -> web.StreamResponse:
    ids = pick(body_of(request), "file_ids", "fileIds") or []
    if not isinstance(ids, list) or not ids:
        return unary_error(400, "invalid_argument", "file_ids is required")
    state = state_of(request)
    files = [state.file_for(account.sub, str(file_id)) for file_id in ids]
    if any(f is None for f in files):
        return unary_error(404, "not_found", "file not found", "REASON_FILE_NOT_FOUND")
    progresses = [{"fileId": f.id, "status": PROCESS_STATUS[f.poll()]} for f in files if f is not None]
    return json_response({"progresses": progresses})


async def signed_object(request: web.Request) -> web.StreamResponse:
    """A signed blob URL: no auth, the bytes of the file whose sha256 the key names."""
    key = request.match_info["key"].rsplit("/", 1)[-1].rsplit("%2F", 1)[-1]
    data = state_of(request).blobs.get(key)
    if data is None or "sig" not in request.query:
        return web.Response(status=404, text="NoSuchKey")
    return web.Response(body=data, content_type="application/octet-stream")


def routes() -> list[web.RouteDef]:
    return [
        web.post(UPLOAD_PATH, upload),
        web.post(PROGRESS_PATH, parse_progress),
        web.get(SIGN_PREFIX + "{key:.+}", signed_object),
    ]
