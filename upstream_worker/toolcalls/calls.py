"""What parsing an answer yields: the calls found (with the form each was written in) or a typed failure."""

from __future__ import annotations

from typing import Literal

import msgspec

from shared.schema import ToolCall

#: The form a call was written in; also the `format` label of `kimi_worker_tool_calls_total`.
#: `native`: the section markers of §6.1; `native_singular`: `<|tool_call_section_begin|>` (vLLM, Dynamo);
#: `native_bare`: `<|tool_call_begin|>` with no section marker; `simple`: `functions.NAME:IDX{json}` with no
#: special tokens (ik_llama.cpp); `xml`: `<tool_call><invoke name=…><parameter name=…>` (also inside
#: `<function_calls>`); `json_tag`: `<tool_call>{"name": …, "arguments": {…}}</tool_call>` (Hermes style).
CallFormat = Literal["native", "native_singular", "native_bare", "simple", "xml", "json_tag"]
CALL_FORMATS: tuple[CallFormat, ...] = (
    "native",
    "native_singular",
    "native_bare",
    "simple",
    "xml",
    "json_tag",
)

#: Why an answer's calls cannot be used:
#: `malformed` — markup or JSON that cannot be read (also a call cut off by the end of the answer);
#: `invalid_arguments` — JSON that does not fit the tool's schema; `unknown_tool` — a name nobody declared;
#: `forbidden_call` — a call while `tool_choice` is `none`; `not_allowed` — a tool other than the named or
#: allowed ones; `too_many_calls` — several calls while parallel calls are off; `call_required` — no call
#: although `tool_choice` demanded one.
FailureKind = Literal[
    "malformed",
    "invalid_arguments",
    "unknown_tool",
    "forbidden_call",
    "not_allowed",
    "too_many_calls",
    "call_required",
]


class ToolCallFailure(msgspec.Struct, frozen=True):
    kind: FailureKind
    #: One line for logs and the correction text, naming the tool and the path of what is wrong.
    message: str
    #: The tool as Kimi wrote it, when the failure concerns one call.
    tool: str | None = None
    #: The form of the failed call (None for `call_required`).
    format: CallFormat | None = None


class ParsedCall(msgspec.Struct, frozen=True):
    """A call that passed every check: the client-facing `ToolCall` and where it came from."""

    call: ToolCall
    #: The id in Kimi's own numbering, `functions.{name}:{idx}` (the index as written, else the expected one):
    #: the conversation's results must come back under this id (prompt.ToolState keeps the mapping).
    native_id: str
    format: CallFormat


class ParseResult(msgspec.Struct, frozen=True):
    """The end of an answer: the content not yet released, and the calls or the reason they are unusable."""

    #: Text held back until the end (a tail that could have begun a marker, trailing whitespace, the last
    #: line of a code fence). Send it as content; it is never markup.
    content: str
    #: Every valid call in answer order; empty when `failure` is set (a failed answer publishes no call).
    calls: list[ParsedCall]
    failure: ToolCallFailure | None = None

    @property
    def ok(self) -> bool:
        return self.failure is None
