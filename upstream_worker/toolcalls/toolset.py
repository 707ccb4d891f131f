"""The tools of one request with their schemas decoded once, and how a name Kimi wrote finds its tool."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec

from shared.schema import ToolChoice, ToolSpec
from upstream_worker.toolcalls.markup import split_native_id

_decoder = msgspec.json.Decoder()


@dataclass(frozen=True, slots=True)
class Tool:
    spec: ToolSpec
    #: The decoded JSON Schema of the arguments ({} when the client gave none or it is not JSON).
    schema: dict[str, Any]

    @property
    def name(self) -> str:
        return self.spec.name

    def property_schema(self, name: str) -> dict[str, Any]:
        """The schema of one top-level argument ({} when the tool does not declare it)."""
        properties = self.schema.get("properties")
        found = properties.get(name) if isinstance(properties, dict) else None
        return found if isinstance(found, dict) else {}


class ToolSet:
    """The declared tools by name; `resolve` applies the name rules of the reference parsers."""

    __slots__ = ("_by_name",)

    def __init__(self, specs: Sequence[ToolSpec]) -> None:
        self._by_name = {spec.name: Tool(spec, _decode_schema(spec.parameters)) for spec in specs}

    def __iter__(self) -> Iterator[Tool]:
        return iter(self._by_name.values())

    def __len__(self) -> int:
        return len(self._by_name)

    def get(self, name: str) -> Tool | None:
        return self._by_name.get(name)

    def resolve(self, written: str) -> Tool | None:
        """The tool a call id or name as Kimi wrote it means: `functions.` and `:IDX` optional, the exact
        name first, then (vLLM's reading of `functions.a.b:0`) the part after the last dot."""
        name, _ = split_native_id(written)
        if (tool := self._by_name.get(name)) is not None:
            return tool
        if "." in name:
            return self._by_name.get(name.rsplit(".", 1)[1])
        return None

    def offered(self, choice: ToolChoice) -> list[Tool]:
        """The tools this answer may call: none for `none`, one for `named`, the allowed ones, or all."""
        if choice.mode == "none":
            return []
        if choice.mode == "named":
            return [t for t in self if t.name == choice.name]
        if choice.allowed is not None:
            return [t for t in self if t.name in choice.allowed]
        return list(self)


def _decode_schema(text: str) -> dict[str, Any]:
    try:
        schema = _decoder.decode(text or "{}")
    except msgspec.DecodeError:
        return {}
    return schema if isinstance(schema, dict) else {}
