"""Checking a call's arguments against its tool's JSON Schema: the subset that decides whether a call is usable.

Checked: `type` (also a list of types; `integer` means a whole number, so `2.0` passes and `2.5` does not;
booleans are never numbers), `required`, `properties`, `additionalProperties` (`false` or a schema; extra
properties are allowed otherwise), `items`, `enum`, `const`, `anyOf` / `oneOf` (some branch must pass),
`allOf`, and OpenAPI's `nullable` (Gemini's `parameters`, whose type names are upper case, are read the same
way). Not checked: numeric and length bounds, `pattern`, `format`, `$ref`. A client validates its own tool
input again and answers a bad value with an error result, which the model then corrects within the normal
loop; the gateway only refuses what no client could run (wrong shape, missing fields, unknown values).

Messages name the path of what is wrong (`$.todos[0].status`), because they go into the correction text
that asks Kimi for the call again.
"""

from __future__ import annotations

import re
from typing import Any

import msgspec

#: Enough to correct a call; a schema violated everywhere would otherwise flood the correction text.
MAX_ERRORS = 5
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_encoder = msgspec.json.Encoder()


def check_arguments(schema: Any, value: Any) -> list[str]:
    """What is wrong with `value` for `schema` (empty when it is valid), at most `MAX_ERRORS` messages."""
    errors: list[str] = []
    _check(schema, value, "$", errors)
    return errors[:MAX_ERRORS]


def json_type(value: Any) -> str:
    """The JSON name of a decoded value's type, as messages print it."""
    match value:
        case None:
            return "null"
        case bool():
            return "boolean"
        case int():
            return "integer"
        case float():
            return "number"
        case str():
            return "string"
        case list():
            return "array"
        case dict():
            return "object"
    return type(value).__name__


def child_path(path: str, key: str | int) -> str:
    """`$.a`, `$[0]`, or `$["-B"]` for a key that is not an identifier."""
    if isinstance(key, int):
        return f"{path}[{key}]"
    if _IDENTIFIER.match(key):
        return f"{path}.{key}"
    return f"{path}[{_encoder.encode(key).decode()}]"


def _check(schema: Any, value: Any, path: str, errors: list[str]) -> None:
    if not isinstance(schema, dict) or len(errors) >= MAX_ERRORS:
        return
    if value is None and schema.get("nullable") is True:
        return
    if not _type_ok(schema, value, path, errors):
        return
    _check_values(schema, value, path, errors)
    _check_combinators(schema, value, path, errors)
    if isinstance(value, dict):
        _check_object(schema, value, path, errors)
    elif isinstance(value, list) and isinstance(items := schema.get("items"), dict):
        for index, item in enumerate(value):
            _check(items, item, child_path(path, index), errors)


def _type_ok(schema: dict[str, Any], value: Any, path: str, errors: list[str]) -> bool:
    declared = schema.get("type")
    if declared is None:
        return True
    names = [str(t).lower() for t in declared] if isinstance(declared, list) else [str(declared).lower()]
    if schema.get("nullable") is True:
        names.append("null")
    if any(_is_type(value, name) for name in names):
        return True
    errors.append(f"{path}: expected {' or '.join(names)}, got {json_type(value)}")
    return False


def _is_type(value: Any, name: str) -> bool:
    match name:
        case "string":
            return isinstance(value, str)
        case "integer":
            return (isinstance(value, int) and not isinstance(value, bool)) or (
                isinstance(value, float) and value.is_integer()
            )
        case "number":
            return isinstance(value, int | float) and not isinstance(value, bool)
        case "boolean":
            return isinstance(value, bool)
        case "null":
            return value is None
        case "object":
            return isinstance(value, dict)
        case "array":
            return isinstance(value, list)
    return True  # a type this checker does not know constrains nothing


def _check_values(schema: dict[str, Any], value: Any, path: str, errors: list[str]) -> None:
    enum = schema.get("enum")
    if isinstance(enum, list) and enum and not any(_same(value, option) for option in enum):
        shown = ", ".join(_encoder.encode(option).decode() for option in enum[:12])
        errors.append(f"{path}: must be one of {shown}")
    if "const" in schema and not _same(value, schema["const"]):
        errors.append(f"{path}: must be {_encoder.encode(schema['const']).decode()}")


def _same(a: Any, b: Any) -> bool:
    """JSON equality: `1` and `True` differ, `1` and `1.0` do not."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    return bool(a == b)


def _check_combinators(schema: dict[str, Any], value: Any, path: str, errors: list[str]) -> None:
    for key in ("anyOf", "oneOf"):
        branches = schema.get(key)
        if isinstance(branches, list) and branches:
            results = [check_arguments_at(branch, value, path) for branch in branches]
            if all(results):
                best = min(results, key=len)
                errors.append(f"{path}: matches none of the {len(branches)} allowed shapes ({best[0]})")
    all_of = schema.get("allOf")
    if isinstance(all_of, list):
        for branch in all_of:
            _check(branch, value, path, errors)


def check_arguments_at(schema: Any, value: Any, path: str) -> list[str]:
    """`check_arguments` for a value found at `path` inside a larger document."""
    errors: list[str] = []
    _check(schema, value, path, errors)
    return errors


def _check_object(schema: dict[str, Any], value: dict[str, Any], path: str, errors: list[str]) -> None:
    required = schema.get("required")
    if isinstance(required, list):
        for name in required:
            if isinstance(name, str) and name not in value:
                errors.append(f"{child_path(path, name)}: required property is missing")
    properties = schema.get("properties")
    properties = properties if isinstance(properties, dict) else {}
    extra = schema.get("additionalProperties", True)
    for name, item in value.items():
        if name in properties:
            _check(properties[name], item, child_path(path, name), errors)
        elif extra is False:
            errors.append(f"{child_path(path, name)}: unknown property (the schema allows no others)")
        elif isinstance(extra, dict):
            _check(extra, item, child_path(path, name), errors)
