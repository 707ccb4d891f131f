"""One turn with tools on a web lane: what Kimi receives, the calls read out of its answer, the one repair.

    request ─ build_prompt / build_continuation ─► `upstream_request` (plain messages) ─► driver
    driver events ─► `ToolTurn.take` ─ answer text through the parser ─► Answer (content, never markup)
    the answer's end ─► `ToolTurn.finish`: calls, or a failure
        a failure, first time ─► `ToolTurn.repair`: the same account tries once more, corrected
        calls ─► `ToolTurn.publish`: the held content, one ToolCallEvent per call, Done("tool_calls")
        a failure after the repair ─► UpstreamProtocolError (the client's in-band error), never a call

The runner (runner.py) owns the account and the attempts; this module owns what a tool answer publishes.
Reasoning deltas are never parsed: a call written while thinking is not a call. A repair that runs after
content reached the client (Kimi writes a sentence before its call) must not repeat that content: its text is
held, dropped when its calls come, published only when it answers without any call.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import msgspec

from shared.errors import UpstreamProtocolError
from shared.schema import (
    ChatRequest,
    Citation,
    Done,
    Event,
    Keepalive,
    Message,
    ReasoningDelta,
    TextDelta,
    ToolCallEvent,
)
from upstream_worker import metrics
from upstream_worker.answer import Answer
from upstream_worker.toolcalls import (
    ParseResult,
    ToolCallFailure,
    ToolCallParser,
    ToolState,
    build_continuation,
    build_prompt,
    correction_message,
    markup,
)

#: How often a repair whose text is held publishes a Keepalive (well under the gateway's idle timeout).
QUIET_PING_S = 5.0


@dataclass(slots=True)
class ToolTurn:
    """One attempt's tool side: the messages sent, the parser of the answer, whether it is the repair."""

    request: ChatRequest
    answer: Answer
    #: The messages of the current upstream call (the prompt, then the repair's).
    messages: list[Message]
    #: The chat's tool state once the prompt is sent (before the answer's calls).
    state: ToolState
    parser: ToolCallParser
    #: The repair is running: its failure is final.
    repairing: bool = False
    #: The repair runs after content reached the client: its text is held, not streamed.
    quiet: bool = False
    held: list[str] = field(default_factory=list)
    #: When the quiet repair last showed the client it is alive (monotonic seconds).
    pinged_s: float = 0.0

    @classmethod
    def begin(cls, request: ChatRequest, answer: Answer, kept: ToolState | None) -> ToolTurn:
        """A new chat's turn (`kept` None), or a kept chat's next turn from its stored state."""
        prompt = build_prompt(request) if kept is None else build_continuation(request, kept)
        state = prompt.state
        return cls(request, answer, prompt.messages, state, _parser(request, state.next_index))

    @property
    def upstream_request(self) -> ChatRequest:
        """The request the driver sends: the client's, with the prompt protocol's messages."""
        return msgspec.structs.replace(self.request, messages=self.messages)

    def take(self, event: Event) -> None:
        """Follow a driver event: answer text through the parser, the driver's Done kept for `publish`."""
        match event:
            case TextDelta():
                self._text(self.parser.feed(event.text))
            case Done():
                pass
            case ReasoningDelta() | Citation() if self.quiet:
                pass
            case _:
                self.answer.take(event)

    def finish(self) -> ParseResult:
        return self.parser.finish()

    def repair(self, failure: ToolCallFailure, *, same_chat: bool) -> None:
        """Prepare the one repair: the correction as the chat's next turn, or a new chat's corrected prompt."""
        if same_chat:
            correction = correction_message(failure, self.request, next_index=self.state.next_index)
            self.messages = [correction]
        else:
            self.messages = build_prompt(self.request, correction=failure).messages
        self.parser = _parser(self.request, self.state.next_index)
        self.repairing = True
        self.quiet = not self.answer.state.before_content

    def publish(self, result: ParseResult, done: Done) -> Done:
        """End the answer's content: the held text, then the calls; the Done to end with.

        Raises UpstreamProtocolError for a failure (the repair's, or the first when no repair could run).
        """
        if result.failure is not None:
            failure = result.failure
            metrics.TOOL_CALLS.labels("failed", failure.format or "none").inc()
            raise UpstreamProtocolError(failure_message(failure, repaired=self.repairing))
        if not (self.quiet and result.calls):
            self._release("".join(self.held) + result.content)
        outcome = "repaired" if self.repairing else "parsed"
        for index, parsed in enumerate(result.calls):
            metrics.TOOL_CALLS.labels(outcome, parsed.format).inc()
            self.answer.take(ToolCallEvent(index, parsed.call))
        self.answer.tool_state = self.state.after_answer(result.calls)
        if result.calls:
            done = msgspec.structs.replace(done, finish_reason="tool_calls")
        self.answer.take(done)
        return done

    def _text(self, text: str) -> None:
        if not self.quiet:
            self._release(text)
            return
        self.held.append(text)
        # The client sees nothing of a quiet repair's text: a ping now and then keeps its idle timer quiet.
        if time.monotonic() - self.pinged_s >= QUIET_PING_S:
            self.pinged_s = time.monotonic()
            self.answer.take(Keepalive())

    def _release(self, text: str) -> None:
        if text:
            self.answer.take(TextDelta(text))


def failure_message(failure: ToolCallFailure, *, repaired: bool) -> str:
    """The client's error: the failure's kind and tool, never the call itself."""
    tool = f" of {markup.split_native_id(failure.tool)[0]}" if failure.tool else ""
    when = " after one correction" if repaired else ""
    return f"Kimi's answer had no usable tool call{when} ({failure.kind}{tool}): {failure.message}"


def _parser(request: ChatRequest, first_index: int) -> ToolCallParser:
    # Ids never repeat in a conversation: each request has its own prefix.
    return ToolCallParser.for_request(
        request, id_prefix=f"call_{request.request_id}_", first_index=first_index
    )
