"""One job's answer as it reaches the reply stream: its state, what the client already has, how it ends.

The runner feeds every event a driver yields to `Answer.take`, across all the attempts of a job. `Start` is
held to ride with the next event (and sent once, whatever attempt it came from), content goes out at once,
`Usage` and `Done` are kept for `Answer.end`: Usage (the driver's own when it reported one, else an estimate
from the prompt and the streamed text) right before Done, so an upstream's real counts are never overwritten.
While nothing of the answer reached the client, the runner may still try another attempt, and `keep_alive`
publishes a Keepalive every few seconds once the job holds an account: Kimi's first byte is not silence, but a
wait for an account is (the client's status is not committed meanwhile, so a wait that runs out is a real 429).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from enum import Enum

import msgspec

from shared.schema import (
    ChatRequest,
    Citation,
    Done,
    Event,
    Keepalive,
    ReasoningDelta,
    Start,
    TextDelta,
    ToolCallEvent,
    Usage,
)
from shared.usage_estimate import estimate_prompt_tokens, estimate_tokens
from token_service.client import upstream_of
from upstream_worker.conversations import Conversation, RecordTracker
from upstream_worker.kimi.call import UpstreamCall
from upstream_worker.publisher import ReplyPublisher
from upstream_worker.toolcalls import ToolState

#: `Start` (ids only) waits this long at most for the first content or keep-alive to share its stream entry:
#: one XADD and one gateway wake-up less per request. The gateway needs it before the first content only.
START_HOLD_S = 0.25
#: The first Keepalive follows the lease by this much at most: an answer that starts sooner (most do) costs no
#: XADD for it, and the gateway's own pings, which start with it, still begin within a second of the lease.
FIRST_KEEPALIVE_S = 0.5


class AnswerState(Enum):
    """Where the answer stands, as its current attempt left it.

    WAITING → ACCEPTED (the driver's Start: Kimi holds the turn, a kept chat now has the user's message)
    → STREAMING (content went to the client: no other attempt from here on) → DONE (the driver's Done).
    CUT: the job was cancelled (the client left, the gateway cut the answer, the deadline passed) after Kimi
    accepted the turn. An attempt that fails before STREAMING gives way to the next, which starts WAITING.
    """

    WAITING = "waiting"
    ACCEPTED = "accepted"
    STREAMING = "streaming"
    DONE = "done"
    CUT = "cut"

    @property
    def before_content(self) -> bool:
        """Nothing of the answer reached the client: another attempt may still serve it, keep-alives flow."""
        return self in (AnswerState.WAITING, AnswerState.ACCEPTED)


@dataclass(frozen=True, slots=True)
class Attempt:
    """The current attempt's upstream call, for the conversation record."""

    call: UpstreamCall
    protocol: str
    #: The parent id sent to Kimi: a parent id the driver reports that differs from it was learned this turn.
    sent_parent_id: str | None
    #: The call continues a chat (else Kimi created one for it).
    continuing: bool


@dataclass(slots=True)
class Answer:
    """One job's answer so far, across its attempts."""

    publisher: ReplyPublisher
    #: A kept chat's conversation record (None when the chat is deleted after the turn).
    record: RecordTracker | None = None
    attempt: Attempt | None = None
    state: AnswerState = AnswerState.WAITING
    #: The client has its Start (from an earlier attempt, when that one failed after Kimi accepted it).
    start_sent: bool = False
    #: The upstream kind that Start named; an attempt on another kind sends Start again, with its kind.
    start_kind: str | None = None
    #: The streamed text, for the usage estimate.
    parts: list[str] = field(default_factory=list)
    #: The driver's own Usage, published instead of the estimate.
    usage: Usage | None = None
    #: What the chat knows of tool calls, kept in the conversation record (a web lane's tool turn sets it).
    tool_state: ToolState | None = None
    #: Set once the job holds an account: keep-alives start then, not while it waits in the pool's line (the
    #: gateway commits no status before the worker's first event, so a wait that ends in 429 is a real 429).
    serving: asyncio.Event = field(default_factory=asyncio.Event)

    def begin(self) -> None:
        """A new attempt: nothing of it is known yet."""
        self.attempt, self.state, self.usage = None, AnswerState.WAITING, None

    def take(self, event: Event) -> None:
        """Follow a driver's event and pass it on: Start held, Usage and Done kept for `end`."""
        self._advance(event)
        if self.record is not None:
            self.track(self.record)
        if isinstance(event, Start):
            self._pass_start(event)
        elif not isinstance(event, Usage | Done):
            self.publisher.publish(event)

    def cut(self) -> None:
        """The job was cancelled while an attempt ran."""
        if self.state is not AnswerState.WAITING:
            self.state = AnswerState.CUT

    def end(self, call: UpstreamCall, done: Done) -> None:
        """Usage (the driver's, else the estimate), then Done naming the conversation the client sees."""
        self.publisher.publish(self.usage or _estimate(call.request, self.parts))
        record_id = self.record.conversation_id if self.record else None
        conversation_id = record_id or done.conversation_id or call.chat_id
        if done.conversation_id != conversation_id:
            done = msgspec.structs.replace(done, conversation_id=conversation_id)
        self.publisher.publish(done)

    def track(self, record: RecordTracker) -> None:
        """Once Kimi holds the turn, keep the record current (its writes ride with the next XADDs).

        A new chat is Kimi's from its Start. A continued one only from its answer (Connect's `Start` of a
        continued chat means no more than HTTP 200: "stream busy" may follow, and a refused call must not
        touch the record the running turn writes), or once the job is cut after its Start (a call Kimi
        refused raises instead). The parent id is this turn's assistant message id once the driver learned
        it, else empty (Kimi appends to the chat's head), never the previous turn's.
        """
        attempt = self.attempt
        if attempt is None or self.state is AnswerState.WAITING:
            return
        call = attempt.call
        if not call.chat_id:
            return
        learned = call.parent_id != attempt.sent_parent_id
        if attempt.continuing and self.state is AnswerState.ACCEPTED and not learned:
            return
        parent_id = call.parent_id if learned else None
        conversation = Conversation(
            call.creds.account_id, attempt.protocol, call.chat_id, parent_id, self.tool_state
        )
        record.update(conversation)

    def _advance(self, event: Event) -> None:
        match event:
            case Start() if self.state is AnswerState.WAITING:
                self.state = AnswerState.ACCEPTED
            case TextDelta() | ReasoningDelta():
                self.state = AnswerState.STREAMING
                self.parts.append(event.text)
            case ToolCallEvent():
                self.state = AnswerState.STREAMING
                self.parts.append(event.call.name + event.call.arguments)
            case Citation():
                self.state = AnswerState.STREAMING
            case Usage():
                self.usage = event
            case Done():
                self.state = AnswerState.DONE

    def _pass_start(self, event: Start) -> None:
        creds = self.attempt.call.creds if self.attempt else None
        kind = event.kind or (upstream_of(creds.kind) if creds else None)
        if self.start_sent and kind == self.start_kind:  # a retried attempt: the client has its Start
            return
        self.start_sent, self.start_kind = True, kind
        conversation_id = self.record.conversation_id if self.record else None
        event = Start(
            conversation_id=conversation_id or event.conversation_id,
            account_id=event.account_id or (creds.account_id if creds else None),
            kind=kind,
        )
        self.publisher.hold(event, START_HOLD_S)


async def keep_alive(answer: Answer, every_s: float) -> None:
    """From shortly after the job first holds an account (the gateway's pings start with the first one), publish
    a Keepalive every `every_s` until the first content."""
    await answer.serving.wait()
    await asyncio.sleep(min(every_s, FIRST_KEEPALIVE_S))
    while answer.state.before_content:
        answer.publisher.publish(Keepalive())
        await asyncio.sleep(every_s)


def _estimate(request: ChatRequest, parts: list[str]) -> Usage:
    prompt = estimate_prompt_tokens([m.text() for m in request.messages])
    return Usage(prompt_tokens=prompt, completion_tokens=estimate_tokens("".join(parts)), estimated=True)
