"""The tool-call corpus (corpus.yaml): loading the rows, the generated split rows, and checking one parse.

Shared by the table tests (tests/test_toolcalls_corpus.py) and `make tool-eval` (`python -m tests.tool_corpus`).
"""

from __future__ import annotations

import codecs
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from shared.schema import ToolChoice, ToolSpec
from upstream_worker.toolcalls import CALL_FORMATS, ToolCallParser, ToolSet
from upstream_worker.toolcalls.markup import ANY_MARKER

CORPUS_PATH = Path(__file__).with_name("corpus.yaml")
SPLIT_GROUP = "split"


@dataclass(frozen=True)
class ExpectedCall:
    name: str
    arguments: dict[str, Any]
    native_id: str | None
    format: str | None


@dataclass(frozen=True)
class Row:
    id: str
    group: str
    output: str
    reasoning: str
    choice: ToolChoice
    parallel: bool
    content: str
    calls: tuple[ExpectedCall, ...]
    failure: str | None
    split: bool


@dataclass(frozen=True)
class Case:
    """One parse to check: a row fed as `pieces` (the whole output, or a generated split of it)."""

    group: str
    label: str
    row: Row
    pieces: tuple[str, ...]


def load_corpus(path: Path = CORPUS_PATH) -> tuple[ToolSet, list[Row]]:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    specs = [
        ToolSpec(name, tool.get("description", ""), json.dumps(tool.get("parameters", {})))
        for name, tool in data["tools"].items()
    ]
    return ToolSet(specs), [_row(raw) for raw in data["rows"]]


def _row(raw: dict[str, Any]) -> Row:
    group = raw["group"]
    calls = tuple(
        ExpectedCall(
            c["name"],
            c.get("arguments", {}),
            c.get("id"),
            c.get("format", group if group in CALL_FORMATS else None),
        )
        for c in raw.get("calls", [])
    )
    return Row(
        id=raw["id"],
        group=group,
        output=raw["output"],
        reasoning=raw.get("reasoning", ""),
        choice=_choice(raw.get("tool_choice", "auto")),
        parallel=raw.get("parallel", True),
        content=raw["content"],
        calls=calls,
        failure=raw.get("failure"),
        split=raw.get("split", False),
    )


def _choice(raw: Any) -> ToolChoice:
    if isinstance(raw, dict) and "named" in raw:
        return ToolChoice(mode="named", name=raw["named"])
    if isinstance(raw, dict) and "allowed" in raw:
        return ToolChoice(mode="auto", allowed=list(raw["allowed"]))
    return ToolChoice(mode=raw)


def cases(rows: list[Row]) -> Iterator[Case]:
    """Every row whole, then for each `split` row: cut at every byte, and fed one byte at a time."""
    for row in rows:
        yield Case(row.group, row.id, row, (row.output,))
    for row in rows:
        if not row.split:
            continue
        data = row.output.encode()
        for cut in range(1, len(data)):
            yield Case(SPLIT_GROUP, f"{row.id}@{cut}", row, tuple(decode_pieces([data[:cut], data[cut:]])))
        yield Case(SPLIT_GROUP, f"{row.id}@bytes", row, tuple(decode_pieces([bytes([b]) for b in data])))


def decode_pieces(chunks: list[bytes]) -> list[str]:
    """The text deltas a driver hands on for these network chunks (incremental UTF-8, as the drivers do)."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    return [decoder.decode(chunk) for chunk in chunks]


def check(tools: ToolSet, case: Case) -> list[str]:
    """What differs from the row's expectation (empty when the parse is exactly as expected)."""
    row = case.row
    parser = ToolCallParser(tools, row.choice, parallel=row.parallel)
    content = "".join(parser.feed(piece) for piece in case.pieces)
    result = parser.finish()
    content += result.content
    problems = []
    if content != row.content:
        problems.append(f"content {content!r}, expected {row.content!r}")
    if ANY_MARKER.search(content):
        problems.append("native markup reached the content")
    failure = result.failure.kind if result.failure else None
    if failure != row.failure:
        problems.append(f"failure {failure!r}, expected {row.failure!r} ({result.failure})")
    got = [
        (p.call.name, json.loads(p.call.arguments), p.native_id, p.format, p.call.id) for p in result.calls
    ]
    wanted = [
        (
            c.name,
            c.arguments,
            c.native_id or got[i][2] if i < len(got) else c.native_id,
            c.format,
            f"call_{i}",
        )
        for i, c in enumerate(row.calls)
    ]
    if got != wanted:
        problems.append(f"calls {got}, expected {wanted}")
    return problems
