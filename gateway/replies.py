"""One reader for every open reply stream of this process: a single `XREAD BLOCK` over all of them.

Each relay subscribes to its job's reply key and awaits `Subscription.get(timeout_s)`; the reader's one
connection blocks on every subscribed key at once (XREAD takes many keys, each with its last id) and hands
each stream's entries to its subscription. At c=64 this replaces one blocking round trip per stream and
wake-up, each on its own pooled connection, with one per wake-up for all of them.

A key subscribed while the reader is blocked on the others is not read until that BLOCK ends. Under load a
BLOCK ends within a millisecond or two, as soon as any stream has an entry; otherwise the reader's
connection is released with `CLIENT UNBLOCK <its id>` (sent on the request client) after `grace_s`, which
the worker's own time to a first event (lease, upstream request) covers. When the last subscription leaves,
the reader is unblocked at once and idles without a command, so a lone client's next request starts a fresh
read. A failed read (Redis unreachable) fails every subscription it covered, as a relay's own read did;
the relays answer 503 (or an in-band error) and the reader tries its next read `FAILED_READ_PAUSE_S` later.
Its connection comes back by itself once Redis does (shared/redis_client.py: one reconnect per command).
"""

from __future__ import annotations

import asyncio
from typing import Any, TypeAlias

import redis.asyncio as aioredis
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import RedisError

from shared.logging import get_logger

ReplyEntry: TypeAlias = tuple[bytes, dict[bytes, bytes]]

#: How long a newly subscribed key may wait for the reader's current BLOCK to end by itself before the
#: reader is unblocked: shorter than the worker's time from job to first event (about 4 ms on one VM).
UNBLOCK_GRACE_S = 0.002
#: After a failed read, the pause before the next: a subscription whose relay has not taken its error yet
#: (busy writing to a slow client) must not make the reader spin on refused connections.
FAILED_READ_PAUSE_S = 0.1

log = get_logger("gateway.replies")


class Subscription:
    """One reply stream's entries, handed over by the reader; `get` is awaited by one relay at a time."""

    __slots__ = ("_entries", "_error", "_waiter", "key", "last_id")

    def __init__(self, key: bytes) -> None:
        self.key = key
        #: The id of the last entry the reader took from this stream (the next XREAD starts after it).
        self.last_id: bytes = b"0-0"
        self._entries: list[ReplyEntry] = []
        self._error: RedisError | None = None
        self._waiter: asyncio.Future[None] | None = None

    async def get(self, timeout_s: float) -> list[ReplyEntry]:
        """The entries read since the last call, waiting up to `timeout_s` for some ([] on timeout)."""
        if not self._entries and self._error is None:
            waiter = self._waiter = asyncio.get_running_loop().create_future()
            timer = waiter.get_loop().call_later(timeout_s, _wake, waiter)
            try:
                await waiter
            finally:
                timer.cancel()
                self._waiter = None
        if self._entries:
            entries, self._entries = self._entries, []
            return entries
        if self._error is not None:
            raise self._error
        return []

    def _deliver(self, entries: list[ReplyEntry]) -> None:
        self.last_id = entries[-1][0]
        self._entries += entries
        if self._waiter is not None:
            _wake(self._waiter)

    def _fail(self, error: RedisError) -> None:
        self._error = error
        if self._waiter is not None:
            _wake(self._waiter)


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


class ReplyReader:
    """The process's shared reader of reply streams: `start()` runs it as a task, `aclose()` stops it.

    `blocking` is a client of its own (one connection, socket timeout above `block_ms`); `control` is the
    request client that sends `CLIENT UNBLOCK`.
    """

    def __init__(
        self,
        blocking: aioredis.Redis,
        control: aioredis.Redis,
        block_ms: int,
        grace_s: float = UNBLOCK_GRACE_S,
    ) -> None:
        self._blocking = blocking
        self._control = control
        self._block_ms = block_ms
        self._grace_s = grace_s
        self._subs: dict[bytes, Subscription] = {}
        self._idle = asyncio.Event()
        #: Whether an XREAD is in flight; `_round` counts the XREADs sent.
        self._reading = False
        self._round = 0
        self._timer_round = self._unblocked_round = -1
        self._client_id: int | None = None
        self._tracked: AbstractConnection | None = None
        self._unblocks: set[asyncio.Task[None]] = set()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="reply-reader")

    def subscribe(self, key: str) -> Subscription:
        sub = Subscription(key.encode())
        self._subs[sub.key] = sub
        if not self._reading:
            self._idle.set()
        elif self._timer_round != self._round:
            self._timer_round = self._round
            asyncio.get_running_loop().call_later(self._grace_s, self._unblock_if_still, self._round)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        if self._subs.get(sub.key) is sub:
            del self._subs[sub.key]
        if not self._subs and self._reading:
            self._unblock_if_still(self._round)

    async def _run(self) -> None:
        while True:
            if not self._subs:
                self._idle.clear()
                await self._idle.wait()
                continue
            if not await self._read_once():
                await asyncio.sleep(FAILED_READ_PAUSE_S)

    async def _read_once(self) -> bool:
        """One XREAD over every subscribed key, its entries handed over; False when it failed."""
        streams = {key: sub.last_id for key, sub in self._subs.items()}
        self._reading = True
        self._round += 1
        try:
            await self._track_client_id()
            reply: Any = await self._blocking.xread(streams, block=self._block_ms)  # type: ignore[arg-type]
        except Exception as exc:  # a bug here must not leave every stream waiting
            if not isinstance(exc, RedisError):
                log.exception("reply_reader_failed")
                exc = RedisError("the reply reader failed")
            for key in streams:
                if (sub := self._subs.get(key)) is not None:
                    sub._fail(exc)
            return False
        finally:
            self._reading = False
        for key, entries in reply or ():
            if (sub := self._subs.get(key)) is not None:
                sub._deliver(entries)
        if reply:
            await asyncio.sleep(0)  # the relays just woken write first; the next XREAD can wait for them
        return True

    def _unblock_if_still(self, round_: int) -> None:
        """Release the reader's BLOCK if XREAD number `round_` is still waiting."""
        if not self._reading or self._round != round_ or self._unblocked_round == round_:
            return
        if self._client_id is None:  # not known yet: this read ends at its BLOCK timeout
            return
        self._unblocked_round = round_
        task = asyncio.create_task(self._unblock(self._client_id))
        self._unblocks.add(task)
        task.add_done_callback(self._unblocks.discard)

    async def _unblock(self, client_id: int) -> None:
        try:
            await self._control.client_unblock(client_id)
        except RedisError:  # the reader's own read fails too, or ends at its BLOCK timeout
            log.warning("reply_unblock_failed")

    async def _track_client_id(self) -> None:
        """Learn the reader connection's id once, then again on every reconnect before it sends a command."""
        if self._tracked is not None and self._tracked is self._blocking.connection:
            return
        await self._blocking.initialize()
        connection = self._blocking.connection
        assert connection is not None, "the reader's client must be a single-connection client"
        self._client_id = await self._blocking.client_id()
        connection.register_connect_callback(self._on_connect)  # type: ignore[no-untyped-call]
        self._tracked = connection

    async def _on_connect(self, connection: AbstractConnection) -> None:
        self._client_id = None
        await connection.send_command("CLIENT", "ID")
        self._client_id = int(await connection.read_response())

    async def aclose(self) -> None:
        """Stop the task. Python 3.11's `asyncio.wait_for` (redis-py sends each command through it) can
        swallow a cancellation that lands as its inner task ends, so cancel until the task is done."""
        tasks = [*self._unblocks, *([self._task] if self._task else [])]
        while not all(task.done() for task in tasks):
            for task in tasks:
                task.cancel()
            await asyncio.wait(tasks, timeout=0.05)
