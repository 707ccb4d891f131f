"""Publishes a job's canonical events on its reply stream, coalescing events that are ready together.

`publish()` never waits: it appends to a pending list and makes sure one flusher task runs. The flusher sends
everything pending as one XADD entry, and again as long as more arrived during the previous XADD. So the first
event leaves at once (no timer), and under load many events share one entry. The reply stream gets its TTL
with the first XADD and again when the publisher closes, never per event.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline
from redis.exceptions import RedisError

from shared import keys
from shared.logging import get_logger
from shared.schema import Event, encode_events

log = get_logger(__name__)

_Fill = Callable[[Pipeline], object]


class ReplyPublisher:
    def __init__(self, redis: aioredis.Redis, key: str, *, ttl_s: int = keys.REPLY_TTL_S) -> None:
        self._redis = redis
        self._key = key
        self._ttl_s = ttl_s
        self._pending: list[Event] = []
        self._flusher: asyncio.Task[None] | None = None
        self._sent_entries = 0
        self._closing = False
        self._expired_at_close = False
        self.failed = False

    @property
    def key(self) -> str:
        return self._key

    def publish(self, event: Event) -> None:
        self._pending.append(event)
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush())

    async def aclose(self) -> None:
        """Send what is pending, then set the stream's TTL once more (it now outlives the job by ttl_s)."""
        self._closing = True
        if self._flusher is not None:
            await self._flusher
        if not self._expired_at_close and self._sent_entries:
            await self._run(lambda pipe: pipe.expire(self._key, self._ttl_s))

    async def _flush(self) -> None:
        while self._pending:
            batch, self._pending = self._pending, []
            first = self._sent_entries == 0
            last = self._closing and not self._pending
            self._sent_entries += 1

            def fill(pipe: Pipeline, batch: list[Event] = batch, expire: bool = first or last) -> None:
                pipe.xadd(self._key, {"e": encode_events(batch)})
                if expire:
                    pipe.expire(self._key, self._ttl_s)

            await self._run(fill)
            self._expired_at_close = last

    async def _run(self, fill: _Fill) -> None:
        pipe = self._redis.pipeline(transaction=False)
        fill(pipe)
        try:
            await pipe.execute()
        except (RedisError, OSError) as exc:
            # The gateway will time out on its own; one line per failed job, not per event.
            if not self.failed:
                log.warning("reply_publish_failed", reply_key=self._key, error=str(exc))
            self.failed = True
