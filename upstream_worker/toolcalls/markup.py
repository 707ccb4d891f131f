"""Kimi K2's native tool-call markup: the marker names, the call id shape, and the canonical rendering.

The one place that spells the markers (tools-and-attachments.md §6.1). The prompt writes calls with
`render_section`, the parser recognises every variant of §6.2–6.4 with `marker_kind`, and history calls are
re-rendered through the same function, so what Kimi is shown is exactly the form it is asked to produce.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from enum import Enum


class Marker(Enum):
    """What a `<|…|>` token means to the parser (plural and singular section markers map alike)."""

    SECTION_BEGIN = "section_begin"
    SECTION_BEGIN_SINGULAR = "section_begin_singular"
    SECTION_END = "section_end"
    CALL_BEGIN = "call_begin"
    ARGUMENT_BEGIN = "argument_begin"
    CALL_END = "call_end"


SECTION_BEGIN = "<|tool_calls_section_begin|>"
SECTION_END = "<|tool_calls_section_end|>"
CALL_BEGIN = "<|tool_call_begin|>"
ARGUMENT_BEGIN = "<|tool_call_argument_begin|>"
CALL_END = "<|tool_call_end|>"

#: Inner names (between `<|` and `|>`) → meaning. vLLM and Dynamo also accept the singular section markers.
MARKER_NAMES: dict[str, Marker] = {
    "tool_calls_section_begin": Marker.SECTION_BEGIN,
    "tool_call_section_begin": Marker.SECTION_BEGIN_SINGULAR,
    "tool_calls_section_end": Marker.SECTION_END,
    "tool_call_section_end": Marker.SECTION_END,
    "tool_call_begin": Marker.CALL_BEGIN,
    "tool_call_argument_begin": Marker.ARGUMENT_BEGIN,
    "tool_call_end": Marker.CALL_END,
}
#: The longest `<|` … `|>` run worth waiting for before deciding it is plain text (whitespace inside included).
MAX_MARKER_CHARS = 64
#: Every known marker, also with whitespace inside the brackets: removed from any text that reaches content.
ANY_MARKER = re.compile(r"<\|\s*(?:" + "|".join(MARKER_NAMES) + r")\s*\|>")
FUNCTIONS_PREFIX = "functions."


def marker_kind(inner: str) -> Marker | None:
    """The marker whose inner text (between `<|` and `|>`) is `inner`, whitespace around it ignored."""
    return MARKER_NAMES.get(inner.strip())


def could_be_marker(inner: str) -> bool:
    """Whether `inner` (the text after `<|` so far, no `|>` yet) may still grow into a known marker."""
    stripped = inner.strip()
    if stripped.endswith("|"):
        stripped = stripped[:-1].rstrip()
    return len(inner) < MAX_MARKER_CHARS and any(name.startswith(stripped) for name in MARKER_NAMES)


def native_id(name: str, index: int) -> str:
    """The id K2 gives a call: `functions.{name}:{index}`, index counted across the conversation."""
    return f"{FUNCTIONS_PREFIX}{name}:{index}"


def split_native_id(text: str) -> tuple[str, int | None]:
    """(tool name, index) of a call id as written: `functions.` optional, `:IDX` optional, dots kept."""
    text = text.strip()
    if text.startswith(FUNCTIONS_PREFIX):
        text = text[len(FUNCTIONS_PREFIX) :]
    head, colon, tail = text.rpartition(":")
    if colon and tail.isdigit() and head:
        return head, int(tail)
    return text, None


def render_call(call_id: str, arguments: str) -> str:
    """One call, canonical: `<|tool_call_begin|>{id}<|tool_call_argument_begin|>{json}<|tool_call_end|>`."""
    return f"{CALL_BEGIN}{call_id}{ARGUMENT_BEGIN}{arguments}{CALL_END}"


def render_section(calls: Iterable[tuple[str, str]]) -> str:
    """A whole section of (native id, compact JSON arguments) pairs, as the prompt asks Kimi to write it."""
    return SECTION_BEGIN + "".join(render_call(i, a) for i, a in calls) + SECTION_END


def strip_markers(text: str) -> str:
    """`text` without any native marker: a stray or quoted marker never reaches content or the history."""
    return ANY_MARKER.sub("", text) if "<|" in text else text
