"""Tool calling over Kimi's web chat: the prompt protocol, the strict parser of the answer, argument checks.

Pure code, no I/O. The runner's use of it, in order (docs/TOOLS.md has the whole protocol):

    prompt = build_prompt(request)                       # or build_continuation(request, state) in a kept chat
    upstream_request = msgspec.structs.replace(request, messages=prompt.messages)
    parser = ToolCallParser.for_request(request, id_prefix=..., first_index=prompt.state.next_index)
    content = parser.feed(delta)                         # per answer-text delta; send it at once
    result = parser.finish()                             # result.content, then result.calls or result.failure
    state = prompt.state.after_answer(result.calls)      # keep with a kept conversation
"""

from upstream_worker.toolcalls.calls import (
    CALL_FORMATS,
    CallFormat,
    FailureKind,
    ParsedCall,
    ParseResult,
    ToolCallFailure,
)
from upstream_worker.toolcalls.declarations import DEFAULT_BUDGET_CHARS, Declarations, render_declarations
from upstream_worker.toolcalls.parser import ToolCallParser, parse_answer
from upstream_worker.toolcalls.prompt import (
    ToolPrompt,
    ToolState,
    build_continuation,
    build_prompt,
    correction_message,
    correction_text,
    needs_tool_prompt,
)
from upstream_worker.toolcalls.schema_check import check_arguments
from upstream_worker.toolcalls.toolset import Tool, ToolSet

__all__ = [
    "CALL_FORMATS",
    "DEFAULT_BUDGET_CHARS",
    "CallFormat",
    "Declarations",
    "FailureKind",
    "ParseResult",
    "ParsedCall",
    "Tool",
    "ToolCallFailure",
    "ToolCallParser",
    "ToolPrompt",
    "ToolSet",
    "ToolState",
    "build_continuation",
    "build_prompt",
    "check_arguments",
    "correction_message",
    "correction_text",
    "needs_tool_prompt",
    "parse_answer",
    "render_declarations",
]
