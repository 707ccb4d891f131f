"""Uploading an attachment on the REST lane (kimi-web-rest.md §4.8), for refresh_token accounts.

pre-sign-url → PUT the bytes to the pre-signed URL → `POST /api/file` (until `initialized` or `parsed`) →
`POST /api/file/parse_process` until the file is `parsed`. Images take the image path (`action` / `type`
"image", registered by the pre-sign `file_id`), documents the file path (registered by `object_name`):
the kind comes from the sniffed bytes, so a remote image is never sent down the file path as kimi-free-api
does. Files are registered without a `chat_id` (the pre-2024-12 form), so one upload serves every chat of the
account (upload_cache.py).

The PUT goes to object storage, not to Kimi: it carries only `Content-Type`, never the account's token.
Bounds: `upload_s` for pre-sign + PUT + register, then `parse_s` for Kimi to read the file (504 after).
"""

from __future__ import annotations

import asyncio
from typing import Any, TypeVar

import aiohttp
import msgspec

from shared.errors import GatewayError, UpstreamTimeout
from shared.http_bodies import read_capped
from shared.schema import AttachmentPart
from upstream_worker.kimi.call import KimiCredentials, origin_of
from upstream_worker.kimi.files import KimiFile, ParseFailed, UploadFailed, upload_failure
from upstream_worker.kimi.headers import rest_headers
from upstream_worker.kimi.sse import SseDecoder
from upstream_worker.kimi.transport import open_stream, read_chunks, request_json
from upstream_worker.kimi.uploader import Uploader

T = TypeVar("T")

#: Between two `/api/file` or `parse_process` calls while Kimi still reads the file.
POLL_S = 0.5
UNARY_TIMEOUT_S = 15.0


class _PreSigned(msgspec.Struct):
    url: str = ""
    object_name: str = ""
    file_id: str = ""


class _FileDetail(msgspec.Struct):
    id: str = ""
    name: str = ""
    size: int = 0
    status: str = ""


class _FileInfo(msgspec.Struct):
    id: str = ""
    status: str = ""


class _ParseEvent(msgspec.Struct):
    event: str = ""
    file_info: _FileInfo | None = None


_pre_signed = msgspec.json.Decoder(_PreSigned)
_detail = msgspec.json.Decoder(_FileDetail)
_parse_event = msgspec.json.Decoder(_ParseEvent)


class RestUploader(Uploader):
    lane = "rest"

    async def upload(self, creds: KimiCredentials, data: bytes, part: AttachmentPart) -> KimiFile:
        """The parsed Kimi file of these bytes for this account; raises `files.py`'s failures."""
        detail = await self._within_upload_time(self._send(creds, data, part), part.name)
        if detail.status != "parsed":
            await self._wait_parsed(creds, detail.id, part.name)
        return KimiFile(id=detail.id, kind=part.kind, name=part.name, size=detail.size or part.size)

    async def _send(self, creds: KimiCredentials, data: bytes, part: AttachmentPart) -> _FileDetail:
        signed = _decode(
            _pre_signed,
            await self._unary(creds, "/api/pre-sign-url", {"action": part.kind, "name": part.name}),
        )
        if not signed.url or not (signed.object_name or signed.file_id):
            raise UploadFailed(f"Kimi did not take the upload of {part.name!r}: no pre-signed URL")
        await self._put(signed.url, data, part)
        if part.kind == "image":
            body: dict[str, Any] = {"type": "image", "file_id": signed.file_id, "name": part.name}
        else:
            body = {"type": "file", "name": part.name, "object_name": signed.object_name, "file_id": ""}
        while True:
            detail = _decode(_detail, await self._unary(creds, "/api/file", body))
            if not detail.id:
                raise UploadFailed(f"Kimi did not take the upload of {part.name!r}: no file id")
            if detail.status == "failed":
                raise ParseFailed(f"Kimi could not read the file {part.name!r}")
            if detail.status in ("initialized", "parsed"):
                return detail
            await asyncio.sleep(POLL_S)

    async def _put(self, url: str, data: bytes, part: AttachmentPart) -> None:
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=self._timeouts.connect_s)
        try:
            async with self._session.put(
                url, data=data, headers={"Content-Type": part.mime}, timeout=timeout
            ) as resp:
                await read_capped(resp)
                status = resp.status
        except aiohttp.ClientError as exc:
            raise UploadFailed(
                f"Kimi did not take the upload of {part.name!r}: object storage unreachable ({type(exc).__name__})"
            ) from exc
        if not 200 <= status < 300:
            raise UploadFailed(
                f"Kimi did not take the upload of {part.name!r}: object storage answered HTTP {status}"
            )

    async def _wait_parsed(self, creds: KimiCredentials, file_id: str, name: str) -> None:
        """`parse_process` until Kimi says `parsed` (or `failed`), within `parse_s`."""
        parse_s = self._timeouts.parse_s
        try:
            async with asyncio.timeout(parse_s):
                while (status := await self._parse_status(creds, file_id, name, parse_s)) != "parsed":
                    if status == "failed":
                        raise ParseFailed(f"Kimi could not read the file {name!r}")
                    await asyncio.sleep(POLL_S)
        except (TimeoutError, UpstreamTimeout):
            raise UpstreamTimeout(
                f"Kimi did not finish reading the file {name!r} within {parse_s:g} s"
            ) from None

    async def _parse_status(self, creds: KimiCredentials, file_id: str, name: str, parse_s: float) -> str:
        """One `parse_process` stream: `parsed` / `failed` as soon as it says so, else the last status seen."""
        body = {"ids": [file_id], "timeout": int(parse_s * 1000)}
        last = ""
        try:
            async with open_stream(
                self._session,
                "POST",
                f"{origin_of(creds, self._base)}/api/file/parse_process",
                headers=self._headers(creds),
                json=body,
                connect_s=self._timeouts.connect_s,
                first_byte_s=parse_s,
            ) as resp:
                sse = SseDecoder()
                async for chunk in read_chunks(resp, parse_s, parse_s):
                    for payload in sse.feed(chunk):
                        last = _status_of(payload, file_id) or last
                        if last in ("parsed", "failed"):
                            return last
        except UpstreamTimeout:
            raise
        except GatewayError as exc:
            raise upload_failure(exc, name) from exc
        return last

    async def _unary(self, creds: KimiCredentials, path: str, body: Any) -> bytes:
        try:
            return await request_json(
                self._session,
                "POST",
                f"{origin_of(creds, self._base)}{path}",
                headers=self._headers(creds),
                json=body,
                connect_s=self._timeouts.connect_s,
                timeout_s=UNARY_TIMEOUT_S,
            )
        except GatewayError as exc:
            raise upload_failure(exc, str(body.get("name") or "the file")) from exc

    def _headers(self, creds: KimiCredentials) -> dict[str, str]:
        return rest_headers(creds, origin_of(creds, self._base), self._ids, creds.user_id)


def _status_of(payload: str, file_id: str) -> str | None:
    try:
        event = _parse_event.decode(payload)
    except msgspec.DecodeError:
        return None
    info = event.file_info
    return info.status if info is not None and info.id == file_id else None


def _decode(decoder: msgspec.json.Decoder[T], raw: bytes) -> T:
    try:
        return decoder.decode(raw)
    except msgspec.DecodeError:
        raise UploadFailed("Kimi answered an upload call with malformed JSON") from None
