"""The official API's answer → canonical events, sans-IO (moonshot-official-api.md §3.2, §3.3, §5, §6).

A stream is SSE `data: {chunk}` … `data: [DONE]` (read with `upstream_worker.kimi.sse.SseDecoder`); each chunk
is decoded through Structs that forbid unknown fields at the chunk, choice and delta levels, so an unexpected
field takes the second try of `upstream_worker.drift` and is noted by name. Only choice 0 is read (the gateway
asks for one). Deltas become `ReasoningDelta` (`reasoning_content`) and `TextDelta` (`content`); native
`tool_calls` fragments are gathered by `index` into whole calls, published as `ToolCallEvent`s once the choice
finishes (its `finish_reason`, at the latest `[DONE]`). The usage is taken wherever the platform puts it: at the
top of a chunk (with `stream_options.include_usage`, one extra chunk with `choices: []`) or inside the finishing
choice (`choices[0].usage`, without it); the last one seen counts, and it is real: `Usage(estimated=False)`.
Only `[DONE]` ends the answer (`Done`, after the calls and the usage); a stream without it is cut, which the
driver reports as `UpstreamProtocolError`. An `error` chunk raises its `shared.errors` exception.
The non-stream JSON answer is one chunk whose choice has a `message` instead of a `delta`: the same events.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import msgspec

from shared.errors import UpstreamProtocolError
from shared.schema import (
    Done,
    Event,
    FinishReason,
    ReasoningDelta,
    TextDelta,
    ToolCall,
    ToolCallEvent,
    Usage,
)
from upstream_worker.drift import Drift, lenient_decode, shape_of
from upstream_worker.kimi.sse import DONE_SENTINEL
from upstream_worker.moonshot.errors import ApiErrorBody, api_error

_FINISH: dict[str, FinishReason] = {
    "stop": "stop",
    "length": "length",
    "tool_calls": "tool_calls",
    "function_call": "tool_calls",
    "content_filter": "content_filter",
}


class _Function(msgspec.Struct):
    name: str | None = None
    arguments: str | None = None


class _CallDelta(msgspec.Struct):
    index: int | None = None
    id: str | None = None
    type: str | None = None
    function: _Function | None = None


class _Usage(msgspec.Struct):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0


class _Delta(msgspec.Struct, forbid_unknown_fields=True):
    """A stream delta, or the non-stream `message`."""

    role: str | None = None
    content: str | None = None
    reasoning_content: str | None = None
    tool_calls: list[_CallDelta] | None = None
    name: object = None
    refusal: object = None
    function_call: object = None
    partial: object = None


class _Choice(msgspec.Struct, forbid_unknown_fields=True):
    index: int = 0
    delta: _Delta | None = None
    message: _Delta | None = None
    finish_reason: str | None = None
    usage: _Usage | None = None
    logprobs: object = None


class Chunk(msgspec.Struct, forbid_unknown_fields=True):
    """A stream chunk, or the whole non-stream answer."""

    choices: list[_Choice] = msgspec.field(default_factory=list)
    usage: _Usage | None = None
    error: ApiErrorBody | None = None
    id: Any = None
    kind: Any = msgspec.field(default=None, name="object")
    created: Any = None
    model: Any = None
    system_fingerprint: Any = None


_chunk_decoder = msgspec.json.Decoder(Chunk)
_DELTA = shape_of(_Delta, "field:delta.")
SHAPE = shape_of(
    Chunk,
    "field:",
    children={"choices": shape_of(_Choice, "field:choice.", children={"delta": _DELTA, "message": _DELTA})},
)


@dataclass(slots=True)
class _PendingCall:
    id: str = ""
    name: str = ""
    arguments: list[str] = field(default_factory=list)


class CompletionStream:
    """One answer: feed SSE data payloads (or `complete` a non-stream body), collect canonical events."""

    __slots__ = ("_calls", "_finish", "_published", "done", "drift", "max_calls", "usage")

    def __init__(self, max_calls: int | None = None) -> None:
        #: At most this many calls are published (1 when the client asked for no parallel calls).
        self.max_calls = max_calls
        self.done = False
        self.usage: Usage | None = None
        self.drift = Drift()
        self._calls: dict[int, _PendingCall] = {}
        self._finish: str | None = None
        self._published = 0

    def feed(self, payload: str, out: list[Event]) -> None:
        """One SSE data payload → events appended to `out`; raises for an `error` chunk."""
        if self.done:
            return
        if payload == DONE_SENTINEL:
            self._end(out)
            return
        try:
            chunk: Chunk | None = _chunk_decoder.decode(payload)
        except (msgspec.DecodeError, UnicodeEncodeError):
            chunk = lenient_decode(payload, Chunk, SHAPE, self.drift)
        if chunk is not None:
            self.apply(chunk, out)

    def complete(self, body: bytes, out: list[Event]) -> None:
        """The non-stream answer → the same events, `Done` last; an answer without a choice is a protocol error."""
        try:
            chunk: Chunk | None = _chunk_decoder.decode(body)
        except msgspec.DecodeError:
            chunk = lenient_decode(body, Chunk, SHAPE, self.drift)
        if chunk is None or not chunk.choices:
            raise UpstreamProtocolError("the official API answered without a choice")
        self.apply(chunk, out)
        self._end(out)

    def apply(self, chunk: Chunk, out: list[Event]) -> None:
        if chunk.error is not None:
            raise api_error(chunk.error)
        if chunk.usage is not None:
            self._usage(chunk.usage)
        for choice in chunk.choices:
            if choice.index == 0:
                self._choice(choice, out)

    def _choice(self, choice: _Choice, out: list[Event]) -> None:
        if choice.usage is not None:
            self._usage(choice.usage)
        delta = choice.delta or choice.message
        if delta is not None:
            if delta.reasoning_content:
                out.append(ReasoningDelta(delta.reasoning_content))
            if delta.content:
                out.append(TextDelta(delta.content))
            for position, call in enumerate(delta.tool_calls or ()):
                self._fragment(position, call)
        if choice.finish_reason:
            self._finish = choice.finish_reason
            self._publish(out)

    def _fragment(self, position: int, call: _CallDelta) -> None:
        index = call.index if call.index is not None else position
        pending = self._calls.get(index)
        if pending is None:
            pending = self._calls[index] = _PendingCall()
        pending.id = call.id or pending.id
        if call.function is not None:
            pending.name = call.function.name or pending.name
            if call.function.arguments:
                pending.arguments.append(call.function.arguments)

    def _publish(self, out: list[Event]) -> None:
        """Every gathered call, whole, in index order (at most `max_calls` per answer)."""
        for index in sorted(self._calls):
            pending = self._calls.pop(index)
            if self.max_calls is not None and self._published >= self.max_calls:
                continue
            call = ToolCall(
                id=pending.id or f"call_{index}",
                name=pending.name,
                arguments="".join(pending.arguments) or "{}",
            )
            out.append(ToolCallEvent(index=self._published, call=call))
            self._published += 1

    def _usage(self, usage: _Usage) -> None:
        self.usage = Usage(usage.prompt_tokens, usage.completion_tokens, estimated=False)

    def _end(self, out: list[Event]) -> None:
        self.done = True
        self._publish(out)
        if self.usage is not None:
            out.append(self.usage)
        out.append(Done(finish_reason=self._finish_reason()))

    def _finish_reason(self) -> FinishReason:
        if self._finish is None:
            return "tool_calls" if self._published else "stop"
        reason = _FINISH.get(self._finish)
        if reason is None:
            self.drift.note(f"finish_reason:{self._finish}")
            return "tool_calls" if self._published else "stop"
        return reason
