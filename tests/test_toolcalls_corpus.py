"""Every row of the tool-call corpus (tests/tool_corpus/corpus.yaml) parses exactly as the row expects."""

from __future__ import annotations

import pytest

from tests.tool_corpus import SPLIT_GROUP, Case, Row, cases, check, load_corpus

TOOLS, ROWS = load_corpus()
CASES = list(cases(ROWS))


@pytest.mark.parametrize("case", [c for c in CASES if c.group != SPLIT_GROUP], ids=lambda c: c.label)
def test_corpus_row(case: Case) -> None:
    """The whole output gives the row's content, calls (names, arguments, ids, forms) or failure kind."""
    assert check(TOOLS, case) == []


@pytest.mark.parametrize("row", [r for r in ROWS if r.split], ids=lambda r: r.id)
def test_corpus_row_split_at_every_byte(row: Row) -> None:
    """The output cut into two deltas at every byte, and fed byte by byte, parses exactly like the whole."""
    failed = {c.label: check(TOOLS, c) for c in CASES if c.group == SPLIT_GROUP and c.row is row}
    assert {label: problems for label, problems in failed.items() if problems} == {}
    assert len(failed) == len(row.output.encode())


def test_corpus_is_large_and_covers_every_format() -> None:
    """The corpus keeps at least 60 rows and rows for every call form the parser reports."""
    groups = {row.group for row in ROWS}
    assert len(ROWS) >= 60
    assert {"native", "native_singular", "native_bare", "simple", "xml", "json_tag"} <= groups
    assert {"fence", "thinking", "failure", "choice", "plain"} <= groups
