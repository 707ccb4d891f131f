"""Runs one request upstream: lease an account, stream the answer, fail over before the first content.

    lease → credentials → drivers[protocol].chat(call) ─ events ─► Answer ─► publisher
      ▲          │ a failover error, before the first content
      └──────────┘ release with its outcome, exclude the account, try the next (max_attempts)

The protocol of an attempt follows from the account's kind and the model (`token_service.client.protocol_for`, the kinds registry);
its driver comes from the registry keyed by protocol (upstream_worker/drivers.py). What a failure means for
the account and for the job follows from its type (upstream_worker/retries.py): Kimi's "another stream of
this user is still running" (`UpstreamStreamBusy`) is not held against the account: released `cancelled`,
skipped for one lease, asked again after a short wait when no other account can serve.

After the first content there is no retry: the error is raised and becomes the stream's in-band ErrorEvent.
A client's mistake that Kimi refuses (BadRequest, NotFound) goes to the client unchanged and the account is
released `ok`. The answer (upstream_worker/answer.py) ends with Usage and Done once the driver has finished;
the lease is released right after (one round trip), so the client's end never waits for it; the driver's
trace cleanup comes last.

One attempt is: credentials → call → stream. Work an attempt needs per account before the call (uploading
attachments) belongs between the credentials and the stream, so that its failures fail over like the call's.

Tools on a web lane (a protocol of `drivers.PROMPTED_TOOLS`; docs/TOOLS.md): the attempt's `ToolTurn`
(upstream_worker/tool_turn.py) gives the driver the prompt protocol's messages and reads the calls out of the
answer text. An answer whose calls are unusable is repaired once inside the same attempt, on the same lease
(`_settle_tools`): the correction as the kept chat's next turn, else a new chat; a second failure is an
`UpstreamProtocolError`, never failed over (the calls, like content, end the failover window).

A kept chat's conversation record is written from the turn's `Start` on, in the pipeline of the XADD that
carries `Start` (upstream_worker/conversations.py), and again when the turn learns its assistant message id:
the id a client reads is always resolvable, and Redis holds the record's latest state before the account is
released to the conversation's next turn.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

import aiohttp
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from shared.attachments import request_attachments
from shared.errors import (
    ClientError,
    GatewayError,
    ModelNotFound,
    NotFound,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamStreamBusy,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from shared.logging import get_logger
from shared.models import ModelSpec, resolve_model
from shared.schema import ChatRequest, Done, Event
from shared.settings import WorkerSettings
from token_service.client import BUSY_POLL_S, AccountPool, Lease, ReleaseOutcome, Ticket, protocol_for
from upstream_worker import conversations, metrics, routing
from upstream_worker.answer import Answer, Attempt, keep_alive
from upstream_worker.attachments import Attachments
from upstream_worker.conversations import Conversation, RecordTracker
from upstream_worker.drivers import PROMPTED_TOOLS, Driver
from upstream_worker.kimi.call import UpstreamCall
from upstream_worker.kimi.files import FileForgotten
from upstream_worker.kimi.flatten import turn_attachments
from upstream_worker.publisher import ReplyPublisher
from upstream_worker.retries import STREAM_BUSY_WAITS_S, RetryBudget, release_outcome
from upstream_worker.tool_turn import ToolTurn
from upstream_worker.toolcalls import ToolCallFailure, ToolState, needs_tool_prompt

log = get_logger(__name__)

#: How long a job waits for an account while every usable one is at its concurrency cap (a continued
#: conversation waits for its own account, whose previous turn may still be releasing it).
LEASE_WAIT_S = 10.0
#: Pause between two tries of a release that failed on Redis (a restart takes about a second).
RELEASE_RETRY_S = 0.5
_T = TypeVar("_T")


@dataclass(slots=True)
class HeldLease:
    """The account a running job holds, for the heartbeat to extend; the last one, for the job's log line."""

    lease: Lease | None = None
    account_id: str | None = None
    extended_s: float = field(default_factory=time.monotonic)

    def hold(self, lease: Lease) -> None:
        self.lease, self.account_id, self.extended_s = lease, lease.account_id, time.monotonic()

    def due(self, every_s: float) -> Lease | None:
        """The lease when it was last extended `every_s` ago or more (it counts as extended from now on)."""
        if self.lease is None or time.monotonic() - self.extended_s < every_s:
            return None
        self.extended_s = time.monotonic()
        return self.lease


class KimiRunner:
    def __init__(
        self,
        settings: WorkerSettings,
        redis: aioredis.Redis,
        pool: AccountPool,
        drivers: dict[str, Driver],
        attachments: Attachments,
    ) -> None:
        self._settings = settings
        self._redis = redis
        self._pool = pool
        self._drivers = drivers
        self._attachments = attachments

    async def run(self, request: ChatRequest, publisher: ReplyPublisher, held: HeldLease) -> None:
        """Publish the whole answer, ending with Usage + Done; raise a GatewayError when it fails."""
        spec = resolve_model(request.model)
        if spec is None:
            raise ModelNotFound(f"the model {request.model!r} does not exist")
        conversation = await self._conversation(request)
        record = (
            RecordTracker(request.options.conversation_id, publisher, request.client_id)
            if _keeps(request)
            else None
        )
        answer = Answer(publisher, record, tool_state=conversation.tools if conversation else None)
        ticker = asyncio.create_task(keep_alive(answer, self._settings.keepalive_interval_s))
        try:
            await self._run(request, spec, conversation, answer, held)
        finally:
            ticker.cancel()
            await asyncio.wait({ticker})

    async def _run(
        self,
        request: ChatRequest,
        spec: ModelSpec,
        conversation: Conversation | None,
        answer: Answer,
        held: HeldLease,
    ) -> None:
        route = routing.route_for(spec, self._settings)
        only = {conversation.account_id} if conversation else _account_ids(request)
        budget = RetryBudget(self._settings.max_attempts, request.deadline_s)
        ticket = self._ticket(request, route)
        first = True
        while True:
            asked_s = time.monotonic()
            lease = await self._lease(route, only, budget, ticket)
            answer.serving.set()
            try:
                if conversation is not None and (not first or time.monotonic() - asked_s >= BUSY_POLL_S):
                    conversation = await self._latest(request, conversation)
                first = False
                if conversation is not None and lease.ephemeral and not request.account_ids:
                    # A pass-through client's chat: the server's pool never continues it for someone else.
                    raise _unknown_conversation(request.options.conversation_id or conversation.chat_id)
            except BaseException:  # the attempt below owns the lease from its start; until then, this does
                await to_the_end(self._release(lease, "cancelled"))
                raise
            try:
                await self._attempt(request, spec, conversation, lease, answer, held)
                return
            except UpstreamError as exc:
                if not answer.state.before_content or not budget.retry_after(lease.account_id, exc):
                    raise
                _log_retry(request.request_id, lease.account_id, exc)

    def _ticket(self, request: ChatRequest, route: routing.Route) -> Ticket:
        """The job's place in the pool's waiting line, should every account be busy: arrival is when this
        worker took the job (the job stream hands jobs out in the order they came)."""
        return Ticket(
            job_id=request.request_id,
            arrival_ms=round(time.time() * 1000),
            line=route.line,
            client=request.client_id,
            client_max=self._settings.queue_client_max,
        )

    async def _lease(
        self, route: routing.Route, only: set[str] | None, budget: RetryBudget, ticket: Ticket
    ) -> Lease:
        """The next account to try, in the route's order of kinds: any not yet failed, else (after a short
        wait) one that was only busy. A job of the shared pool waits in its line up to `queue_wait_s`; one
        pinned to its accounts (`only`: a conversation's own, pass-through ones) up to `LEASE_WAIT_S`."""
        while True:
            # With a busy account to come back to, do not wait seconds for another one at its cap.
            wait_s = 0.0 if budget.busy else LEASE_WAIT_S if only else self._settings.queue_wait_s
            try:
                return await self._take(route, budget.excluded, only, wait_s, None if only else ticket)
            except GatewayError:
                if await budget.wait_for_busy():
                    continue
                # No other account to fail over to: the client learns why the last one failed.
                if budget.last_error is not None:
                    raise budget.last_error from None
                raise

    async def _take(
        self,
        route: routing.Route,
        exclude: set[str],
        only: set[str] | None,
        wait_s: float,
        ticket: Ticket | None,
    ) -> Lease:
        """`pool.lease`, run to its end even when the job is cancelled meanwhile (the lease script may have
        run already): a lease it brings back then is released at once, so none is taken and forgotten.
        A job cancelled while it waits for a busy account stops at the wait's next poll (`stop`)."""
        stop = asyncio.Event()
        taking = asyncio.ensure_future(
            routing.lease(
                self._pool, route, exclude=exclude, only=only, wait_s=wait_s, ticket=ticket, stop=stop
            )
        )
        try:
            return await to_the_end(taking, on_cancel=stop.set)
        except asyncio.CancelledError:
            if not taking.cancelled() and taking.exception() is None:
                await to_the_end(self._release(taking.result(), "cancelled"))
            raise

    async def _attempt(
        self,
        request: ChatRequest,
        spec: ModelSpec,
        conversation: Conversation | None,
        lease: Lease,
        answer: Answer,
        held: HeldLease,
    ) -> None:
        held.hold(lease)
        answer.begin()
        protocol = protocol_for(lease.kind, spec)
        driver = self._drivers[protocol]
        turn = _tool_turn(request, protocol, conversation, answer)
        calls: list[UpstreamCall] = []
        failure: BaseException | None = None
        try:
            creds = await self._pool.credentials(lease)
            sent_parent_id = conversation.parent_id if conversation else None
            call = UpstreamCall(
                turn.upstream_request if turn else request,
                spec,
                creds,
                chat_id=conversation.chat_id if conversation else None,
                parent_id=sent_parent_id,
                keep_chat=_keeps(request),
            )
            calls.append(call)
            parts = turn_attachments(request.messages, protocol, call.is_continuation)
            call.files = await self._attachments.files_for(protocol, creds, request.request_id, parts)
            answer.attempt = Attempt(call, protocol, sent_parent_id, conversation is not None)
            done = await _stream(driver, call, turn.take if turn else answer.take, protocol)
            if turn is not None:
                done = await _settle_tools(turn, call, done, driver, protocol, calls)
            answer.end(call, done)
            routing.count_served(lease.kind, spec)
        except asyncio.CancelledError as exc:
            failure = exc
            answer.cut()
            raise
        except Exception as exc:
            failure = exc
            if isinstance(exc, ClientError | UpstreamError):
                metrics.UPSTREAM_ERRORS.labels(protocol, exc.kind).inc()
            if isinstance(exc, FileForgotten):
                await self._attachments.forget(
                    protocol, lease.account_id, request_attachments(request.messages)
                )
            raise
        finally:
            # Runs to its end even if the job is cancelled (again) meanwhile: the lease is always released.
            await to_the_end(self._finish(lease, failure, calls, answer, driver, held))

    async def _finish(
        self,
        lease: Lease,
        failure: BaseException | None,
        calls: list[UpstreamCall],
        answer: Answer,
        driver: Driver,
        held: HeldLease,
    ) -> None:
        """After Usage + Done (on success): release the account, then let the driver clean the turn up.

        The client's end waits for nothing. A kept chat's record is in Redis before the release, so the
        conversation's next turn, which waits for the account (`LEASE_WAIT_S`), reads its latest parent id.
        Every call of the attempt is cleaned up (a repair in a new chat leaves the failed answer's chat).
        """
        if answer.record is not None:
            answer.track(answer.record)
            try:
                await answer.record.settle(self._redis)
            except (RedisError, OSError) as exc:  # the release below matters more
                log.warning("conversation_record_failed", account_id=lease.account_id, error=str(exc))
        held.lease = None
        retry_after_s = failure.retry_after_s if isinstance(failure, UpstreamError) else None
        await self._release(lease, release_outcome(failure), retry_after_s)
        for call in calls:
            await driver.cleanup(call)

    async def _release(
        self, lease: Lease, outcome: ReleaseOutcome, retry_after_s: float | None = None
    ) -> None:
        """Release the lease; while Redis is unreachable (restarting), try again every `RELEASE_RETRY_S`
        until the lease would have expired by itself, so that a restarted Redis finds the account free."""
        expires = time.monotonic() + self._pool.settings.lease_ttl_s
        while True:
            try:
                await self._pool.release(lease, outcome, retry_after_s=retry_after_s)
                return
            except (RedisError, OSError) as exc:
                if time.monotonic() + RELEASE_RETRY_S >= expires:
                    raise
                log.warning("release_retrying", account_id=lease.account_id, error=str(exc))
                await asyncio.sleep(RELEASE_RETRY_S)

    async def _conversation(self, request: ChatRequest) -> Conversation | None:
        """The kept chat to continue; NotFound when unknown, expired, or another client's (its owner, or for
        pass-through, its account)."""
        conversation_id = request.options.conversation_id
        if not conversation_id:
            return None
        conversation = await conversations.load(self._redis, conversation_id)
        allowed = _account_ids(request)
        if conversation is None or (allowed is not None and conversation.account_id not in allowed):
            raise _unknown_conversation(conversation_id)
        if conversation.owner != request.client_id:
            raise _unknown_conversation(conversation_id)
        return conversation

    async def _latest(self, request: ChatRequest, conversation: Conversation) -> Conversation:
        """The record read again after waiting for the account (its lease, or a stream-busy answer): the
        turn that held it has ended meanwhile, and its assistant message is the parent of this one."""
        assert request.options.conversation_id is not None
        latest = await conversations.load(self._redis, request.options.conversation_id)
        if latest is None or latest.account_id != conversation.account_id:
            return conversation
        return latest if latest.chat_id == conversation.chat_id else conversation


async def _stream(driver: Driver, call: UpstreamCall, take: Callable[[Event], None], protocol: str) -> Done:
    """Feed the driver's events to the answer (`take`); the driver's Done, which it must end with."""
    started = time.monotonic()
    first = True
    done: Done | None = None
    try:
        async for event in driver.chat(call):
            if first:
                metrics.UPSTREAM_TTFB.labels(protocol).observe(time.monotonic() - started)
                first = False
            take(event)
            if isinstance(event, Done):
                done = event
    except (aiohttp.ClientError, OSError) as exc:
        # The Kimi drivers translate their transport's errors themselves; this guards it for any driver.
        raise UpstreamUnavailable(f"Kimi connection failed: {type(exc).__name__}") from exc
    except TimeoutError as exc:
        raise UpstreamTimeout("Kimi did not answer in time") from exc
    finally:
        metrics.UPSTREAM_DURATION.labels(protocol).observe(time.monotonic() - started)
    if done is None:
        raise UpstreamProtocolError("Kimi's stream ended without its terminal event")
    return done


async def _settle_tools(
    turn: ToolTurn, call: UpstreamCall, done: Done, driver: Driver, protocol: str, calls: list[UpstreamCall]
) -> Done:
    """Publish a tool answer's calls; on a failure, first the one repair on the same account (its call is
    added to `calls`, for the cleanup). The Done to end with."""
    result = turn.finish()
    if result.failure is not None and not _past(turn.request.deadline_s):
        call = _repair_call(turn, call, result.failure)
        calls.append(call)
        turn.answer.attempt = Attempt(call, protocol, call.parent_id, call.chat_id is not None)
        log.info("tool_call_repair", request_id=turn.request.request_id, kind=result.failure.kind)
        done = await _stream_repair(driver, call, turn, protocol)
        result = turn.finish()
    return turn.publish(result, done)


async def _stream_repair(driver: Driver, call: UpstreamCall, turn: ToolTurn, protocol: str) -> Done:
    """The repair's stream. Kimi may still count the failed answer's stream as running for a moment: a
    "stream busy" answer is asked again after the retries' short waits."""
    for wait_s in (*STREAM_BUSY_WAITS_S, None):
        try:
            return await _stream(driver, call, turn.take, protocol)
        except UpstreamStreamBusy:
            if wait_s is None:
                raise
            await asyncio.sleep(wait_s)
    raise AssertionError("unreachable")


def _tool_turn(
    request: ChatRequest, protocol: str, conversation: Conversation | None, answer: Answer
) -> ToolTurn | None:
    """The tool side of an attempt on a web lane; None when the request has no tools or the lane takes them."""
    if protocol not in PROMPTED_TOOLS or not needs_tool_prompt(request):
        return None
    kept = (conversation.tools or ToolState()) if conversation else None
    return ToolTurn.begin(request, answer, kept)


def _repair_call(turn: ToolTurn, failed: UpstreamCall, failure: ToolCallFailure) -> UpstreamCall:
    """The repair's call: a kept chat continues after the failed answer, any other starts a new chat."""
    same_chat = failed.keep_chat and failed.chat_id is not None
    turn.repair(failure, same_chat=same_chat)
    return UpstreamCall(
        turn.upstream_request,
        failed.spec,
        failed.creds,
        chat_id=failed.chat_id if same_chat else None,
        parent_id=failed.parent_id if same_chat else None,
        keep_chat=failed.keep_chat,
        files=[] if same_chat else list(failed.files),
    )


def _past(deadline_s: float) -> bool:
    """The job's deadline has passed (0: none): no repair is worth starting."""
    return bool(deadline_s) and time.time() >= deadline_s


async def to_the_end(work: Awaitable[_T], on_cancel: Callable[[], object] | None = None) -> _T:
    """Await `work` until it is done, even if the caller is cancelled meanwhile (once or more; `on_cancel` is
    called then, to ask the work to end early); the caller's cancellation is raised afterwards. For what must
    not be cut short: taking and releasing a lease."""
    task = asyncio.ensure_future(work)
    cancelled = False
    while not task.done():
        try:
            await asyncio.wait({task})
        except asyncio.CancelledError:
            cancelled = True
            if on_cancel is not None:
                on_cancel()
    if cancelled:
        if not task.cancelled():
            task.exception()  # retrieved: the caller's cancellation is what propagates
        raise asyncio.CancelledError
    return task.result()


def _log_retry(job_id: str, account_id: str, exc: UpstreamError) -> None:
    if isinstance(exc, UpstreamStreamBusy):
        log.info("stream_busy", request_id=job_id, account_id=account_id)
        return
    log.info("failover", request_id=job_id, account_id=account_id, kind=exc.kind)
    metrics.FAILOVERS.inc()


def _keeps(request: ChatRequest) -> bool:
    """The chat outlives the turn: a new kept conversation, or a turn of one."""
    return request.options.keep_chat or bool(request.options.conversation_id)


def _account_ids(request: ChatRequest) -> set[str] | None:
    return set(request.account_ids) if request.account_ids else None


def _unknown_conversation(conversation_id: str) -> NotFound:
    return NotFound(
        f"conversation {conversation_id!r} is unknown or has expired; "
        'send conversation_id "none" to start a new kept conversation',
        param="conversation_id",
    )
