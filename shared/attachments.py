"""Attachment bytes between the gateway and the worker: one Redis hash per job, never inside the job stream.

The gateway writes the bytes of every attachment of a request (`put`) before it enqueues the job; the canonical
request carries only `AttachmentPart` references (schema.py). The worker reads the bytes it has to upload
(`get`) and deletes them all when the job ends (`delete`), whatever the outcome. The key carries the job id
(`keys.attachments_key`), so concurrent jobs never read or delete each other's bytes, and a TTL catches
whatever a crash leaves behind. Fields are the hex SHA-256 of the bytes: a request that carries one image
twice stores it once.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Mapping

import redis.asyncio as aioredis
from redis.typing import EncodableT, FieldT

from shared import keys
from shared.errors import ServiceUnavailable
from shared.schema import AttachmentPart, Message


def digest(data: bytes) -> str:
    """The hex SHA-256 an `AttachmentPart` names its bytes by."""
    return hashlib.sha256(data).hexdigest()


def attachment_ttl_s(request_timeout_s: float) -> int:
    """The TTL of a job's bytes: the default, or longer when requests may run longer than it covers."""
    return max(keys.ATTACHMENT_TTL_S, math.ceil(request_timeout_s) + keys.REPLY_TTL_S)


def request_attachments(messages: Iterable[Message]) -> list[AttachmentPart]:
    """Every attachment of a request, once per content hash, in order of appearance."""
    seen: dict[str, AttachmentPart] = {}
    for message in messages:
        if isinstance(message.content, str):
            continue
        for part in message.content:
            if isinstance(part, AttachmentPart):
                seen.setdefault(part.sha256, part)
    return list(seen.values())


class AttachmentStore:
    """The bytes of each job's attachments in Redis (`kimi:att:{<job id>}`)."""

    def __init__(self, redis: aioredis.Redis) -> None:
        self._redis = redis

    async def put(self, job_id: str, blobs: Mapping[str, bytes], ttl_s: int = keys.ATTACHMENT_TTL_S) -> None:
        """Store `{sha256: bytes}` for the job, with its TTL, in one transaction (before the job is enqueued)."""
        if not blobs:
            return
        key = keys.attachments_key(job_id)
        pipe = self._redis.pipeline(transaction=True)
        mapping: dict[FieldT, EncodableT] = {sha256: data for sha256, data in blobs.items()}
        pipe.hset(key, mapping=mapping)
        pipe.expire(key, ttl_s)
        await pipe.execute()

    async def get(self, job_id: str, sha256: str) -> bytes:
        """The bytes of one attachment of the job; 503 when they are gone (their TTL passed before the job ran)."""
        data = await self._redis.hget(keys.attachments_key(job_id), sha256)
        if not isinstance(data, bytes):
            raise ServiceUnavailable(
                "an attachment of this request is no longer held (the request waited too long); send it again"
            )
        return data

    async def delete(self, job_id: str) -> None:
        """Forget every attachment of the job: called once when the job ends, whatever its outcome."""
        await self._redis.delete(keys.attachments_key(job_id))
