"""The worker: consumes `kimi:jobs` as one consumer of the group `workers`, M jobs at a time.

    read loop      XREADGROUP > (as many as free slots) ─► one task per job ─► runner ─► reply stream, XACK
    claim loop     XAUTOCLAIM entries idle past claim_idle_ms (their consumer died): run again when the reply
                   stream holds no content yet (only Start / Keepalive), end it with an ErrorEvent when it
                   does, dead-letter after max_deliveries
    heartbeat      kimi:workers[<consumer>] = unix ms; touches in-flight entries so they never look idle;
                   extends leases; samples the queue gauges
    cancel watch   every CANCEL_POLL_S, one pipeline of EXISTS kimi:cancel:{job} for the running jobs

`run()` serves until `stop()` (SIGTERM): it stops reading, lets in-flight jobs finish and acks them.
`run(burst=True)` processes what is queued (and claimable) and returns, for tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass

import msgspec
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from shared import keys
from shared.errors import GatewayError, error_event
from shared.logging import get_logger
from shared.schema import Done, ErrorEvent, Event, Job, Keepalive, Start, job_decoder
from shared.schema import events_decoder as _events_decoder
from shared.settings import WorkerSettings
from token_service.client import AccountPool
from upstream_worker import metrics
from upstream_worker.batcher import RedisBatcher
from upstream_worker.publisher import ReplyPublisher
from upstream_worker.queue import JobEntry, JobQueue
from upstream_worker.runner import JobState, KimiRunner

log = get_logger(__name__)

#: A client that left is noticed within this long (one pipelined EXISTS per running job per poll).
CANCEL_POLL_S = 0.25
#: Pause after a Redis failure in a loop before trying again.
RETRY_PAUSE_S = 1.0
#: Entries XPENDING lists when recovering our own deliveries on shutdown.
OWN_PENDING_SCAN = 1_000
#: Events that carry no answer: a reply stream holding only these can be answered again from the start.
_PRELUDE = (Start, Keepalive)


@dataclass(slots=True)
class _Running:
    entry_id: str
    task: asyncio.Task[None]
    state: JobState | None = None
    upstream: asyncio.Task[None] | None = None
    stop_reason: str | None = None


class Worker:
    def __init__(
        self,
        settings: WorkerSettings,
        redis: aioredis.Redis,
        blocking_redis: aioredis.Redis,
        runner: KimiRunner,
        pool: AccountPool,
    ) -> None:
        self.settings = settings
        self._redis = redis
        #: The reply XADDs of every running job share pipelines (upstream_worker/batcher.py).
        self._batcher = RedisBatcher(redis)
        self._runner = runner
        self._pool = pool
        self.queue = JobQueue(redis, blocking_redis, settings.consumer_name)
        self._running: dict[str, _Running] = {}
        self._stopping = asyncio.Event()
        self._slot_freed = asyncio.Event()
        self._finished = asyncio.Event()
        #: Ends the background loops; an event, not Task.cancel(): redis-py may swallow a cancellation.
        self._loops_done = asyncio.Event()
        self._started = False

    @property
    def in_flight(self) -> int:
        return len(self._running)

    @property
    def serving(self) -> bool:
        return self._started and not self._finished.is_set()

    def stop(self) -> None:
        """Stop reading new jobs; `run()` returns once the running ones are done."""
        self._stopping.set()
        self._slot_freed.set()

    async def aclose(self) -> None:
        self.stop()
        if self._started:
            await self._finished.wait()

    async def run(self, *, burst: bool = False) -> None:
        self._started = True
        try:
            await self.queue.ensure_group()
            loops = [self._heartbeat_loop(), self._cancel_loop()]
            if not burst:
                loops.append(self._claim_loop())
            background = [asyncio.create_task(loop) for loop in loops]
            try:
                await (self._burst() if burst else self._serve())
                await self._drain()
            finally:
                self._loops_done.set()
                await asyncio.gather(*background, return_exceptions=True)
                await self._leave()
        finally:
            self._finished.set()

    # -- loops ----------------------------------------------------------------------------------------------

    async def _serve(self) -> None:
        stop_wait = asyncio.create_task(self._stopping.wait())
        try:
            while not self._stopping.is_set():
                await self._wait_for_slot()
                if self._stopping.is_set():
                    break
                read = asyncio.create_task(self.queue.read(self._free_slots(), keys.JOBS_BLOCK_MS))
                await asyncio.wait({read, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
                if not read.done():
                    await _cancel(read)
                    if not read.cancelled() and read.exception() is None:
                        self._start_all(read.result())
                    await self._recover_own()
                    break
                self._start_all(await self._entries_of(read))
        finally:
            stop_wait.cancel()

    async def _burst(self) -> None:
        self._start_all(await self.queue.claim_idle(self.settings.claim_idle_ms, self.settings.concurrency))
        while not self._stopping.is_set():
            await self._wait_for_slot()
            entries = await self.queue.read(self._free_slots(), None)
            if not entries:
                return
            self._start_all(entries)

    async def _claim_loop(self) -> None:
        interval_s = min(self.settings.claim_idle_ms / 2000, 5.0)
        while await self._pause(interval_s) and not self._stopping.is_set():
            free = self._free_slots()
            if free <= 0 or self._stopping.is_set():
                continue
            running = set(self._running)
            try:
                claimed = await self.queue.claim_idle(self.settings.claim_idle_ms, free)
            except (RedisError, OSError) as exc:
                log.warning("claim_failed", error=str(exc))
                continue
            self._start_all(self._not_started(claimed, running))

    async def _heartbeat_loop(self) -> None:
        settings = self.settings
        interval_s = min(
            settings.heartbeat_interval_s, settings.claim_idle_ms / 3000, settings.pool.lease_ttl_s / 3
        )
        sampled_s = 0.0
        while True:
            try:
                await self._beat()
                if time.monotonic() - sampled_s >= settings.heartbeat_interval_s:
                    sampled_s = time.monotonic()
                    await metrics.sample_queue(self._redis)
            except (RedisError, OSError) as exc:
                log.warning("heartbeat_failed", error=str(exc))
            if not await self._pause(interval_s):
                return

    async def _beat(self) -> None:
        now_s = time.time()
        pipe = self._redis.pipeline(transaction=False)
        pipe.hset(keys.WORKERS_HASH, self.queue.consumer, int(now_s * 1000))
        await pipe.execute()
        await self.queue.touch(list(self._running))
        metrics.HEARTBEAT.set(now_s)
        await self._extend_leases()

    async def _extend_leases(self) -> None:
        due_s = time.monotonic() - self.settings.pool.lease_ttl_s / 3
        for running in list(self._running.values()):
            state = running.state
            if state is not None and state.lease is not None and state.lease_extended_s <= due_s:
                state.lease_extended_s = time.monotonic()
                await self._pool.extend(state.lease)

    async def _cancel_loop(self) -> None:
        while await self._pause(CANCEL_POLL_S):
            watched = [r for r in self._running.values() if r.upstream is not None and not r.upstream.done()]
            if not watched:
                continue
            try:
                flags = await self._cancel_flags(watched)
            except (RedisError, OSError) as exc:
                log.warning("cancel_poll_failed", error=str(exc))
                continue
            for running, flag in zip(watched, flags, strict=True):
                if flag and running.upstream is not None:
                    running.stop_reason = "cancelled"
                    running.upstream.cancel()

    async def _cancel_flags(self, watched: list[_Running]) -> list[int]:
        pipe = self._redis.pipeline(transaction=False)
        for running in watched:
            assert running.state is not None
            pipe.exists(keys.cancel_key(running.state.job_id))
        return list(await pipe.execute())

    async def _pause(self, seconds: float) -> bool:
        """Sleep; False when the loops must end."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._loops_done.wait(), seconds)
        return not self._loops_done.is_set()

    # -- slots ----------------------------------------------------------------------------------------------

    def _free_slots(self) -> int:
        return self.settings.concurrency - len(self._running)

    async def _wait_for_slot(self) -> None:
        while self._free_slots() <= 0 and not self._stopping.is_set():
            self._slot_freed.clear()
            await self._slot_freed.wait()

    async def _entries_of(self, read: asyncio.Task[list[JobEntry]]) -> list[JobEntry]:
        try:
            return read.result()
        except (RedisError, OSError) as exc:
            log.warning("read_failed", error=str(exc))
            await asyncio.sleep(RETRY_PAUSE_S)
            return []

    async def _recover_own(self) -> None:
        """A read cancelled by shutdown may have been delivered anyway: finish those entries too."""
        running = set(self._running)
        try:
            own = await self.queue.own_pending(OWN_PENDING_SCAN)
        except (RedisError, OSError) as exc:
            log.warning("recover_failed", error=str(exc))
            return
        self._start_all(self._not_started(own, running))

    def _not_started(self, entries: list[JobEntry], running: set[str]) -> list[JobEntry]:
        """Entries this worker is not running and was not running when it asked Redis: one that was may
        have been acked and finished while the answer was on its way, and must not run twice."""
        return [e for e in entries if e.entry_id not in running and e.entry_id not in self._running]

    async def _drain(self) -> None:
        while self._running:
            await asyncio.gather(*(r.task for r in list(self._running.values())), return_exceptions=True)

    async def _leave(self) -> None:
        with contextlib.suppress(RedisError, OSError):
            await self._redis.hdel(keys.WORKERS_HASH, self.queue.consumer)

    # -- one job --------------------------------------------------------------------------------------------

    def _start_all(self, entries: list[JobEntry]) -> None:
        for entry in entries:
            task = asyncio.create_task(self._process(entry))
            self._running[entry.entry_id] = _Running(entry.entry_id, task)
            metrics.JOBS_IN_FLIGHT.inc()

    async def _process(self, entry: JobEntry) -> None:
        try:
            outcome = await self._handle(entry)
            metrics.JOBS.labels(outcome).inc()
        except (RedisError, OSError) as exc:
            # Unacked: the entry stays pending and another worker reclaims it.
            log.warning("job_redis_failed", entry_id=entry.entry_id, error=str(exc))
        except Exception:
            log.exception("job_crashed", entry_id=entry.entry_id)
        finally:
            self._running.pop(entry.entry_id, None)
            metrics.JOBS_IN_FLIGHT.dec()
            self._slot_freed.set()

    async def _handle(self, entry: JobEntry) -> str:
        job = _decode(entry.payload)
        if job is None:
            await self.queue.dead_letter(entry, "undecodable")
            log.warning("job_dead_lettered", entry_id=entry.entry_id, reason="undecodable")
            return "dead_letter"
        if entry.reclaimed:
            metrics.RECLAIMED.inc()
            settled = await self._settle_reclaimed(entry, job)
            if settled is not None:
                return settled
        outcome = await self._execute(entry, job)
        await self.queue.ack(entry.entry_id)
        return outcome

    async def _settle_reclaimed(self, entry: JobEntry, job: Job) -> str | None:
        """A reclaimed job runs again only when its reply stream has no content yet; otherwise it ends here."""
        status = await _reply_status(self._redis, job.reply_key)
        if status == "ended":
            await self.queue.ack(entry.entry_id)
            return "ok"
        if entry.deliveries > self.settings.max_deliveries:
            await self._end(job, _dead_letter_error(entry.deliveries - 1))
            await self.queue.dead_letter(entry, "max_deliveries")
            log.warning("job_dead_lettered", request_id=job.request.request_id, deliveries=entry.deliveries)
            return "dead_letter"
        if status == "open":
            await self._end(job, _abandoned_error())
            await self.queue.ack(entry.entry_id)
            log.warning("job_abandoned", request_id=job.request.request_id)
            return "abandoned"
        return None

    async def _end(self, job: Job, error: ErrorEvent) -> None:
        publisher = ReplyPublisher(self._redis, job.reply_key, batcher=self._batcher)
        publisher.publish(error)
        await publisher.aclose()

    async def _execute(self, entry: JobEntry, job: Job) -> str:
        request = job.request
        started_s = time.time()
        publisher = ReplyPublisher(self._redis, job.reply_key, batcher=self._batcher)
        state = JobState(request.request_id)
        remaining_s = request.deadline_s - started_s if request.deadline_s else None
        if remaining_s is not None and remaining_s <= 0:
            publisher.publish(
                ErrorEvent(kind="timeout", message="the request's deadline passed in the queue")
            )
            outcome = "timeout"
        else:
            outcome = await self._run_upstream(entry, job, publisher, state, remaining_s)
        await publisher.aclose()
        log.info(
            "job",
            request_id=request.request_id,
            model=request.model,
            dialect=request.dialect,
            outcome=outcome,
            account_id=state.account_id,
            queue_wait_ms=round((started_s - job.enqueued_s) * 1000) if job.enqueued_s else None,
            duration_ms=round((time.time() - started_s) * 1000),
        )
        return outcome

    async def _run_upstream(
        self, entry: JobEntry, job: Job, publisher: ReplyPublisher, state: JobState, remaining_s: float | None
    ) -> str:
        running = self._running[entry.entry_id]
        upstream = asyncio.create_task(self._runner.run(job.request, publisher, state))
        running.state, running.upstream = state, upstream
        try:
            done, _ = await asyncio.wait({upstream}, timeout=remaining_s)
        except asyncio.CancelledError:
            await _cancel(upstream)
            raise
        if not done:
            running.stop_reason = "timeout"
            await _cancel(upstream)
        if upstream.cancelled():
            reason = running.stop_reason or "cancelled"
            publisher.publish(_stopped_error(reason))
            return reason
        exc = upstream.exception()
        if exc is None:
            return "ok"
        publisher.publish(error_event(exc))
        if not isinstance(exc, GatewayError):
            log.error("job_failed", request_id=job.request.request_id, exc_info=exc)
        return "error"


async def _cancel(task: asyncio.Task[object] | asyncio.Task[None] | asyncio.Task[list[JobEntry]]) -> None:
    task.cancel()
    await asyncio.wait({task})


def _decode(payload: bytes | None) -> Job | None:
    if payload is None:
        return None
    try:
        return job_decoder.decode(payload)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None


async def _reply_status(redis: aioredis.Redis, reply_key: str) -> str:
    """ "empty" (nothing, or only Start / Keepalive: safe to answer again), "open" (content but no terminal
    event) or "ended" (Done / ErrorEvent published). Only reclaimed jobs pay for reading the whole stream."""
    events: list[Event] = []
    for _entry_id, fields in await redis.xrange(reply_key) or []:
        try:
            events.extend(_events_decoder.decode((fields or {})[b"e"]))  # type: ignore[arg-type]
        except (KeyError, TypeError, msgspec.DecodeError, msgspec.ValidationError):
            return "open"
    if all(isinstance(event, _PRELUDE) for event in events):
        return "empty"
    return "ended" if isinstance(events[-1], Done | ErrorEvent) else "open"


def _stopped_error(reason: str) -> ErrorEvent:
    if reason == "timeout":
        return ErrorEvent(kind="timeout", message="the request's deadline passed", status=504)
    return ErrorEvent(kind="cancelled", message="the client cancelled the request", status=499)


def _abandoned_error() -> ErrorEvent:
    return ErrorEvent(
        kind="unavailable",
        message="the worker streaming this answer stopped mid-answer; retry the request",
        retryable=True,
        status=503,
    )


def _dead_letter_error(failures: int) -> ErrorEvent:
    return ErrorEvent(
        kind="internal",
        message=f"the request failed {failures} times in a row and was set aside",
        status=500,
    )
