"""The job stream seen from a worker: read, reclaim, touch, ack and dead-letter entries of `kimi:jobs`.

One `JobQueue` per worker process, named after its consumer. Blocking reads use their own client (a socket
timeout longer than BLOCK); everything else goes through the shared request-path client.

Redis may lose its data (FLUSHALL, a restart without persistence): the consumer group is then gone, and every
read answers NOGROUP. A read that meets NOGROUP creates the group again (from id 0, so jobs enqueued meanwhile
are read too) and returns nothing; each heartbeat also creates it, in the round trip that writes the
heartbeat, so a worker the gateway counts as alive always has a group to read from.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline
from redis.exceptions import ResponseError

from shared import keys
from shared.logging import get_logger

log = get_logger(__name__)

#: The dead-letter stream is for humans to inspect; keep the last this many.
DEAD_LETTER_MAXLEN = 10_000


@dataclass(frozen=True, slots=True)
class JobEntry:
    """One job stream entry as delivered to this consumer; `deliveries` counts this delivery too."""

    entry_id: str
    payload: bytes | None
    deliveries: int = 1
    reclaimed: bool = False


class JobQueue:
    def __init__(self, redis: aioredis.Redis, blocking: aioredis.Redis, consumer: str) -> None:
        self._redis = redis
        self._blocking = blocking
        self.consumer = consumer

    async def ensure_group(self) -> None:
        """Create the consumer group (and the stream) unless it exists; every worker may race to do it."""
        try:
            await self._redis.xgroup_create(keys.JOBS_STREAM, keys.JOBS_GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if not _error_code(exc, "BUSYGROUP"):
                raise

    async def announce(self, now_ms: int) -> None:
        """The heartbeat (`kimi:workers[consumer] = now_ms`), written after making sure the group exists."""
        pipe = self._redis.pipeline(transaction=False)
        pipe.xgroup_create(keys.JOBS_STREAM, keys.JOBS_GROUP, id="0", mkstream=True)
        pipe.hset(keys.WORKERS_HASH, self.consumer, now_ms)
        created, _ = await pipe.execute(raise_on_error=False)
        if isinstance(created, ResponseError) and not _error_code(created, "BUSYGROUP"):
            raise created
        if created is True:
            log.warning("consumer_group_created", consumer=self.consumer, by="heartbeat")

    async def read(self, count: int, block_ms: int | None) -> list[JobEntry]:
        """New entries for this consumer; `block_ms=None` returns at once. A lost group is created again."""
        try:
            reply = await self._blocking.xreadgroup(
                keys.JOBS_GROUP, self.consumer, {keys.JOBS_STREAM: ">"}, count=count, block=block_ms
            )
        except ResponseError as exc:
            if not _error_code(exc, "NOGROUP"):
                raise
            await self.ensure_group()
            log.warning("consumer_group_created", consumer=self.consumer, by="read")
            return []
        return [JobEntry(_text(entry_id), _payload(fields)) for entry_id, fields in _stream_entries(reply)]

    async def claim_idle(self, min_idle_ms: int, count: int) -> list[JobEntry]:
        """Take over entries idle longer than `min_idle_ms` (their consumer is dead), with delivery counts."""
        claimed: list[JobEntry] = []
        cursor = "0-0"
        while len(claimed) < count:
            reply = await self._redis.xautoclaim(
                keys.JOBS_STREAM,
                keys.JOBS_GROUP,
                self.consumer,
                min_idle_ms,
                cursor,
                count=count - len(claimed),
            )
            # Redis 6.2 answers [cursor, entries]; 7.0+ adds the ids of entries deleted meanwhile.
            cursor, entries = _text(reply[0]), reply[1]
            claimed += [JobEntry(_text(i), _payload(f), reclaimed=True) for i, f in entries if i is not None]
            if cursor == "0-0":
                break
        return await self._with_deliveries(claimed)

    async def own_pending(self, count: int) -> list[JobEntry]:
        """Entries already delivered to this consumer (a read that raced a shutdown), re-read by id."""
        pending = await self._redis.xpending_range(
            keys.JOBS_STREAM, keys.JOBS_GROUP, min="-", max="+", count=count, consumername=self.consumer
        )
        entries: list[JobEntry] = []
        for row in pending:
            entry_id = _text(
                str(row["message_id"]) if isinstance(row["message_id"], int) else row["message_id"]
            )
            found = await self._redis.xrange(keys.JOBS_STREAM, min=entry_id, max=entry_id, count=1)
            payload = _payload(found[0][1]) if found else None
            entries.append(JobEntry(entry_id, payload, int(row["times_delivered"])))
        return entries

    async def touch(self, entry_ids: list[str | bytes | int | memoryview]) -> None:
        """Reset the idle time of our in-flight entries so that no other worker reclaims them."""
        if entry_ids:
            await self._redis.xclaim(
                keys.JOBS_STREAM, keys.JOBS_GROUP, self.consumer, 0, entry_ids, justid=True
            )

    async def ack(self, entry_id: str) -> None:
        """Ack the entry and delete it, in one round trip: no prompt stays in Redis once its job is done."""
        pipe = self._redis.pipeline(transaction=False)
        _ack_and_delete(pipe, entry_id)
        await pipe.execute()

    async def dead_letter(self, entry: JobEntry, reason: str) -> None:
        """Move an entry to the dead-letter stream, ack it and delete it, in one round trip."""
        fields: dict[Any, Any] = {
            "entry_id": entry.entry_id,
            "reason": reason,
            "deliveries": entry.deliveries,
            "consumer": self.consumer,
        }
        if entry.payload is not None:
            fields["job"] = entry.payload
        pipe = self._redis.pipeline(transaction=False)
        pipe.xadd(keys.DEAD_LETTER_STREAM, fields, maxlen=DEAD_LETTER_MAXLEN, approximate=True)
        _ack_and_delete(pipe, entry.entry_id)
        await pipe.execute()

    async def _with_deliveries(self, entries: list[JobEntry]) -> list[JobEntry]:
        if not entries:
            return entries
        pipe = self._redis.pipeline(transaction=False)
        for entry in entries:
            pipe.xpending_range(
                keys.JOBS_STREAM, keys.JOBS_GROUP, min=entry.entry_id, max=entry.entry_id, count=1
            )
        rows = await pipe.execute()
        return [
            JobEntry(e.entry_id, e.payload, int(r[0]["times_delivered"]) if r else 1, reclaimed=True)
            for e, r in zip(entries, rows, strict=True)
        ]


def _ack_and_delete(pipe: Pipeline, entry_id: str) -> None:
    pipe.xack(keys.JOBS_STREAM, keys.JOBS_GROUP, entry_id)
    pipe.xdel(keys.JOBS_STREAM, entry_id)


def _error_code(exc: ResponseError, code: str) -> bool:
    """Whether a Redis error reply carries `code` (its first word: NOGROUP, BUSYGROUP, …)."""
    return str(exc).startswith(code)


def _stream_entries(reply: Any) -> list[tuple[Any, Any]]:
    """The entries of an XREADGROUP reply for one stream (RESP2 list or RESP3 dict)."""
    if not reply:
        return []
    if isinstance(reply, dict):
        return [e for streams in reply.values() for e in streams[0]]
    return [e for _stream, entries in reply for e in entries]


def _payload(fields: Any) -> bytes | None:
    if not fields:
        return None
    payload = fields.get(b"job")
    return payload if isinstance(payload, bytes) else None


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
