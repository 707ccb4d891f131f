"""Uploading an attachment on the Connect lane: the file service (kimi-web-connect.md §5.9, kimi-web-2026.md §6).

`POST /apiv2-files/file/upload` (multipart field `file`, plain JSON answer `{"file": {"id", …}}`) → poll
`GetFileParseProgress` until `PROCESS_STATUS_SUCCESS` (ready; the SPA's 3) or a failure (`…FAILED`, 4). The
multipart part carries the sniffed type, so an image is stored as one (`FILE_TYPE_IMAGE`). The Chat message
then references the file by id in a file block (connect_request.py).

Bounds: `upload_s` for the upload call, then `parse_s` for Kimi to read the file (504 after).
"""

from __future__ import annotations

import asyncio

import aiohttp
import msgspec

from shared.errors import GatewayError, UpstreamTimeout
from shared.http_bodies import read_capped
from shared.schema import AttachmentPart
from upstream_worker.kimi.call import KimiCredentials, origin_of
from upstream_worker.kimi.failures import http_error
from upstream_worker.kimi.files import KimiFile, ParseFailed, UploadFailed, upload_failure
from upstream_worker.kimi.headers import connect_headers
from upstream_worker.kimi.transport import MAX_ERROR_BODY_BYTES, request_json
from upstream_worker.kimi.uploader import Uploader

UPLOAD_PATH = "/apiv2-files/file/upload"
PROGRESS_PATH = "/apiv2-files/kimi.gateway.file.v1.FileService/GetFileParseProgress"
#: Between two progress polls: a small image is ready in about a second (the 2026 capture).
POLL_S = 0.5
UNARY_TIMEOUT_S = 15.0
_READY = frozenset({"PROCESS_STATUS_SUCCESS", "3"})
_FAILED = frozenset({"PROCESS_STATUS_FAILED", "4"})


class _UploadedFile(msgspec.Struct):
    id: str = ""


class _UploadReply(msgspec.Struct):
    file: _UploadedFile | None = None


class _Progress(msgspec.Struct):
    fileId: str = ""
    file_id: str = ""
    status: str | int = ""


class _Progresses(msgspec.Struct):
    progresses: list[_Progress] = msgspec.field(default_factory=list)


_upload_reply = msgspec.json.Decoder(_UploadReply)
_progresses = msgspec.json.Decoder(_Progresses)


class ConnectUploader(Uploader):
    lane = "connect"

    async def upload(self, creds: KimiCredentials, data: bytes, part: AttachmentPart) -> KimiFile:
        """The parsed Kimi file of these bytes for this account; raises `files.py`'s failures."""
        file_id = await self._within_upload_time(self._send(creds, data, part), part.name)
        await self._wait_parsed(creds, file_id, part.name)
        return KimiFile(id=file_id, kind=part.kind, name=part.name, size=part.size)

    async def _send(self, creds: KimiCredentials, data: bytes, part: AttachmentPart) -> str:
        headers = connect_headers(creds, origin_of(creds, self._base), self._ids, stream=False)
        del headers["Content-Type"]  # aiohttp writes the multipart boundary
        form = aiohttp.FormData(quote_fields=False)  # a raw UTF-8 file name, as browsers send it
        form.add_field("file", data, filename=part.name.replace('"', "'"), content_type=part.mime)
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=self._timeouts.connect_s)
        try:
            async with self._session.post(
                f"{origin_of(creds, self._base)}{UPLOAD_PATH}", data=form, headers=headers, timeout=timeout
            ) as resp:
                if resp.status >= 300:
                    body = await resp.content.read(MAX_ERROR_BODY_BYTES)
                    raise upload_failure(
                        http_error(resp.status, body, resp.headers.get("Retry-After")), part.name
                    )
                raw = await read_capped(resp)
        except aiohttp.ClientError as exc:
            raise UploadFailed(
                f"Kimi did not take the upload of {part.name!r}: unreachable ({type(exc).__name__})"
            ) from exc
        try:
            reply = _upload_reply.decode(raw)
        except msgspec.DecodeError:
            reply = _UploadReply()
        if reply.file is None or not reply.file.id:
            raise UploadFailed(f"Kimi did not take the upload of {part.name!r}: no file id in its answer")
        return reply.file.id

    async def _wait_parsed(self, creds: KimiCredentials, file_id: str, name: str) -> None:
        parse_s = self._timeouts.parse_s
        try:
            async with asyncio.timeout(parse_s):
                while (status := await self._progress(creds, file_id, name)) not in _READY:
                    if status in _FAILED or "FAIL" in status:
                        raise ParseFailed(f"Kimi could not read the file {name!r}")
                    await asyncio.sleep(POLL_S)
        except (TimeoutError, UpstreamTimeout):
            raise UpstreamTimeout(
                f"Kimi did not finish reading the file {name!r} within {parse_s:g} s"
            ) from None

    async def _progress(self, creds: KimiCredentials, file_id: str, name: str) -> str:
        try:
            raw = await request_json(
                self._session,
                "POST",
                f"{origin_of(creds, self._base)}{PROGRESS_PATH}",
                headers=connect_headers(creds, origin_of(creds, self._base), self._ids, stream=False),
                json={"file_ids": [file_id]},
                connect_s=self._timeouts.connect_s,
                timeout_s=UNARY_TIMEOUT_S,
            )
            progresses = _progresses.decode(raw).progresses
        except msgspec.DecodeError:
            raise UploadFailed(f"Kimi answered the parse progress of {name!r} with malformed JSON") from None
        except GatewayError as exc:
            raise upload_failure(exc, name) from exc
        for progress in progresses:
            if file_id in (progress.fileId, progress.file_id):
                return str(progress.status)
        return ""
