"""Table tests of the tool declarations: JSON Schema as TypeScript-style types, and the compaction levels."""

from __future__ import annotations

from typing import Any

import pytest

from shared.schema import ToolSpec
from upstream_worker.toolcalls.declarations import render_declarations, shorten, ts_type


@pytest.mark.parametrize(
    ("schema", "expected"),
    [
        ({"type": "string"}, "string"),
        ({"type": "integer"}, "integer"),
        ({"type": "NUMBER"}, "number"),  # Gemini's upper-case type names
        ({"type": "string", "nullable": True}, "string | null"),
        ({"type": ["string", "null"]}, "string | null"),
        ({"enum": ["a", "b", 3]}, '"a" | "b" | 3'),
        ({"const": "x"}, '"x"'),
        (
            {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "integer"}}]},
            "string | integer[]",
        ),
        ({"type": "array", "items": {"enum": ["x", "y"]}}, '("x" | "y")[]'),
        ({"type": "array"}, "any[]"),
        ({"type": "object"}, "object"),
        ({"type": "object", "additionalProperties": {"type": "string"}}, "{[key: string]: string}"),
        (
            {
                "type": "object",
                "properties": {"a": {"type": "string"}, "b-c": {"type": "boolean"}},
                "required": ["a"],
            },
            '{\n  a: string,\n  "b-c"?: boolean,\n}',
        ),
        ({"$ref": "#/definitions/x"}, "any"),
        (True, "any"),
    ],
)
def test_ts_type(schema: Any, expected: str) -> None:
    """Each schema shape has one TypeScript-style rendering; nested objects are indented by two spaces."""
    assert ts_type(schema, None) == expected


@pytest.mark.parametrize(
    ("text", "limit", "expected"),
    [
        ("Short.", 100, "Short."),
        ("One.\n\nTwo.\n\nThree is long enough to overflow.", 12, "One.\nTwo."),
        ("First sentence here. Second sentence is longer than the limit.", 30, "First sentence here."),
        ("no sentence end in this long run of words", 20, "no sentence end in…"),
        ("anything", 0, ""),
        ("  kept whole  ", None, "kept whole"),
    ],
)
def test_shorten(text: str, limit: int | None, expected: str) -> None:
    """Descriptions keep whole paragraphs, then whole sentences, then words with an ellipsis."""
    assert shorten(text, limit) == expected


def test_levels_shrink_descriptions_until_the_block_fits() -> None:
    """The first level whose block fits the budget is used; signatures survive every level."""
    schema = (
        '{"type":"object","properties":{"path":{"type":"string","description":"'
        + "p" * 400
        + '"}},"required":["path"]}'
    )
    tool = ToolSpec("Read", "Reads a file. " + "More detail. " * 200, schema)
    full = render_declarations([tool], budget_chars=100_000)
    small = render_declarations([tool], budget_chars=200)
    assert (full.level, full.fits) == (0, True)
    assert (small.level, small.fits) == (4, True)
    description = "Reads a file." + " More detail." * 6  # whole sentences within 100 characters
    assert (
        small.text
        == f"namespace functions {{\n// {description}\ntype Read = (_: {{\npath: string,\n}}) => any;\n}}"
    )
    assert render_declarations([tool], budget_chars=10).fits is False


def test_tool_without_parameters_and_property_notes() -> None:
    """A tool without properties takes no argument; defaults, formats and bounds follow the description."""
    tools = [
        ToolSpec("EnterPlanMode", "Plan first.", '{"type":"object","properties":{}}'),
        ToolSpec(
            "fetch",
            "",
            '{"type":"object","properties":{"url":{"type":"string","format":"uri","description":"Where."},'
            '"n":{"type":"integer","default":3,"minimum":1}}}',
        ),
    ]
    assert render_declarations(tools).text == (
        "namespace functions {\n"
        "// Plan first.\n"
        "type EnterPlanMode = () => any;\n"
        "type fetch = (_: {\n"
        '// Where.; format: "uri"\n'
        "url?: string,\n"
        "// default: 3; minimum: 1\n"
        "n?: integer,\n"
        "}) => any;\n"
        "}"
    )
