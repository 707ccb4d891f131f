"""JSON answers on a chat that has no JSON mode: the Responses API's `text.format` json_object / json_schema.

Kimi's web chat takes no response format, so the gateway does what it can, and no more:
- `hint(kind, schema)`: the instruction appended to the turn's last user text (answer with one JSON value only,
  no prose, no code fences; for json_schema, the schema to follow, as compact JSON);
- `clean(text, kind)`: the final text of a non-stream answer without the Markdown code fence Kimi likes to
  wrap JSON in, when what is inside parses as JSON (json_object: an object). Text that does not parse, with or
  without its fence, is left exactly as Kimi wrote it: the gateway never makes JSON up, and the schema itself
  is not checked.
"""

from __future__ import annotations

import re
from typing import Final, Literal

import msgspec

JsonKind = Literal["json_object", "json_schema"]

_FENCE: Final = re.compile(r"\A\s*```[A-Za-z0-9_-]*[ \t]*\n(?P<body>.*?)\n?```\s*\Z", re.DOTALL)
_decoder: Final = msgspec.json.Decoder()

_OBJECT_HINT: Final = (
    "Answer with one JSON object only: no text before or after it, no Markdown, no code fence."
)
_SCHEMA_HINT: Final = (
    "Answer with one JSON value only: no text before or after it, no Markdown, no code fence. "
    "It must match this JSON Schema: "
)


def hint(kind: JsonKind, schema: str | None = None) -> str:
    """The instruction added to the turn for a JSON answer; `schema` is compact JSON text (json_schema)."""
    if kind == "json_object":
        return _OBJECT_HINT
    return _SCHEMA_HINT + (schema or "{}")


def clean(text: str, kind: JsonKind) -> str:
    """`text` without its code fence when the inside is JSON of the kind asked for; else `text` unchanged."""
    match = _FENCE.match(text)
    candidate = match.group("body").strip() if match else text.strip()
    try:
        value = _decoder.decode(candidate)
    except msgspec.DecodeError:
        return text
    if kind == "json_object" and not isinstance(value, dict):
        return text
    return candidate
