"""Runs one job against Kimi: lease an account, stream the answer, fail over before the first token.

    lease → credentials → driver.chat(call) ─ events ─► publisher
      ▲          │ 429 / quota / overload / 401 / 5xx / connection error, before the first token
      └──────────┘ release with that outcome, exclude the account, try the next (max_attempts)

Kimi's "another stream of this user is still running" (`UpstreamStreamBusy`, right after a cut-short turn) is
not held against the account: released `cancelled`, skipped for one lease, and asked again after a short wait
when no other account can serve (a continued conversation always): `upstream_worker/retries.py`.

After the first token there is no retry: the error is raised and becomes the stream's in-band ErrorEvent.
A client's mistake that Kimi refuses (BadRequest, NotFound) goes to the client unchanged and the account is
released `ok`: it is not the account's fault. Until the first content, a Keepalive goes out every
`keepalive_interval_s`, so that the gateway's idle timer measures real silence, not Kimi's thinking time.
Done is held back until the driver has finished, so that `Usage` (estimated from the prompt and the streamed
text) goes out right before it; the lease is released right after (one round trip), so the client's end never
waits for it.

A kept chat's conversation record is written from the turn's `Start` on, in the pipeline of the XADD that
carries `Start` (upstream_worker/conversations.py), and again when the turn learns its assistant message id:
the id a client reads is always resolvable, and Redis holds the record's latest state before the account is
released to the conversation's next turn.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Protocol

import aiohttp
import redis.asyncio as aioredis

from shared.errors import (
    ClientError,
    ContentFiltered,
    GatewayError,
    ModelNotFound,
    NotFound,
    UpstreamAuthError,
    UpstreamError,
    UpstreamOverloaded,
    UpstreamProtocolError,
    UpstreamRateLimited,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from shared.logging import get_logger
from shared.models import ModelSpec, resolve_model
from shared.schema import (
    ChatRequest,
    Citation,
    Done,
    Event,
    Keepalive,
    ReasoningDelta,
    Start,
    TextDelta,
    Usage,
)
from shared.settings import WorkerSettings
from shared.usage_estimate import estimate_prompt_tokens, estimate_tokens
from token_service.client import BUSY_POLL_S, AccountPool, Lease, ReleaseOutcome, protocol_for
from upstream_worker import conversations, metrics
from upstream_worker.conversations import Conversation, RecordTracker
from upstream_worker.kimi.call import KimiCredentials, UpstreamCall
from upstream_worker.kimi.failures import UpstreamStreamBusy
from upstream_worker.publisher import ReplyPublisher
from upstream_worker.retries import RetryBudget

log = get_logger(__name__)

#: How long a job waits for an account while every usable one is at its concurrency cap (a continued
#: conversation waits for its own account, whose previous turn may still be releasing it).
LEASE_WAIT_S = 10.0
#: `Start` (ids only) waits this long at most for the first content or keep-alive to share its stream entry:
#: one XADD and one gateway wake-up less per request. The gateway needs it before the first content only.
START_HOLD_S = 0.25
_CONTENT = (TextDelta, ReasoningDelta, Citation)


class Driver(Protocol):
    """A Kimi protocol client (upstream_worker/kimi: RestDriver, ConnectDriver)."""

    def chat(self, call: UpstreamCall) -> AsyncIterator[Event]: ...

    async def delete_chat(self, creds: KimiCredentials, chat_id: str) -> bool: ...


@dataclass(slots=True)
class JobState:
    """What the worker watches while a job runs: the current lease, to extend it."""

    job_id: str
    lease: Lease | None = None
    #: The last account leased, for the job's log line.
    account_id: str | None = None
    lease_extended_s: float = field(default_factory=time.monotonic)


@dataclass(slots=True)
class _Attempt:
    """The current attempt's upstream call, for the conversation record."""

    call: UpstreamCall
    protocol: str
    #: The parent id sent to Kimi: a parent id the driver reports that differs from it was learned this turn.
    sent_parent_id: str | None
    #: The call continues a chat (else Kimi created one for it).
    continuing: bool


@dataclass(slots=True)
class _Answer:
    """The events of one job so far, for failover decisions, the usage estimate and the conversation record."""

    publisher: ReplyPublisher
    #: A kept chat's conversation record (None when the chat is deleted after the turn).
    record: RecordTracker | None = None
    attempt: _Attempt | None = None
    started: bool = False
    sent_start: bool = False
    #: Kimi accepted the current attempt's turn (its Start came): a kept chat now holds the user's message.
    accepted: bool = False
    #: The job was cancelled (the client left, or the gateway cut the answer) while an attempt ran.
    cut: bool = False
    parts: list[str] = field(default_factory=list)
    done: Done | None = None
    account_id: str | None = None

    def take(self, event: Event) -> None:
        if isinstance(event, Start):
            self.accepted = True
        if isinstance(event, Done):
            self.done = event
        if self.record is not None:
            self.track(self.record)
        if isinstance(event, Done):
            return
        if isinstance(event, Start):
            if self.sent_start:  # a retried attempt: the client already has its Start
                return
            self.sent_start = True
            conversation_id = self.record.conversation_id if self.record else None
            event = Start(
                conversation_id=conversation_id or event.conversation_id,
                account_id=event.account_id or self.account_id,
            )
            self.publisher.hold(event, START_HOLD_S)
            return
        if isinstance(event, _CONTENT):
            self.started = True
            if not isinstance(event, Citation):
                self.parts.append(event.text)
        self.publisher.publish(event)

    def track(self, record: RecordTracker) -> None:
        """Once Kimi holds the turn, keep the record current (its writes ride with the next XADDs).

        A new chat is Kimi's from its Start. A continued one only from its answer (Connect's `Start` of a
        continued chat means no more than HTTP 200: "stream busy" may follow, and a refused call must not
        touch the record the running turn writes), or once the job is cut after its Start (a call Kimi
        refused raises instead). The parent id is this turn's assistant message id once the driver learned
        it, else empty (Kimi appends to the chat's head), never the previous turn's.
        """
        attempt = self.attempt
        if attempt is None or not self.accepted or self.account_id is None:
            return
        call = attempt.call
        if not call.chat_id:
            return
        learned = call.parent_id != attempt.sent_parent_id
        if attempt.continuing and not (learned or self.started or self.done or self.cut):
            return
        parent_id = call.parent_id if learned else None
        record.update(Conversation(self.account_id, attempt.protocol, call.chat_id, parent_id))


class KimiRunner:
    def __init__(
        self, settings: WorkerSettings, redis: aioredis.Redis, pool: AccountPool, drivers: dict[str, Driver]
    ) -> None:
        self._settings = settings
        self._redis = redis
        self._pool = pool
        self._drivers = drivers

    async def run(self, request: ChatRequest, publisher: ReplyPublisher, state: JobState) -> None:
        """Publish the whole answer, ending with Usage + Done; raise a GatewayError when it fails."""
        spec = resolve_model(request.model)
        if spec is None:
            raise ModelNotFound(f"the model {request.model!r} does not exist")
        conversation = await self._conversation(request)
        record = RecordTracker(request.options.conversation_id, publisher) if _keeps(request) else None
        answer = _Answer(publisher, record)
        ticker = asyncio.create_task(_keep_alive(answer, self._settings.keepalive_interval_s))
        try:
            await self._run(request, spec, conversation, answer, state)
        finally:
            ticker.cancel()
            await asyncio.wait({ticker})

    async def _run(
        self,
        request: ChatRequest,
        spec: ModelSpec,
        conversation: Conversation | None,
        answer: _Answer,
        state: JobState,
    ) -> None:
        only = {conversation.account_id} if conversation else _account_ids(request)
        budget = RetryBudget(self._settings.max_attempts, request.deadline_s)
        first = True
        while True:
            asked_s = time.monotonic()
            lease = await self._lease(only, budget)
            if conversation is not None and (not first or time.monotonic() - asked_s >= BUSY_POLL_S):
                conversation = await self._latest(request, conversation)
            first = False
            if conversation is not None and lease.ephemeral and not request.account_ids:
                # A pass-through client's chat: the server's pool never continues it for someone else.
                await self._pool.release(lease, "cancelled")
                raise _unknown_conversation(request.options.conversation_id or conversation.chat_id)
            try:
                await self._attempt(request, spec, conversation, lease, answer, state)
                return
            except UpstreamError as exc:
                if answer.started or not budget.retry_after(lease.account_id, exc):
                    raise
                _log_retry(state.job_id, lease.account_id, exc)

    async def _lease(self, only: set[str] | None, budget: RetryBudget) -> Lease:
        """The next account to try: any not yet failed, else (after a short wait) one that was only busy."""
        while True:
            # With a busy account to come back to, do not wait seconds for another one at its cap.
            wait_s = 0.0 if budget.busy else LEASE_WAIT_S
            try:
                return await self._pool.lease(exclude=budget.excluded, only=only, wait_s=wait_s)
            except GatewayError:
                if await budget.wait_for_busy():
                    continue
                # No other account to fail over to: the client learns why the last one failed.
                if budget.last_error is not None:
                    raise budget.last_error from None
                raise

    async def _attempt(
        self,
        request: ChatRequest,
        spec: ModelSpec,
        conversation: Conversation | None,
        lease: Lease,
        answer: _Answer,
        state: JobState,
    ) -> None:
        state.lease, state.account_id, state.lease_extended_s = lease, lease.account_id, time.monotonic()
        answer.account_id, answer.accepted = lease.account_id, False
        protocol = protocol_for(lease.kind, spec)
        driver = self._drivers[protocol]
        outcome: ReleaseOutcome = "upstream_error"
        retry_after_s: float | None = None
        call: UpstreamCall | None = None
        try:
            creds = await self._pool.credentials(lease)
            sent_parent_id = conversation.parent_id if conversation else None
            call = UpstreamCall(
                request,
                spec,
                creds,
                chat_id=conversation.chat_id if conversation else None,
                parent_id=sent_parent_id,
                keep_chat=_keeps(request),
            )
            answer.attempt = _Attempt(call, protocol, sent_parent_id, conversation is not None)
            await _stream(driver, call, answer, protocol)
            outcome = "ok"
        except ClientError as exc:
            metrics.UPSTREAM_ERRORS.labels(protocol, exc.kind).inc()
            outcome = "ok"
            raise
        except UpstreamError as exc:
            metrics.UPSTREAM_ERRORS.labels(protocol, exc.kind).inc()
            outcome, retry_after_s = _outcome_of(exc), exc.retry_after_s
            raise
        except asyncio.CancelledError:
            outcome, answer.cut = "cancelled", True
            raise
        finally:
            await self._finish(lease, outcome, retry_after_s, call, answer, driver, state)

    async def _finish(
        self,
        lease: Lease,
        outcome: ReleaseOutcome,
        retry_after_s: float | None,
        call: UpstreamCall | None,
        answer: _Answer,
        driver: Driver,
        state: JobState,
    ) -> None:
        """Publish Usage + Done (on success), then release the account, then clean the upstream chat up.

        The client's end waits for nothing. A kept chat's record is in Redis before the release, so the
        conversation's next turn, which waits for the account (`LEASE_WAIT_S`), reads its latest parent id.
        """
        if outcome == "ok" and call is not None and answer.done is not None:
            _publish_end(answer, call)
        if answer.record is not None:
            answer.track(answer.record)
            await answer.record.settle(self._redis)
        state.lease = None
        await self._pool.release(lease, outcome, retry_after_s=retry_after_s)
        if call is not None and call.should_delete and call.chat_id:
            await _delete_quietly(driver, call.creds, call.chat_id)

    async def _conversation(self, request: ChatRequest) -> Conversation | None:
        """The kept chat to continue; NotFound when unknown, expired, or another client's (pass-through)."""
        conversation_id = request.options.conversation_id
        if not conversation_id:
            return None
        conversation = await conversations.load(self._redis, conversation_id)
        allowed = _account_ids(request)
        if conversation is None or (allowed is not None and conversation.account_id not in allowed):
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


async def _keep_alive(answer: _Answer, every_s: float) -> None:
    """A Keepalive every `every_s` until the first content: lease waits and Kimi's first byte are not silence."""
    while True:
        await asyncio.sleep(every_s)
        if answer.started:
            return
        answer.publisher.publish(Keepalive())


async def _stream(driver: Driver, call: UpstreamCall, answer: _Answer, protocol: str) -> None:
    started = time.monotonic()
    first = True
    try:
        async for event in driver.chat(call):
            if first:
                metrics.UPSTREAM_TTFB.labels(protocol).observe(time.monotonic() - started)
                first = False
            answer.take(event)
    except (aiohttp.ClientError, OSError) as exc:
        raise UpstreamUnavailable(f"Kimi connection failed: {type(exc).__name__}") from exc
    except TimeoutError as exc:
        raise UpstreamTimeout("Kimi did not answer in time") from exc
    finally:
        metrics.UPSTREAM_DURATION.labels(protocol).observe(time.monotonic() - started)
    if answer.done is None:
        raise UpstreamProtocolError("Kimi's stream ended without its terminal event")


def _publish_end(answer: _Answer, call: UpstreamCall) -> None:
    request = call.request
    prompt = estimate_prompt_tokens([m.text() for m in request.messages])
    completion = estimate_tokens("".join(answer.parts))
    answer.publisher.publish(Usage(prompt_tokens=prompt, completion_tokens=completion, estimated=True))
    done = answer.done or Done()
    conversation_id = (answer.record.conversation_id if answer.record else None) or done.conversation_id
    conversation_id = conversation_id or call.chat_id
    if done.conversation_id != conversation_id:
        done = Done(finish_reason=done.finish_reason, conversation_id=conversation_id)
    answer.publisher.publish(done)


async def _delete_quietly(driver: Driver, creds: KimiCredentials, chat_id: str) -> None:
    try:
        await driver.delete_chat(creds, chat_id)
    except (GatewayError, aiohttp.ClientError, OSError, TimeoutError) as exc:
        # Drivers log their own failures and return False; this only guards against a raising one.
        log.warning("chat_delete_failed", account_id=creds.account_id, error=type(exc).__name__)


def _log_retry(job_id: str, account_id: str, exc: UpstreamError) -> None:
    if isinstance(exc, UpstreamStreamBusy):
        log.info("stream_busy", request_id=job_id, account_id=account_id)
        return
    log.info("failover", request_id=job_id, account_id=account_id, kind=exc.kind)
    metrics.FAILOVERS.inc()


def _outcome_of(exc: UpstreamError) -> ReleaseOutcome:
    if isinstance(exc, UpstreamStreamBusy):
        # Kimi refused the call before running it: nothing is learned about the account, nothing held against it.
        return "cancelled"
    if isinstance(exc, UpstreamAuthError):
        return "auth_failed"
    if isinstance(exc, UpstreamRateLimited):
        return "quota" if "quota" in exc.message.lower() else "rate_limited"
    if isinstance(exc, UpstreamOverloaded):
        return "overloaded"
    if isinstance(exc, ContentFiltered):
        return "ok"
    return "upstream_error"


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
