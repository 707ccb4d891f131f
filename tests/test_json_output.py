"""`adapters/json_output.py` as tables: what a JSON answer's text becomes, and the hints."""

from __future__ import annotations

import pytest

from adapters.json_output import JsonKind, clean, hint


@pytest.mark.parametrize(
    ("text", "kind", "cleaned"),
    [
        ('{"a": 1}', "json_object", '{"a": 1}'),
        ('```json\n{"a": 1}\n```', "json_object", '{"a": 1}'),
        ('  ```\n{"a": [1, 2]}\n```\n', "json_object", '{"a": [1, 2]}'),
        ('\n{"a": 1}\n', "json_object", '{"a": 1}'),
        ("```json\n[1, 2]\n```", "json_schema", "[1, 2]"),
        # Left exactly as written: not JSON, JSON of the wrong kind, prose around the fence.
        ("```json\n[1, 2]\n```", "json_object", "```json\n[1, 2]\n```"),
        ('Here it is: {"a": 1}', "json_object", 'Here it is: {"a": 1}'),
        ('Sure!\n```json\n{"a": 1}\n```', "json_object", 'Sure!\n```json\n{"a": 1}\n```'),
        ("```json\n{broken\n```", "json_schema", "```json\n{broken\n```"),
    ],
)
def test_clean(text: str, kind: JsonKind, cleaned: str) -> None:
    """A fence around JSON of the kind asked for goes; anything else stays as Kimi wrote it."""
    assert clean(text, kind) == cleaned


def test_hints() -> None:
    """json_object asks for one object; json_schema for one value matching the schema given."""
    assert hint("json_object") == (
        "Answer with one JSON object only: no text before or after it, no Markdown, no code fence."
    )
    assert hint("json_schema", '{"type":"array"}').endswith(
        'It must match this JSON Schema: {"type":"array"}'
    )
