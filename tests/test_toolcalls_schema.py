"""Table tests of the argument checker (upstream_worker/toolcalls/schema_check.py)."""

from __future__ import annotations

from typing import Any

import pytest

from upstream_worker.toolcalls.schema_check import check_arguments, child_path

READ = {
    "type": "object",
    "properties": {
        "file_path": {"type": "string"},
        "offset": {"type": "integer"},
        "limit": {"type": "number"},
    },
    "required": ["file_path"],
}
CLOSED = {"type": "object", "properties": {"a": {"type": "string"}}, "additionalProperties": False}
TODOS = {
    "type": "object",
    "properties": {
        "todos": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "content": {"type": "string"},
                    "status": {"type": "string", "enum": ["pending", "in_progress", "completed"]},
                },
                "required": ["content", "status"],
            },
        }
    },
    "required": ["todos"],
}
GEMINI = {"type": "OBJECT", "properties": {"n": {"type": "INTEGER", "nullable": True}}, "required": ["n"]}
UNION = {"type": "object", "properties": {"v": {"anyOf": [{"type": "string"}, {"type": "array"}]}}}
MAP = {"type": "object", "additionalProperties": {"type": "string"}}


@pytest.mark.parametrize(
    ("schema", "value", "errors"),
    [
        (READ, {"file_path": "/a"}, []),
        (READ, {"file_path": "/a", "offset": 2, "limit": 2.5, "extra": True}, []),
        (READ, {"file_path": "/a", "offset": 2.0}, []),  # 2.0 is a whole number
        (READ, {}, ["$.file_path: required property is missing"]),
        (READ, {"file_path": 3}, ["$.file_path: expected string, got integer"]),
        (READ, {"file_path": "/a", "offset": 2.5}, ["$.offset: expected integer, got number"]),
        (READ, {"file_path": "/a", "offset": True}, ["$.offset: expected integer, got boolean"]),
        (READ, {"file_path": "/a", "limit": "10"}, ["$.limit: expected number, got string"]),
        (READ, [], ["$: expected object, got array"]),
        (CLOSED, {"a": "x", "b": 1}, ["$.b: unknown property (the schema allows no others)"]),
        (
            TODOS,
            {"todos": [{"content": "x", "status": "done"}]},
            ['$.todos[0].status: must be one of "pending", "in_progress", "completed"'],
        ),
        (TODOS, {"todos": [{"status": "pending"}]}, ["$.todos[0].content: required property is missing"]),
        (TODOS, {"todos": {"content": "x"}}, ["$.todos: expected array, got object"]),
        (GEMINI, {"n": None}, []),
        (GEMINI, {"n": 3}, []),
        (GEMINI, {"n": "3"}, ["$.n: expected integer or null, got string"]),
        (UNION, {"v": ["a"]}, []),
        (UNION, {"v": 1}, ["$.v: matches none of the 2 allowed shapes ($.v: expected string, got integer)"]),
        (MAP, {"k": "v"}, []),
        (MAP, {"k": 1}, ["$.k: expected string, got integer"]),
        (
            {"type": "object", "properties": {"-B": {"type": "number"}}},
            {"-B": "x"},
            ['$["-B"]: expected number, got string'],
        ),
        ({"const": 1}, 1.0, []),
        ({"enum": [1]}, True, ["$: must be one of 1"]),
        ({}, {"anything": [1, {"x": None}]}, []),
        (
            {"type": "object", "allOf": [{"required": ["a"]}, {"required": ["b"]}]},
            {},
            ["$.a: required property is missing", "$.b: required property is missing"],
        ),
    ],
)
def test_check_arguments(schema: dict[str, Any], value: Any, errors: list[str]) -> None:
    """Each schema keyword of the checked subset accepts what it allows and names the path of what it refuses."""
    assert check_arguments(schema, value) == errors


def test_errors_are_capped() -> None:
    """A value wrong everywhere yields at most five messages (they go into a short correction text)."""
    schema = {"type": "object", "required": [f"p{i}" for i in range(9)]}
    assert len(check_arguments(schema, {})) == 5


@pytest.mark.parametrize(
    ("key", "path"), [(0, "$[0]"), ("a_b", "$.a_b"), ("-n", '$["-n"]'), ("名", '$["名"]')]
)
def test_child_path(key: str | int, path: str) -> None:
    """Paths use dots for identifiers and JSON-quoted brackets for anything else."""
    assert child_path("$", key) == path
