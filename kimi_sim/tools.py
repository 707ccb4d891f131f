"""Tool-call answers: when a prompt declares tools the way docs/TOOLS.md says, answer in K2's native markup.

The protocol is read here as a fact (the simulator imports nothing of the gateway): a prompt declares tools
when it holds the `# Tools` header and a `namespace functions {` block; calls are asked for by the test,
one per line of user text, as `call NAME {json}`; results come back as `## Return of functions.NAME:IDX`.

The rule, over the chat's whole text (earlier turns of the chat and this prompt, as Kimi would see them):
* directives after the last result header → an answer with a short sentence and those calls, numbered from
  the prompt's "The next call index is N." (all directives of that stretch: several make parallel calls);
* results after the last directive (or results and no directive at all) → an answer quoting each result;
* the prompt forbids calls ("Do not call any function in this answer") → no calls;
* otherwise the ordinary answer.
Fault knobs pick the markup variant, break the first call, or suppress the calls (README "Tool calls").
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

TOOLS_HEADER = "# Tools"
NAMESPACE = "namespace functions {"
NONE_RULE = "Do not call any function in this answer"
SECTION_BEGIN, SECTION_END = "<|tool_calls_section_begin|>", "<|tool_calls_section_end|>"
SINGULAR_BEGIN, SINGULAR_END = "<|tool_call_section_begin|>", "<|tool_call_section_end|>"
CALL_BEGIN, ARGUMENT_BEGIN, CALL_END = (
    "<|tool_call_begin|>",
    "<|tool_call_argument_begin|>",
    "<|tool_call_end|>",
)
VARIANTS = ("native", "singular", "spaced", "no_section_end", "bare", "simple", "xml", "thinking")
ERRORS = ("malformed_json", "unknown_tool", "not_an_object")
UNKNOWN_TOOL = "no_such_tool"

_DIRECTIVE = re.compile(r"^(?:user:)?[ \t]*call[ \t]+([\w.:\-]+)[ \t]*(\{.*\})[ \t]*$", re.M)
_RETURN = re.compile(r"## Return of (\S+)(?: \(error\))?\n")
#: Where a quoted result ends: the next result, the rules reminder, or the next flattened role line.
_RESULT_END = re.compile(r"\n(?:## Return of |## Tool rules for this answer|(?:system|user|assistant|tool):)")
_NEXT_INDEX = re.compile(r"The next call index is (\d+)\.")


@dataclass(frozen=True)
class ToolReply:
    text: str
    #: Replaces the usual reasoning text when the stream carries reasoning (the `thinking` variant).
    reasoning: str | None = None


def tool_reply(history: str, prompt: str, faults: dict[str, dict[str, Any]]) -> ToolReply | None:
    """The answer for this prompt when tools are declared in the chat, else None (the ordinary answer)."""
    context = f"{history}\n{prompt}" if history else prompt
    if TOOLS_HEADER not in context or NAMESPACE not in context:
        return None
    directives = list(_DIRECTIVE.finditer(context))
    returns = list(_RETURN.finditer(context))
    last_return = returns[-1].start() if returns else -1
    pending = [d for d in directives if d.start() > last_return]
    calls = [(d.group(1), args) for d in pending if (args := _arguments(d.group(2))) is not None]
    if calls and NONE_RULE not in prompt and "no_tool_call" not in faults:
        return _calls_reply(calls, _next_index(prompt), faults)
    if not pending and "no_tool_call" not in faults:
        after = directives[-1].end() if directives else 0
        quoted = [r for r in returns if r.start() > after]
        if quoted:
            return ToolReply(quote_results(context, quoted))
    return None


def quote_results(context: str, headers: list[re.Match[str]]) -> str:
    lines = ["Tool results received. 工具结果如下："]
    for header in headers:
        end = _RESULT_END.search(context, header.end())
        content = context[header.end() : end.start() if end else len(context)]
        lines.append(f"{header.group(1)} returned: {content.strip()}")
    return "\n".join(lines)


def render_calls(calls: list[tuple[str, str]], first_index: int, variant: str) -> str:
    """(name, JSON arguments) pairs in one of the markup variants the gateway's parser must read."""
    ids = [f"functions.{name}:{first_index + i}" for i, (name, _) in enumerate(calls)]
    plain = "".join(
        f"{CALL_BEGIN}{i}{ARGUMENT_BEGIN}{args}{CALL_END}" for i, (_, args) in zip(ids, calls, strict=True)
    )
    match variant:
        case "singular":
            return SINGULAR_BEGIN + plain + SINGULAR_END
        case "spaced":
            spaced = "".join(
                f"{CALL_BEGIN} {i}\n{ARGUMENT_BEGIN} {args} {CALL_END}\n"
                for i, (_, args) in zip(ids, calls, strict=True)
            )
            return f"{SECTION_BEGIN}\n{spaced}{SECTION_END}"
        case "no_section_end":
            return SECTION_BEGIN + plain
        case "bare":
            return "\n".join(
                f"{CALL_BEGIN}{i}{ARGUMENT_BEGIN}{args}{CALL_END}"
                for i, (_, args) in zip(ids, calls, strict=True)
            )
        case "simple":
            return "\n".join(f"{i}{args}" for i, (_, args) in zip(ids, calls, strict=True))
        case "xml":
            return "<tool_call>" + "".join(_invoke(name, args) for name, args in calls) + "</tool_call>"
    return SECTION_BEGIN + plain + SECTION_END


def _calls_reply(
    calls: list[tuple[str, str]], first_index: int, faults: dict[str, dict[str, Any]]
) -> ToolReply:
    error = faults.get("tool_call_error")
    if error is not None and calls:
        calls = [_broken(calls[0], str(error.get("kind", "malformed_json"))), *calls[1:]]
    variant = str(faults.get("tool_call_variant", {}).get("variant", "native"))
    names = ", ".join(name for name, _ in calls)
    prose = f"好的，我来调用工具 (calling {names})."
    if variant == "thinking":
        return ToolReply(prose, reasoning=f"先想一想。{render_calls(calls, first_index, 'native')}")
    return ToolReply(f"{prose}\n\n{render_calls(calls, first_index, variant)}")


def _broken(call: tuple[str, str], kind: str) -> tuple[str, str]:
    name, args = call
    if kind == "unknown_tool":
        return UNKNOWN_TOOL, args
    if kind == "not_an_object":
        return name, "[]"
    return name, args[:-1] + ",}"  # malformed_json: a trailing comma


def _invoke(name: str, args: str) -> str:
    params = "".join(
        f'<parameter name="{key}">{value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)}</parameter>'
        for key, value in json.loads(args).items()
    )
    return f'<invoke name="{name}">{params}</invoke>'


def _arguments(text: str) -> str | None:
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return None
    return json.dumps(value, ensure_ascii=False) if isinstance(value, dict) else None


def _next_index(prompt: str) -> int:
    found = _NEXT_INDEX.findall(prompt)
    return int(found[-1]) if found else 0


def tool_chunks(text: str, size: int) -> list[str]:
    """`text` in pieces of `size` characters, so that markers are split across stream events."""
    size = max(1, size)
    return [text[i : i + size] for i in range(0, len(text), size)]
