"""The one chat handler of every dialect: request → job on `kimi:jobs` → reply stream → the dialect's bytes.

Contract: docs/INTERNALS.md, "Request path". Headers wait for the first content event or the first
keep-alive, so errors before that leave with their real HTTP status; after that they are in-band. The relay's
own keep-alives start with the worker's first event (the worker sends its first once the job holds an account). Every
request has an overall deadline and an idle deadline; a reply without its terminal event is an error. A client
that leaves (failed write, closed transport) sets the job's cancel key, as does every other early exit. So does
a client that stops reading: a write that cannot drain before the request's deadline (an in-band error after
it: `FINAL_WRITE_GRACE_S`) drops the connection, and the handler, its subscription and its job end with it.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from dataclasses import dataclass

import msgspec
from aiohttp import web
from redis.exceptions import RedisError

from adapters.base import Parsed, Renderer, RequestContext
from adapters.common import prompt_tokens
from gateway import metrics, stored_responses
from gateway.attachments.intake import attachment_body_bytes
from gateway.auth import check_client, client_credential, client_id, store_passthrough
from gateway.client_keys import admit, any_managed_keys, check_model, managed_key, owner_id
from gateway.jobs import enqueue
from gateway.replies import ReplyEntry, Subscription
from gateway.resources import INTAKE, PASSTHROUGH, REDIS, REPLIES, SETTINGS, WORKER_WATCH
from gateway.routes import ChatRoute
from shared.attachment_input import AttachmentInput
from shared.attachments import AttachmentStore, attachment_ttl_s
from shared.client_keys import ClientKey, Limits, RequestRecord, record_request, redact
from shared.errors import (
    AuthenticationFailed,
    GatewayError,
    PayloadTooLarge,
    ServiceUnavailable,
    UpstreamAuthError,
    UpstreamTimeout,
    error_from_event,
)
from shared.keys import CANCEL_TTL_S, REPLY_BLOCK_MS, cancel_key, reply_key
from shared.logging import get_logger
from shared.models import resolve_model
from shared.redis_client import gateway_error
from shared.schema import (
    ChatRequest,
    Citation,
    Done,
    ErrorEvent,
    Event,
    Job,
    Keepalive,
    ReasoningDelta,
    Start,
    TextDelta,
    ToolCallEvent,
    Usage,
    events_decoder,
)
from shared.usage_estimate import estimate_tokens

REQUEST_ID = web.RequestKey("request_id", str)
#: The longest a relay waits for entries before it looks at its client's transport and deadlines again.
_WAIT_S = REPLY_BLOCK_MS / 1000
#: How long the last bytes (an in-band error once the deadline has passed, the stream's end) may take to
#: drain: a reader that keeps up takes milliseconds; one that does not is dropped.
FINAL_WRITE_GRACE_S = 2.0
#: The events counted as chunks in the canonical log line.
_CHUNK_EVENTS = (TextDelta, ReasoningDelta, Citation, ToolCallEvent)

log = get_logger("gateway.relay")


@dataclass(slots=True)
class RequestSummary:
    """What the canonical log line and the metrics say about one request."""

    dialect: str
    #: The model id as the client spelled it (the log line), and its bounded metric label.
    model: str = "-"
    model_label: str = "-"
    status: int = 200
    account_id: str | None = None
    #: The serving account's public kind (`kimi_web`, `api_key`), from the worker's Start.
    upstream_kind: str | None = None
    error: str | None = None
    ttft_s: float | None = None
    chunks: int = 0
    bytes: int = 0
    #: The managed client key (shared/client_keys.py) that authenticated the request; when its limits admitted
    #: it (0: they did not, so it holds no concurrency slot and counted no tokens).
    client_key: ClientKey | None = None
    admitted_s: float = 0.0
    #: Token counts: the upstream's Usage when it sent one (`usage_estimated` False), else estimates.
    prompt_tokens: int = 0
    completion_tokens: int | None = None
    usage_estimated: bool = True
    #: The answer's text, for the completion estimate of a managed key's request and body capture.
    texts: list[str] | None = None
    #: The last user message, only with body capture on (REQUEST_LOG_BODY_CHARS).
    prompt_text: str | None = None


#: Which kind of account served the answer: `kimi_web` (a Kimi web account) or `api_key` (an official API key).
UPSTREAM_KIND_HEADER = "x-upstream-kind"


class _StreamResponse(web.StreamResponse):
    """A stream whose headers leave in the same packet as its first bytes: the relay commits the headers only
    when it has bytes to write, so sending them alone would cost a syscall and a client wake-up more."""

    _send_headers_immediately = False  # aiohttp >= 3.11: headers wait for the first write


class _ClientGone(Exception):
    """A write failed or the transport closed: the client left."""


@asynccontextmanager
async def redis_errors() -> AsyncIterator[None]:
    """Translate redis-py failures at the boundary."""
    try:
        yield
    except RedisError as exc:
        raise gateway_error(exc) from exc


async def handle_chat(request: web.Request, route: ChatRoute) -> web.StreamResponse:
    """Authenticate, parse, enqueue and relay one chat request of the route's dialect."""
    started = time.perf_counter()
    request_id = uuid.uuid4().hex
    request[REQUEST_ID] = request_id
    outcome = RequestSummary(dialect=route.dialect.name)
    metrics.IN_FLIGHT.inc()
    try:
        parsed, ctx = await _prepare(request, route, request_id, outcome)
        turn = await stored_responses.begin(request, parsed)
        try:
            response = await _relay(request, route, turn.parsed, ctx, outcome, started)
        except GatewayError as exc:
            if not turn.replay_instead(exc):
                raise
            response = await _relay(request, route, turn.parsed, ctx, outcome, started)
        await turn.keep()
        return response
    except GatewayError as exc:
        outcome.status, outcome.error = exc.status, exc.kind
        raise
    except Exception:
        outcome.status, outcome.error = 500, "internal"
        raise
    finally:
        metrics.IN_FLIGHT.dec()
        duration_s = time.perf_counter() - started
        if outcome.admitted_s:
            await _settle_key(request, outcome)
        await _record(request, request_id, outcome, duration_s)
        _finish(request_id, outcome, duration_s)


async def _relay(
    request: web.Request,
    route: ChatRoute,
    parsed: Parsed,
    ctx: RequestContext,
    outcome: RequestSummary,
    started: float,
) -> web.StreamResponse:
    renderer = route.dialect.renderer(parsed.request, parsed.reply, ctx)
    return await Relay(request, parsed.request, renderer, outcome, started).run()


async def _prepare(
    request: web.Request, route: ChatRoute, request_id: str, outcome: RequestSummary
) -> tuple[Parsed, RequestContext]:
    settings = request.app[SETTINGS]
    now_s = time.time()
    query, model = dict(request.query), request.match_info.get("model")
    ctx = RequestContext(request_id, path_model=model, query=query, now_s=now_s, stream=route.stream)
    key = outcome.client_key = await managed_key(request, client_credential(request))
    # Managed keys in Redis close an open gateway and turn `auto` pass-through off, like GATEWAY_API_KEYS.
    managed = key is None and not settings.api_keys and await any_managed_keys(request)
    tokens = None if key is not None else check_client(request, settings, managed_keys=managed)
    chat, reply = await _parse(request, route, ctx)
    outcome.model = chat.model
    spec = resolve_model(chat.model)
    outcome.model_label = spec.label if spec is not None else "-"
    if settings.request_log_body_chars > 0:
        users = [m for m in chat.messages if m.role == "user"]
        outcome.prompt_text, outcome.texts = (users[-1].text() if users else ""), []
    if key is not None:  # before any work: the model list, then one atomic limit check
        check_model(key, chat.model)
        outcome.prompt_tokens = prompt_tokens(chat.messages)
        await admit(request, key, outcome.prompt_tokens, request_id, now_s)
        outcome.admitted_s = now_s
        outcome.texts = [] if outcome.texts is None else outcome.texts
    chat = await _take_attachments(request, chat, ctx.attachments)
    async with redis_errors():  # a client's own tokens are stored only for a request that parsed
        account_ids = await store_passthrough(tokens, request.app[PASSTHROUGH])
    chat = msgspec.structs.replace(
        chat,
        request_id=request_id,
        deadline_s=now_s + settings.request_timeout_s,
        account_ids=account_ids,
        client_id=client_id(request, tokens) if key is None else owner_id(key),
    )
    return Parsed(chat, reply), ctx


async def _record(request: web.Request, request_id: str, outcome: RequestSummary, duration_s: float) -> None:
    """The request log line (every request) and, for a managed key, its usage and metrics; no text at all."""
    key = outcome.client_key
    completion = outcome.completion_tokens or 0
    prompt = outcome.prompt_tokens if outcome.admitted_s else 0
    model = outcome.model_label if outcome.model_label != "-" else outcome.model[:64]
    if key is not None:
        label, outcome_label = metrics.key_label(key.name), "ok" if outcome.status < 400 else "error"
        estimated = "true" if outcome.usage_estimated else "false"
        metrics.KEY_REQUESTS.labels(label, outcome.model_label, outcome_label).inc()
        metrics.KEY_TOKENS.labels(label, outcome.model_label, "prompt", estimated).inc(prompt)
        metrics.KEY_TOKENS.labels(label, outcome.model_label, "completion", estimated).inc(completion)
    record = RequestRecord(
        t=time.time(),
        request_id=request_id,
        key="-" if key is None else key.name,
        key_id="" if key is None else key.id,
        dialect=outcome.dialect,
        model=model,
        status=outcome.status,
        error=outcome.error or "",
        account=outcome.account_id or "",
        duration_ms=round(duration_s * 1000, 2),
        ttft_ms=None if outcome.ttft_s is None else round(outcome.ttft_s * 1000, 2),
        prompt_tokens=prompt,
        completion_tokens=completion,
        estimated=outcome.usage_estimated,
    )
    cap = request.app[SETTINGS].request_log_body_chars
    if cap > 0 and outcome.prompt_text is not None:
        record.prompt = redact(outcome.prompt_text, cap)
        record.answer = redact("".join(outcome.texts or []), cap)
    try:
        await record_request(request.app[REDIS], record)
    except RedisError:
        log.warning("request_record_failed", request_id=request_id)


async def _settle_key(request: web.Request, outcome: RequestSummary) -> None:
    """A managed key's request ended: free its concurrency slot and count its completion tokens."""
    assert outcome.client_key is not None
    if outcome.completion_tokens is None:
        outcome.completion_tokens = estimate_tokens("".join(outcome.texts or []))
    try:
        await Limits(request.app[REDIS]).finish(
            outcome.client_key, request[REQUEST_ID], outcome.admitted_s, outcome.completion_tokens
        )
    except RedisError:
        log.warning("key_settle_failed", request_id=request.get(REQUEST_ID))


async def _parse(request: web.Request, route: ChatRoute, ctx: RequestContext) -> Parsed:
    """Parse a body of up to the attachment cap; one above `MAX_BODY_BYTES` must carry attachments."""
    settings = request.app[SETTINGS]
    small = settings.max_body_bytes
    body = await read_body(request, attachment_body_bytes(small, settings.attachments))
    try:
        parsed = route.dialect.parse(body, ctx)
    except GatewayError:
        if len(body) > small and not ctx.attachments:
            raise _too_large(small) from None
        raise
    if len(body) > small and not ctx.attachments:
        raise _too_large(small)
    return parsed


def _too_large(small: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"The request body exceeds {small} bytes (more is allowed only for attachments).")


async def _take_attachments(
    request: web.Request, chat: ChatRequest, inputs: list[AttachmentInput]
) -> ChatRequest:
    """Fetch, check and store the request's attachments (before its job exists); the request with them."""
    if not inputs:
        return chat
    taken = await request.app[INTAKE].take(chat, inputs)
    ttl_s = attachment_ttl_s(request.app[SETTINGS].request_timeout_s)
    async with redis_errors():
        await AttachmentStore(request.app[REDIS]).put(chat.request_id, taken.blobs, ttl_s)
    return taken.request


async def read_body(request: web.Request, limit: int) -> bytes:
    if request.content_length is not None and request.content_length > limit:
        raise PayloadTooLarge(f"The request body exceeds {limit} bytes.")
    try:
        return await request.read()
    except web.HTTPRequestEntityTooLarge as exc:
        raise PayloadTooLarge(f"The request body exceeds {limit} bytes.") from exc


def _finish(request_id: str, outcome: RequestSummary, duration_s: float) -> None:
    """The canonical log line and the request metrics."""
    metrics.REQUESTS.labels(outcome.dialect, outcome.model_label, str(outcome.status)).inc()
    metrics.REQUEST_DURATION.labels(outcome.dialect).observe(duration_s)
    if outcome.ttft_s is not None:
        metrics.TIME_TO_FIRST_TOKEN.labels(outcome.dialect).observe(outcome.ttft_s)
    if outcome.upstream_kind is not None:
        metrics.REQUESTS_BY_KIND.labels(outcome.upstream_kind, outcome.model_label).inc()
    log.info(
        "request",
        request_id=request_id,
        dialect=outcome.dialect,
        model=outcome.model,
        account_id=outcome.account_id,
        upstream_kind=outcome.upstream_kind,
        status=outcome.status,
        error=outcome.error,
        duration_ms=round(duration_s * 1000, 2),
        ttft_ms=None if outcome.ttft_s is None else round(outcome.ttft_s * 1000, 2),
        chunks=outcome.chunks,
        bytes=outcome.bytes,
    )


class Relay:
    """One job's reply stream, relayed to one client through the dialect's renderer."""

    def __init__(
        self,
        request: web.Request,
        chat: ChatRequest,
        renderer: Renderer,
        outcome: RequestSummary,
        started: float,
    ) -> None:
        self.request = request
        self.chat = chat
        self.outcome = outcome
        self.started = started
        self.settings = request.app[SETTINGS]
        self.renderer = renderer
        self.key = reply_key(chat.request_id)
        self.response: web.StreamResponse | None = None
        self.terminal = False
        self.cancelled = False
        self.last_write = time.monotonic()
        self.deadline = self.last_write + self.settings.request_timeout_s

    async def run(self) -> web.StreamResponse:
        await self._enqueue()
        metrics.OVERHEAD.labels(self.outcome.dialect).observe(time.perf_counter() - self.started)
        replies = self.request.app[REPLIES]
        subscription = replies.subscribe(self.key)  # reads from 0-0: nothing the worker wrote is missed
        try:
            return await self._pump(subscription)
        except _ClientGone:
            return self._client_gone()
        except GatewayError as exc:
            if self.response is None:
                raise
            return await self._fail_in_band(exc)
        except Exception:
            if self.response is None:
                raise
            log.exception("unhandled_error", request_id=self.chat.request_id)
            return await self._fail_in_band(GatewayError("Internal server error."))
        finally:
            if not self.terminal and not self.cancelled:
                await self._cancel_job()
            if self.response is not None:
                metrics.OPEN_STREAMS.dec()
            replies.unsubscribe(subscription)

    async def _enqueue(self) -> None:
        async with redis_errors():
            alive = await self.request.app[WORKER_WATCH].any_alive()
        if not alive:
            raise ServiceUnavailable(
                "No upstream worker is running, so nothing can answer: start one with "
                "`python -m upstream_worker` (or use `make run`)."
            )
        job = Job(request=self.chat, reply_key=self.key, enqueued_s=time.time())
        async with redis_errors():
            await enqueue(self.request.app[REDIS], job, self.settings.jobs_backlog_max)

    async def _pump(self, subscription: Subscription) -> web.StreamResponse:
        settings = self.settings
        now = time.monotonic()
        deadline = self.deadline = now + settings.request_timeout_s
        idle_deadline = now + settings.idle_timeout_s
        # No keep-alive before the worker's first event: while the job waits for an account the status stays
        # open, so a wait that runs out leaves as a real 429 (README "Waiting for an account").
        interval = float("inf")
        self.last_write = now
        while True:
            if self._transport_closed():
                raise _ClientGone
            now = time.monotonic()
            if now >= deadline:
                raise UpstreamTimeout(f"The request took longer than {settings.request_timeout_s:g} s.")
            if now >= idle_deadline:
                raise UpstreamTimeout(f"No reply from Kimi for {settings.idle_timeout_s:g} s.")
            if now >= self.last_write + interval:
                await self._send(self.renderer.keepalive())
                self.last_write = now
            wake = min(deadline, idle_deadline, self.last_write + interval)
            entries = await self._read(subscription, min(_WAIT_S, wake - now + 0.001))
            if not entries:
                continue
            idle_deadline = time.monotonic() + settings.idle_timeout_s
            if interval == float("inf") and self.renderer.stream:
                # The job holds an account: pings from here on, the first one an interval away.
                interval, self.last_write = settings.keepalive_interval_s, time.monotonic()
            # Every entry that arrived together leaves in one write.
            await self._apply(
                [event for _, fields in entries for event in events_decoder.decode(fields[b"e"])]
            )
            if self.terminal or self.renderer.finished:
                return await self._complete()

    @staticmethod
    async def _read(subscription: Subscription, timeout_s: float) -> list[ReplyEntry]:
        async with redis_errors():
            return await subscription.get(timeout_s)

    async def _apply(self, events: list[Event]) -> None:
        """Render a batch of events and write it in one go; an ErrorEvent ends the request."""
        out: list[bytes] = []
        for event in events:
            if isinstance(event, ErrorEvent):
                self.terminal = True
                await self._send(b"".join(out))
                raise self._client_error(error_from_event(event))
            if isinstance(event, Keepalive) and self.response is None:
                continue  # the worker's first one says it holds an account: the relay's pings take over
            if isinstance(event, Start):
                self.outcome.account_id = event.account_id or self.outcome.account_id
                self.outcome.upstream_kind = event.kind or self.outcome.upstream_kind
            if isinstance(event, _CHUNK_EVENTS):
                self._count_chunk()
            if isinstance(event, Usage):
                self.outcome.prompt_tokens = event.prompt_tokens
                self.outcome.completion_tokens = event.completion_tokens
                self.outcome.usage_estimated = event.estimated
            elif isinstance(event, TextDelta | ReasoningDelta) and self.outcome.texts is not None:
                self.outcome.texts.append(event.text)
            data = self.renderer.feed(event)
            if data:
                out.append(data)
            if isinstance(event, Done):
                self.terminal = True
            if self.terminal or self.renderer.finished:
                break
        await self._send(b"".join(out))

    def _client_error(self, error: GatewayError) -> GatewayError:
        """Kimi refusing a pass-through client's own token is that client's bad credential: a 401, not a 5xx."""
        if self.chat.account_ids is not None and isinstance(error, UpstreamAuthError):
            return AuthenticationFailed(f"Kimi refused the pass-through token ({error.message}).")
        return error

    def _count_chunk(self) -> None:
        """Chunks and time to first token count content as it arrives, in stream and non-stream mode alike."""
        self.outcome.chunks += 1
        if self.outcome.ttft_s is None:
            self.outcome.ttft_s = time.perf_counter() - self.started

    async def _send(self, data: bytes) -> None:
        if not data or not self.renderer.stream:
            return
        response = self.response or await self._commit()
        await self._write(response.write(data))
        self.outcome.bytes += len(data)
        self.last_write = time.monotonic()

    async def _commit(self) -> web.StreamResponse:
        """Send the stream's headers and the renderer's head."""
        response = _StreamResponse(
            status=200,
            headers={
                "Content-Type": self.renderer.content_type,
                "Cache-Control": "no-cache",
                "X-Accel-Buffering": "no",
                **self._ids(),
            },
        )
        try:
            await response.prepare(self.request)
        except ConnectionError as exc:
            raise _ClientGone from exc
        self.response = response
        metrics.OPEN_STREAMS.inc()
        head = self.renderer.head()
        if head:
            await self._send(head)
        return response

    async def _complete(self) -> web.StreamResponse:
        if not self.terminal:  # the renderer cut the answer short: stop the worker before the client hears
            await self._cancel_job()
        if self.response is not None:
            await self._end_stream()
            return self.response
        if self.renderer.stream:  # an empty stream: nothing was rendered at all
            raise UpstreamTimeout("The reply ended before any content.")
        body = self.renderer.body()
        self.outcome.bytes = len(body)
        return web.Response(
            body=body,
            headers={"Content-Type": self.renderer.content_type, **self._ids()},
        )

    def _ids(self) -> dict[str, str]:
        """`x-request-id`, and `x-upstream-kind` once the worker's Start named the serving account's kind."""
        ids = {"x-request-id": self.chat.request_id}
        if self.outcome.upstream_kind is not None:
            ids[UPSTREAM_KIND_HEADER] = self.outcome.upstream_kind
        return ids

    async def _end_stream(self) -> None:
        assert self.response is not None
        await self._write(self.response.write_eof())

    async def _write(self, write: Awaitable[None]) -> None:
        """One write that drains before the deadline (or within the grace after it), else the client is gone:
        its connection is dropped, so no handler waits on a reader that never reads."""
        timeout_s = max(self.deadline - time.monotonic(), FINAL_WRITE_GRACE_S)
        try:
            async with asyncio.timeout(timeout_s):  # no task per write, unlike wait_for: this is the hot path
                await write
        except ConnectionError as exc:
            raise _ClientGone from exc
        except TimeoutError as exc:
            log.info("slow_reader", request_id=self.chat.request_id, waited_s=round(timeout_s, 2))
            if self.request.transport is not None:
                self.request.transport.abort()
            raise _ClientGone from exc

    async def _fail_in_band(self, exc: GatewayError) -> web.StreamResponse:
        assert self.response is not None
        self.outcome.status, self.outcome.error = exc.status, exc.kind
        data = self.renderer.error(exc)
        try:
            await self._write(self.response.write(data))
            self.outcome.bytes += len(data)
            await self._end_stream()
        except _ClientGone:
            return self._client_gone()
        return self.response

    def _transport_closed(self) -> bool:
        transport = self.request.transport
        return transport is None or transport.is_closing()

    def _client_gone(self) -> web.StreamResponse:
        metrics.CLIENT_DISCONNECTS.labels(self.outcome.dialect).inc()
        self.outcome.status, self.outcome.error = 499, "cancelled"
        return self.response or web.Response(status=499)

    async def _cancel_job(self) -> None:
        """Tell the worker to stop: the client left, a deadline passed, or the answer was cut short."""
        self.cancelled = True
        try:
            await self.request.app[REDIS].set(cancel_key(self.chat.request_id), b"1", ex=CANCEL_TTL_S)
        except RedisError:
            log.warning("cancel_failed", request_id=self.chat.request_id)
