"""The worker: consumes `kimi:jobs` as one consumer of the group `workers`, M jobs at a time.

It runs loops only; one job's life, from its entry to its ack, is upstream_worker/job.py.

    read loop      XREADGROUP > (as many as free slots) ─► one task per job (JobLifecycle.process)
    claim loop     XAUTOCLAIM entries idle past claim_idle_ms (their consumer died) ─► one task per job
    heartbeat      kimi:workers[<consumer>] = unix ms, in one round trip with creating the group (Redis
                   may have lost it); touches in-flight entries so they never look idle; extends leases;
                   samples the queue gauges
    cancel watch   every CANCEL_POLL_S, one pipeline of EXISTS kimi:cancel:{job} for the running jobs
    chat sweep     every CHAT_SWEEP_INTERVAL_S (0: off), one batch of the kept chats of lapsed stored responses
                   deleted from Kimi (upstream_worker/sweeper.py); stops claiming chats once the worker stops

`run()` serves until `stop()` (SIGTERM): it stops reading, lets in-flight jobs finish and acks them.
`run(burst=True)` processes what is queued (and claimable) and returns, for tests. A loop that dies of an
unexpected error stops the worker too, and `run()` then raises `WorkerFailed`: the process exits non-zero, so
its supervisor (compose, systemd) restarts it instead of keeping a worker that no longer reads or heartbeats.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from shared import keys
from shared.logging import get_logger
from shared.settings import WorkerSettings
from token_service.client import AccountPool
from upstream_worker import metrics
from upstream_worker.job import JobLifecycle, JobOutcome, RunningJob
from upstream_worker.queue import JobEntry, JobQueue
from upstream_worker.runner import KimiRunner
from upstream_worker.sweeper import ChatSweeper

log = get_logger(__name__)

#: A client that left is noticed within this long (one pipelined EXISTS per running job per poll).
CANCEL_POLL_S = 0.25
#: Pause after a Redis failure in a loop before trying again.
RETRY_PAUSE_S = 1.0
#: Entries XPENDING lists when recovering our own deliveries on shutdown.
OWN_PENDING_SCAN = 1_000


class WorkerFailed(Exception):
    """A loop of the worker died of an unexpected error: the process must exit non-zero and be restarted."""


@dataclass(frozen=True, slots=True)
class _Running:
    task: asyncio.Task[None]
    job: RunningJob


class Worker:
    def __init__(
        self,
        settings: WorkerSettings,
        redis: aioredis.Redis,
        blocking_redis: aioredis.Redis,
        runner: KimiRunner,
        pool: AccountPool,
        sweeper: ChatSweeper | None = None,
    ) -> None:
        self.settings = settings
        self._redis = redis
        self._pool = pool
        self._sweeper = sweeper
        self.queue = JobQueue(redis, blocking_redis, settings.consumer_name)
        self._jobs = JobLifecycle(settings, redis, self.queue, runner)
        self._running: dict[str, _Running] = {}
        self._stopping = asyncio.Event()
        self._slot_freed = asyncio.Event()
        self._finished = asyncio.Event()
        #: Ends the background loops; an event, not Task.cancel(): redis-py may swallow a cancellation.
        self._loops_done = asyncio.Event()
        self._started = False
        #: The loop that died of an unexpected error, and the error (`run()` raises WorkerFailed from it).
        self._failure: tuple[str, BaseException] | None = None

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
        """Serve until `stop()`; raise `WorkerFailed` when a loop died of an unexpected error (after the
        jobs in flight had a bounded time to finish), so that the process exits non-zero."""
        self._started = True
        try:
            await self.queue.ensure_group()
            loops = {"heartbeat": self._heartbeat_loop(), "cancel": self._cancel_loop()}
            if not burst:
                loops["claim"] = self._claim_loop()
                if self._sweeper is not None and self.settings.chat_sweep_interval_s > 0:
                    loops["sweep"] = self._sweep_loop(self._sweeper)
            background = [self._watch(name, loop) for name, loop in loops.items()]
            try:
                try:
                    await (self._burst() if burst else self._serve())
                except Exception as exc:
                    self._fail("read", exc)
                await self._drain()
            finally:
                self._loops_done.set()
                await asyncio.gather(*background, return_exceptions=True)
                await self._leave()
            if self._failure is not None:
                raise WorkerFailed(f"the worker's {self._failure[0]} loop failed") from self._failure[1]
        finally:
            self._finished.set()

    def _watch(self, name: str, loop: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        """Run a background loop; its death by an exception (or a cancellation) fails the worker."""
        task = asyncio.create_task(loop, name=f"worker-{name}")

        def ended(task: asyncio.Task[None]) -> None:
            failure = asyncio.CancelledError() if task.cancelled() else task.exception()
            if failure is not None and not self._loops_done.is_set():
                self._fail(name, failure)

        task.add_done_callback(ended)
        return task

    def _fail(self, loop: str, exc: BaseException) -> None:
        """A loop died: stop reading jobs; `run()` raises once the jobs in flight are dealt with."""
        if self._failure is None:
            self._failure = (loop, exc)
            log.error("worker_loop_failed", loop=loop, consumer=self.queue.consumer, exc_info=exc)
        self.stop()

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
        await self.queue.announce(int(now_s * 1000))
        await self.queue.touch(list(self._running))
        metrics.HEARTBEAT.set(now_s)
        await self._extend_leases()

    async def _extend_leases(self) -> None:
        every_s = self.settings.pool.lease_ttl_s / 3
        for running in list(self._running.values()):
            lease = running.job.held.due(every_s)
            if lease is not None:
                await self._pool.extend(lease)

    async def _cancel_loop(self) -> None:
        failing = False  # one line per outage, not four a second
        while await self._pause(CANCEL_POLL_S):
            watched = [r.job for r in self._running.values() if r.job.upstream_running]
            if not watched:
                continue
            try:
                flags = await self._cancel_flags(watched)
            except (RedisError, OSError) as exc:
                if not failing:
                    log.warning("cancel_poll_failed", error=str(exc))
                failing = True
                continue
            failing = False
            for job, flag in zip(watched, flags, strict=True):
                if flag:
                    job.stop(JobOutcome.CANCELLED)

    async def _sweep_loop(self, sweeper: ChatSweeper) -> None:
        failing = False  # one line per outage, not one per sweep
        while await self._pause(self.settings.chat_sweep_interval_s) and not self._stopping.is_set():
            try:
                await sweeper.sweep(self._stopping)
            except Exception as exc:  # a sweep must never stop the worker: the chats wait for the next one
                if not failing:
                    redis_down = isinstance(exc, RedisError | OSError)
                    log.warning("chat_sweep_failed", error=str(exc) if redis_down else type(exc).__name__)
                failing = True
                continue
            failing = False

    async def _cancel_flags(self, watched: list[RunningJob]) -> list[int]:
        pipe = self._redis.pipeline(transaction=False)
        for job in watched:
            assert job.job_id is not None
            pipe.exists(keys.cancel_key(job.job_id))
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
        """Let the running jobs finish. After a loop failure (maybe the heartbeat's, so nothing touches their
        entries any more) only for half of `claim_idle_ms`; the rest are cancelled, left to be reclaimed."""
        deadline = time.monotonic() + self.settings.claim_idle_ms / 2000
        while self._running:
            tasks = {r.task for r in self._running.values()}
            if self._failure is None:
                await asyncio.wait(tasks)
                continue
            _, late = await asyncio.wait(tasks, timeout=max(0.0, deadline - time.monotonic()))
            for task in late:
                task.cancel()
            await asyncio.wait(tasks)

    async def _leave(self) -> None:
        with contextlib.suppress(RedisError, OSError):
            await self._redis.hdel(keys.WORKERS_HASH, self.queue.consumer)

    # -- jobs ---------------------------------------------------------------------------------------------

    def _start_all(self, entries: list[JobEntry]) -> None:
        for entry in entries:
            if entry.entry_id in self._running:  # delivered again while it runs (a group created anew)
                continue
            job = RunningJob(entry.entry_id)
            self._running[entry.entry_id] = _Running(asyncio.create_task(self._process(entry, job)), job)
            metrics.JOBS_IN_FLIGHT.inc()

    async def _process(self, entry: JobEntry, job: RunningJob) -> None:
        try:
            await self._jobs.process(entry, job)
        finally:
            self._running.pop(entry.entry_id, None)
            metrics.JOBS_IN_FLIGHT.dec()
            self._slot_freed.set()


async def _cancel(task: asyncio.Task[Any]) -> None:
    task.cancel()
    await asyncio.wait({task})
