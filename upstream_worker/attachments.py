"""A turn's attachments on the account it runs on: one Kimi file per attachment, uploaded at most once.

Before `driver.chat(call)` the runner asks `Attachments.files_for(lane, creds, job_id, parts)`: each part is
looked up in the account's upload cache (upload_cache.py); the others are read from the job's bytes in Redis
(shared/attachments.py) and uploaded on the account's lane (upload_rest.py, upload_connect.py), then
remembered. The files go into `call.files`, which the REST body turns into `refs` / `refs_file` and the
Connect request into file blocks. When the job ends, whatever its outcome, upstream_worker/job.py deletes
the job's bytes (`AttachmentStore.delete`, as `delete_bytes` does).

Uploads of one turn run one after another: a turn rarely carries more than a few files, and one account's
lane is what they share anyway. Failures are those of upstream_worker/kimi/files.py, raised as they come.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Protocol

import aiohttp
import redis.asyncio as aioredis

from shared.attachments import AttachmentStore
from shared.errors import GatewayError
from shared.schema import AttachmentPart
from shared.settings import UpstreamTimeouts
from upstream_worker import metrics
from upstream_worker.kimi.call import KimiCredentials
from upstream_worker.kimi.files import KimiFile
from upstream_worker.kimi.upload_cache import UploadCache
from upstream_worker.kimi.upload_connect import ConnectUploader
from upstream_worker.kimi.upload_rest import RestUploader


class Uploader(Protocol):
    lane: str

    async def upload(self, creds: KimiCredentials, data: bytes, part: AttachmentPart) -> KimiFile: ...


class Attachments:
    """The worker's one attachment service (one per process, like the drivers)."""

    def __init__(self, store: AttachmentStore, cache: UploadCache, uploaders: Mapping[str, Uploader]) -> None:
        self._store = store
        self._cache = cache
        self._uploaders = dict(uploaders)

    @classmethod
    def create(
        cls, redis: aioredis.Redis, session: aiohttp.ClientSession, base_url: str, timeouts: UpstreamTimeouts
    ) -> Attachments:
        uploaders: list[Uploader] = [
            RestUploader(session, base_url, timeouts),
            ConnectUploader(session, base_url, timeouts),
        ]
        return cls(AttachmentStore(redis), UploadCache(redis), {u.lane: u for u in uploaders})

    async def files_for(
        self, lane: str, creds: KimiCredentials, job_id: str, parts: Sequence[AttachmentPart]
    ) -> list[KimiFile]:
        """One Kimi file per part, in order: cached for this account and lane, else uploaded now. A lane with no
        uploader (an official API, which takes the bytes inline in its request) gets none."""
        if not parts or lane not in self._uploaders:
            return []
        cached = await self._cache.get_many(lane, creds.account_id, [p.sha256 for p in parts])
        files = []
        for part in parts:
            metrics.ATTACHMENTS.labels(kind=part.kind, lane=lane).inc()
            file = cached.get(part.sha256)
            if file is None:
                file = await self._upload(lane, creds, job_id, part)
                cached[part.sha256] = file
            else:
                metrics.ATTACHMENT_CACHE_HITS.labels(lane=lane).inc()
            files.append(file)
        return files

    async def forget(self, lane: str, account_id: str, parts: Sequence[AttachmentPart]) -> None:
        """Drop these parts' cached files of the account: Kimi no longer knows them (upload again next time)."""
        await self._cache.forget(lane, account_id, [p.sha256 for p in parts])

    async def delete_bytes(self, job_id: str) -> None:
        """The job has ended: its attachment bytes go (the TTL only backs this up)."""
        await self._store.delete(job_id)

    async def _upload(self, lane: str, creds: KimiCredentials, job_id: str, part: AttachmentPart) -> KimiFile:
        data = await self._store.get(job_id, part.sha256)
        started = time.perf_counter()
        try:
            file = await self._uploaders[lane].upload(creds, data, part)
        except GatewayError as exc:
            metrics.ATTACHMENT_UPLOAD_ERRORS.labels(lane=lane, kind=exc.kind).inc()
            raise
        metrics.ATTACHMENT_UPLOAD_DURATION.labels(lane=lane).observe(time.perf_counter() - started)
        metrics.ATTACHMENT_UPLOADS.labels(kind=part.kind, lane=lane).inc()
        metrics.ATTACHMENT_UPLOAD_BYTES.labels(lane=lane).inc(len(data))
        await self._cache.put(lane, creds.account_id, part.sha256, file)
        return file
