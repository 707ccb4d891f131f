"""One job's life in a worker, from its stream entry to its ack, ending in a `JobOutcome`.

    entry ─ decode ─✗─► dead letter (undecodable)
              │ reclaimed (its consumer died): reply ended → ack; delivered too often → dead letter;
              │                                content already sent → abandoned (error, ack); else run again
              ▼
    deadline passed in the queue → timeout error
    else runner.run(request) within the deadline, stopped when the client leaves → the terminal error, if any
              ▼
    publisher closed (reply TTL set) → XACK → attachment bytes deleted → outcome (`kimi_worker_jobs_total{outcome}`,
    the job's log line)

The ack comes last: an entry whose worker dies before it stays pending, and another worker reclaims it. A
Redis failure does the same on purpose: the job is left unacked, and its reply stream says whether it can run
again. Every terminal error is a `shared.errors` exception made an `ErrorEvent` by `error_event`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from enum import Enum, StrEnum
from typing import Any

import msgspec
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from shared.attachments import AttachmentStore, request_attachments
from shared.errors import Cancelled, GatewayError, ServiceUnavailable, UpstreamTimeout, error_event
from shared.logging import get_logger
from shared.schema import Done, ErrorEvent, Event, Job, Keepalive, Start, events_decoder, job_decoder
from shared.settings import WorkerSettings
from upstream_worker import metrics
from upstream_worker.batcher import RedisBatcher
from upstream_worker.publisher import ReplyPublisher
from upstream_worker.queue import JobEntry, JobQueue
from upstream_worker.runner import HeldLease, KimiRunner

log = get_logger(__name__)


class JobOutcome(StrEnum):
    """How a job ended: the values of `kimi_worker_jobs_total{outcome}` and of the job line's `outcome`."""

    OK = "ok"
    #: The answer failed: its ErrorEvent is on the reply stream.
    ERROR = "error"
    #: The deadline passed, in the queue or while the job ran.
    TIMEOUT = "timeout"
    #: The gateway set the job's cancel key (the client left, or the gateway cut the answer).
    CANCELLED = "cancelled"
    #: Reclaimed after its dead worker had sent content: ended with a retryable error, never run twice.
    ABANDONED = "abandoned"
    #: Undecodable, or delivered more than `max_deliveries` times: moved to the dead-letter stream.
    DEAD_LETTER = "dead_letter"


class ReplyProgress(Enum):
    """What a reclaimed job's reply stream already holds."""

    #: Nothing, or only Start / Keepalive: the answer can start again from the beginning.
    EMPTY = "empty"
    #: Content but no terminal event: the client has part of an answer that nobody can finish.
    OPEN = "open"
    #: Done or ErrorEvent: only the ack is missing.
    ENDED = "ended"


class RunningJob:
    """What the worker's loops see of one job while it runs: its entry, its lease, its upstream call."""

    def __init__(self, entry_id: str) -> None:
        self.entry_id = entry_id
        #: The job id (the request id), once the entry is decoded.
        self.job_id: str | None = None
        self.held = HeldLease()
        self._upstream: asyncio.Task[None] | None = None
        self._stop_reason: JobOutcome | None = None

    @property
    def upstream_running(self) -> bool:
        return self._upstream is not None and not self._upstream.done()

    @property
    def stop_reason(self) -> JobOutcome | None:
        """Why the upstream call was stopped (CANCELLED or TIMEOUT); None when it was not."""
        return self._stop_reason

    def start(self, upstream: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        self._upstream = asyncio.create_task(upstream)
        return self._upstream

    def stop(self, reason: JobOutcome) -> None:
        """Cancel the upstream call, once; the job ends with the first `reason`'s error.

        Once: the cancel watch and the deadline keep asking while the call winds down (it releases its
        lease, cleans the upstream chat up), and a second cancellation would cut that short.
        """
        if self._stop_reason is None and self._upstream is not None and not self._upstream.done():
            self._stop_reason = reason
            self._upstream.cancel()


class JobLifecycle:
    """Takes a worker's job entries from delivery to ack; shared by every job of the worker."""

    def __init__(
        self, settings: WorkerSettings, redis: aioredis.Redis, queue: JobQueue, runner: KimiRunner
    ) -> None:
        self._max_deliveries = settings.max_deliveries
        self._redis = redis
        self._queue = queue
        self._runner = runner
        self._attachments = AttachmentStore(redis)
        #: The reply XADDs of every running job share pipelines (upstream_worker/batcher.py).
        self._batcher = RedisBatcher(redis)

    async def process(self, entry: JobEntry, running: RunningJob) -> JobOutcome | None:
        """The job's outcome, counted; None when Redis failed or the job crashed (left to be reclaimed)."""
        try:
            outcome = await self._process(entry, running)
        except (RedisError, OSError) as exc:
            log.warning("job_redis_failed", entry_id=entry.entry_id, error=str(exc))
            return None
        except Exception:
            log.exception("job_crashed", entry_id=entry.entry_id)
            return None
        metrics.JOBS.labels(outcome.value).inc()
        return outcome

    async def _process(self, entry: JobEntry, running: RunningJob) -> JobOutcome:
        job = _decode(entry.payload)
        if job is None:
            await self._queue.dead_letter(entry, "undecodable")
            log.warning("job_dead_lettered", entry_id=entry.entry_id, reason="undecodable")
            return JobOutcome.DEAD_LETTER
        running.job_id = job.request.request_id
        if entry.reclaimed:
            metrics.RECLAIMED.inc()
            settled = await self._settle_reclaimed(entry, job)
            if settled is not None:
                await self._drop_attachments(job)
                return settled
        outcome = await self._execute(job, running)
        await self._queue.ack(entry.entry_id)
        await self._drop_attachments(job)
        return outcome

    async def _drop_attachments(self, job: Job) -> None:
        """The job has ended: its attachment bytes go (their TTL only backs this up)."""
        if request_attachments(job.request.messages):
            await self._attachments.delete(job.request.request_id)

    async def _settle_reclaimed(self, entry: JobEntry, job: Job) -> JobOutcome | None:
        """A reclaimed job runs again (None) only when its reply has no content yet; else it ends here."""
        progress = await _reply_progress(self._redis, job.reply_key)
        if progress is ReplyProgress.ENDED:
            await self._queue.ack(entry.entry_id)
            return JobOutcome.OK
        if entry.deliveries > self._max_deliveries:
            failures = entry.deliveries - 1
            await self._end(
                job, GatewayError(f"the request failed {failures} times in a row and was set aside")
            )
            await self._queue.dead_letter(entry, "max_deliveries")
            log.warning("job_dead_lettered", request_id=job.request.request_id, deliveries=entry.deliveries)
            return JobOutcome.DEAD_LETTER
        if progress is ReplyProgress.OPEN:
            await self._end(
                job,
                ServiceUnavailable("the worker streaming this answer stopped mid-answer; retry the request"),
            )
            await self._queue.ack(entry.entry_id)
            log.warning("job_abandoned", request_id=job.request.request_id)
            return JobOutcome.ABANDONED
        return None

    async def _end(self, job: Job, error: GatewayError) -> None:
        publisher = self._publisher(job)
        publisher.publish(error_event(error))
        await publisher.aclose()

    async def _execute(self, job: Job, running: RunningJob) -> JobOutcome:
        request = job.request
        started_s = time.time()
        # A reply stream that lost events stops the job: the rest would be an answer with a hole in it.
        publisher = self._publisher(job, on_failure=lambda: running.stop(JobOutcome.ERROR))
        remaining_s = request.deadline_s - started_s if request.deadline_s else None
        if remaining_s is not None and remaining_s <= 0:
            publisher.publish(error_event(UpstreamTimeout("the request's deadline passed in the queue")))
            outcome = JobOutcome.TIMEOUT
        else:
            outcome = await self._run(job, publisher, running, remaining_s)
        if publisher.failed and outcome is JobOutcome.OK:
            publisher.publish(error_event(_stopped(JobOutcome.ERROR)))
            outcome = JobOutcome.ERROR
        await publisher.aclose()
        log.info(
            "job",
            request_id=request.request_id,
            model=request.model,
            dialect=request.dialect,
            outcome=outcome.value,
            account_id=running.held.account_id,
            queue_wait_ms=round((started_s - job.enqueued_s) * 1000) if job.enqueued_s else None,
            duration_ms=round((time.time() - started_s) * 1000),
        )
        return outcome

    async def _run(
        self, job: Job, publisher: ReplyPublisher, running: RunningJob, remaining_s: float | None
    ) -> JobOutcome:
        """Run the request upstream within its deadline; publish its terminal error, if any."""
        upstream = running.start(self._runner.run(job.request, publisher, running.held))
        try:
            done, _ = await asyncio.wait({upstream}, timeout=remaining_s)
        except asyncio.CancelledError:
            running.stop(JobOutcome.CANCELLED)
            await asyncio.wait({upstream})
            raise
        if not done:
            running.stop(JobOutcome.TIMEOUT)
            await asyncio.wait({upstream})
        if upstream.cancelled():
            reason = running.stop_reason or JobOutcome.CANCELLED
            publisher.publish(error_event(_stopped(reason)))
            return reason
        exc = upstream.exception()
        if exc is None:
            return JobOutcome.OK
        if isinstance(exc, RedisError | OSError):
            log.warning("job_redis_failed", request_id=job.request.request_id, error=str(exc))
            exc = _stopped(JobOutcome.ERROR)
        elif not isinstance(exc, GatewayError):
            log.error("job_failed", request_id=job.request.request_id, exc_info=exc)
        publisher.publish(error_event(exc))
        return JobOutcome.ERROR

    def _publisher(self, job: Job, on_failure: Callable[[], None] | None = None) -> ReplyPublisher:
        return ReplyPublisher(self._redis, job.reply_key, batcher=self._batcher, on_failure=on_failure)


def _stopped(reason: JobOutcome) -> GatewayError:
    """The error a stopped job ends with: its deadline, its client leaving, or Redis failing under it."""
    if reason is JobOutcome.TIMEOUT:
        return UpstreamTimeout("the request's deadline passed")
    if reason is JobOutcome.ERROR:
        return ServiceUnavailable("Redis failed while this answer was streaming; retry the request")
    return Cancelled("the client cancelled the request")


def _decode(payload: bytes | None) -> Job | None:
    if payload is None:
        return None
    try:
        return job_decoder.decode(payload)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None


async def _reply_progress(redis: aioredis.Redis, reply_key: str) -> ReplyProgress:
    """Only reclaimed jobs pay for reading their whole reply stream; an unreadable entry counts as content."""
    events: list[Event] = []
    for _entry_id, fields in await redis.xrange(reply_key) or []:
        try:
            events.extend(events_decoder.decode((fields or {})[b"e"]))  # type: ignore[arg-type]
        except (KeyError, TypeError, msgspec.DecodeError, msgspec.ValidationError):
            return ReplyProgress.OPEN
    if all(isinstance(event, Start | Keepalive) for event in events):
        return ReplyProgress.EMPTY
    return ReplyProgress.ENDED if isinstance(events[-1], Done | ErrorEvent) else ReplyProgress.OPEN
