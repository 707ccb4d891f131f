"""Tool calling over Kimi's web chat: the prompt protocol, the strict parser of the answer, argument checks.

Pure code, no I/O.
"""

from upstream_worker.toolcalls.calls import (
    CALL_FORMATS,
    CallFormat,
    FailureKind,
    ParsedCall,
    ParseResult,
    ToolCallFailure,
)
from upstream_worker.toolcalls.parser import ToolCallParser, parse_answer
from upstream_worker.toolcalls.schema_check import check_arguments
from upstream_worker.toolcalls.toolset import Tool, ToolSet

__all__ = [
    "CALL_FORMATS",
    "CallFormat",
    "FailureKind",
    "ParseResult",
    "ParsedCall",
    "Tool",
    "ToolCallFailure",
    "ToolCallParser",
    "ToolSet",
    "check_arguments",
    "parse_answer",
]
