"""Publishes a job's canonical events on its reply stream, coalescing events that are ready together.

`publish()` never waits: it appends to a pending list and makes sure one flusher task runs. The flusher sends
everything pending as one XADD entry, and again as long as more arrived during the previous XADD. So the first
event leaves at once (no timer), and under load many events share one entry. The reply stream gets its TTL
with the first XADD and again with the entry that ends it (Done / ErrorEvent) or at close, never per event.

`hold(event, within_s)` queues an event without sending it: it leaves with the next published event, in the
same entry and first, or after `within_s`, or on close. The worker holds `Start` this way, so that it rides
with the first content instead of costing an XADD (and a gateway wake-up) of its own.

`attach(fill, count)` adds other commands to the pipeline of the next XADD, before it (a kept chat's
conversation record rides with `Start` this way): they are not sent on their own, and `drain()` waits for the
XADDs under way.

With a `RedisBatcher` (the worker passes its one), the XADDs of every job of the process share pipelines.

A failed XADD (Redis unreachable, restarting) loses events, so what follows could only be an answer with a
hole in it: the publisher is `failed` from then on, calls `on_failure` once (the job stops its upstream call)
and sends nothing more but an `ErrorEvent`, which ends the stream if Redis is back by then.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline
from redis.exceptions import RedisError
from redis.typing import EncodableT, FieldT

from shared import keys
from shared.logging import get_logger
from shared.schema import Done, ErrorEvent, Event, encode_events
from upstream_worker.batcher import Fill, RedisBatcher

log = get_logger(__name__)


class ReplyPublisher:
    def __init__(
        self,
        redis: aioredis.Redis,
        key: str,
        *,
        batcher: RedisBatcher | None = None,
        on_failure: Callable[[], None] | None = None,
    ) -> None:
        self._redis = redis
        self._batcher = batcher
        self._on_failure = on_failure
        self._key = key
        self._pending: list[Event] = []
        #: Commands for the next XADD's pipeline, with how many each adds.
        self._attached: list[tuple[Fill, int]] = []
        self._flusher: asyncio.Task[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._sent_entries = 0
        self._closing = False
        self._expired_at_close = False
        self.failed = False

    def publish(self, event: Event) -> None:
        if self.failed and not isinstance(event, ErrorEvent):
            return
        self._pending.append(event)
        self._kick()

    def hold(self, event: Event, within_s: float) -> None:
        """Queue `event` to leave with the next published one, or after `within_s` at the latest."""
        if self.failed:
            return
        self._pending.append(event)
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(within_s, self._kick)

    def attach(self, fill: Fill, count: int) -> None:
        """Run the `count` commands `fill` adds in the pipeline of the next XADD, before it."""
        self._attached.append((fill, count))

    def detach(self, fill: Fill) -> None:
        """Take back the commands of `fill` that have not left yet."""
        self._attached = [(attached, count) for attached, count in self._attached if attached != fill]

    async def drain(self) -> None:
        """Wait until what was published so far (and what rode with it) has been sent."""
        if self._flusher is not None and not self._flusher.done():
            # wait(), not await: a job cancelled meanwhile must not cancel the stream's shared flusher.
            await asyncio.wait({self._flusher})

    async def aclose(self) -> None:
        """Send what is pending, then set the stream's TTL once more (it outlives the job by REPLY_TTL_S)."""
        self._closing = True
        if self._pending:
            self._kick()
        if self._flusher is not None:
            await self._flusher
        if not self._expired_at_close and self._sent_entries:
            await self._send(self._redis.expire(self._key, keys.REPLY_TTL_S))

    def _kick(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush())

    async def _flush(self) -> None:
        while self._pending:
            batch, self._pending = self._pending, []
            if self.failed:  # events published before the failure was known: only the error still goes
                batch = [event for event in batch if isinstance(event, ErrorEvent)]
                if not batch:
                    continue
            attached, self._attached = self._attached, []
            # The entry that ends the stream sets its TTL, so that closing costs no round trip of its own.
            ends = not self._pending and (self._closing or isinstance(batch[-1], Done | ErrorEvent))
            expire = self._sent_entries == 0 or ends
            self._sent_entries += 1
            await self._send(self._xadd(batch, attached, expire=expire))
            self._expired_at_close = expire

    async def _xadd(self, batch: list[Event], attached: list[tuple[Fill, int]], *, expire: bool) -> None:
        fields: dict[FieldT, EncodableT] = {"e": encode_events(batch)}

        def fill(pipe: Pipeline) -> None:
            for fill_attached, _count in attached:
                fill_attached(pipe)
            _fill(pipe, self._key, fields, expire)

        if self._batcher is not None:
            await self._batcher.run(fill, 1 + expire + sum(count for _fill_attached, count in attached))
            return
        if not expire and not attached:
            await self._redis.xadd(self._key, fields)
            return
        pipe = self._redis.pipeline(transaction=False)
        fill(pipe)
        await pipe.execute()

    async def _send(self, call: Awaitable[object]) -> None:
        try:
            await call
        except (RedisError, OSError) as exc:
            if self.failed:  # one line per failed stream, not per event
                return
            log.warning("reply_publish_failed", reply_key=self._key, error=str(exc))
            self.failed = True
            if self._on_failure is not None:
                self._on_failure()


def _fill(pipe: Pipeline, key: str, fields: dict[FieldT, EncodableT], expire: bool) -> None:
    pipe.xadd(key, fields)
    if expire:
        pipe.expire(key, keys.REPLY_TTL_S)
