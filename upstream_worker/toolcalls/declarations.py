"""The tool declarations Kimi reads: JSON Schemas as TypeScript-style signatures, compacted to a budget.

K2.5's own chat template declares tools this way (`namespace functions { type NAME = (_: {…}) => any; }`,
tools-and-attachments.md §6.5), and it is about a third the size of the JSON: no quotes, no `"type":`, no
`"properties":`. Coding agents still send too much (Claude Code: 12–21 tools, 31–61 KB, mostly prose in the
descriptions), so descriptions are shortened level by level until the block fits the budget. The
signatures themselves (names, types, required marks, enums, nesting) are never cut: the parser checks calls
against them, so Kimi must see all of them.

Levels (tool description limit, property description limit, in characters; None = whole):
0 (None, None) · 1 (1200, 300) · 2 (500, 160) · 3 (200, 80) · 4 (100, 0: property descriptions dropped).
At levels ≥ 1 a description keeps its leading paragraphs up to the limit, then its leading sentences, then
words with "…". The first level whose block fits is used; when none does, level 4 is sent anyway.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import msgspec

from shared.schema import ToolSpec

#: About 4k tokens: the block is re-sent with every new chat, and Kimi's web chat ends a conversation at about
#: 200 000 characters (kimi-web-rest.md §9), so the tools may use a small part of it, not a third.
DEFAULT_BUDGET_CHARS = 16_000
LEVELS: tuple[tuple[int | None, int | None], ...] = (
    (None, None),
    (1200, 300),
    (500, 160),
    (200, 80),
    (100, 0),
)
_IDENTIFIER = re.compile(r"[A-Za-z_$][A-Za-z0-9_$]*\Z")
_SENTENCE_END = re.compile(r"[.!?。！？](?=\s|$)")
_EXTRA_KEYS = ("format", "minimum", "maximum", "minItems", "maxItems", "minLength", "maxLength", "pattern")
_decoder = msgspec.json.Decoder()
_encoder = msgspec.json.Encoder()


@dataclass(frozen=True, slots=True)
class Declarations:
    text: str
    #: The compaction level used (0: descriptions whole).
    level: int
    #: False when even the last level is over the budget.
    fits: bool


def render_declarations(tools: Iterable[ToolSpec], budget_chars: int = DEFAULT_BUDGET_CHARS) -> Declarations:
    """The `namespace functions { … }` block for these tools, at the first level that fits `budget_chars`."""
    key = tuple((t.name, t.description, t.parameters) for t in tools)
    return _render_cached(key, budget_chars)


@functools.lru_cache(maxsize=64)
def _render_cached(tools: tuple[tuple[str, str, str], ...], budget_chars: int) -> Declarations:
    """Cached: a coding agent sends the same tools with every request of a session."""
    schemas = [(name, description, _schema(parameters)) for name, description, parameters in tools]
    text = ""
    for level, limits in enumerate(LEVELS):
        text = _namespace(schemas, limits)
        if len(text) <= budget_chars:
            return Declarations(text, level, True)
    return Declarations(text, len(LEVELS) - 1, False)


def _schema(parameters: str) -> dict[str, Any]:
    try:
        schema = _decoder.decode(parameters or "{}")
    except msgspec.DecodeError:
        return {}
    return schema if isinstance(schema, dict) else {}


def _namespace(tools: list[tuple[str, str, dict[str, Any]]], limits: tuple[int | None, int | None]) -> str:
    tool_limit, property_limit = limits
    lines = ["namespace functions {"]
    for name, description, schema in tools:
        lines.extend(_comment(shorten(description, tool_limit), ""))
        properties = schema.get("properties")
        if isinstance(properties, dict) and properties:
            lines.append(f"type {name} = (_: {{")
            lines.extend(_members(schema, property_limit, ""))
            lines.append("}) => any;")
        else:
            lines.append(f"type {name} = () => any;")
    lines.append("}")
    return "\n".join(lines)


def _members(schema: dict[str, Any], limit: int | None, indent: str) -> list[str]:
    properties = schema.get("properties")
    required = schema.get("required")
    needed = set(required) if isinstance(required, list) else set()
    lines: list[str] = []
    for name, item in (properties if isinstance(properties, dict) else {}).items():
        item = item if isinstance(item, dict) else {}
        lines.extend(_comment(_property_note(item, limit), indent))
        key = name if _IDENTIFIER.match(name) else _encoder.encode(name).decode()
        mark = "" if name in needed else "?"
        lines.append(f"{indent}{key}{mark}: {ts_type(item, limit, indent)},")
    return lines


def _property_note(schema: dict[str, Any], limit: int | None) -> str:
    """The description, then `default` (always) and the bounds and format (not at the last level)."""
    parts = [shorten(str(schema.get("description") or ""), limit)]
    if "default" in schema:
        parts.append(f"default: {_encoder.encode(schema['default']).decode()}")
    if limit != 0:
        parts.extend(
            f"{key}: {_encoder.encode(schema[key]).decode()}" for key in _EXTRA_KEYS if key in schema
        )
    return "; ".join(part for part in parts if part)


def ts_type(schema: Any, limit: int | None, indent: str = "") -> str:
    """A JSON Schema as a TypeScript-style type (`integer` kept apart from `number`: the checker tells them
    apart too)."""
    if not isinstance(schema, dict):
        return "any"
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return " | ".join(_encoder.encode(v).decode() for v in schema["enum"])
    if "const" in schema:
        return _encoder.encode(schema["const"]).decode()
    for key in ("anyOf", "oneOf"):
        if isinstance(schema.get(key), list) and schema[key]:
            return " | ".join(ts_type(branch, limit, indent) for branch in schema[key])
    declared = schema.get("type")
    if isinstance(declared, list):
        return " | ".join(ts_type({**schema, "type": t}, limit, indent) for t in declared)
    kind = str(declared).lower() if declared is not None else ("object" if "properties" in schema else "")
    nullable = " | null" if schema.get("nullable") is True else ""
    return _named_type(schema, kind, limit, indent) + nullable


def _named_type(schema: dict[str, Any], kind: str, limit: int | None, indent: str) -> str:
    if kind in ("string", "number", "integer", "boolean", "null"):
        return kind
    if kind == "array":
        item = ts_type(schema.get("items"), limit, indent)
        return f"({item})[]" if " | " in item else f"{item}[]"
    if kind != "object":
        return "any"
    if isinstance(schema.get("properties"), dict) and schema["properties"]:
        inner = indent + "  "
        return "{\n" + "\n".join(_members(schema, limit, inner)) + f"\n{indent}}}"
    extra = schema.get("additionalProperties")
    if isinstance(extra, dict):
        return f"{{[key: string]: {ts_type(extra, limit, indent)}}}"
    return "object"


def _comment(text: str, indent: str) -> list[str]:
    return [f"{indent}// {line}".rstrip() for line in text.splitlines()] if text else []


def shorten(text: str, limit: int | None) -> str:
    """`text` within `limit` characters: whole paragraphs first, then sentences, then words with "…"."""
    text = text.strip()
    if limit is None or len(text) <= limit:
        return text
    if limit == 0:
        return ""
    kept = ""
    for paragraph in re.split(r"\n\s*\n", text):
        candidate = f"{kept}\n{paragraph.strip()}" if kept else paragraph.strip()
        if len(candidate) > limit:
            break
        kept = candidate
    if kept:
        return kept
    first = " ".join(text.split())[:limit]
    ends = [m.end() for m in _SENTENCE_END.finditer(first)]
    if ends and ends[-1] >= limit // 3:
        return first[: ends[-1]]
    return first[: limit - 1].rsplit(" ", 1)[0].rstrip(",;:") + "…"
