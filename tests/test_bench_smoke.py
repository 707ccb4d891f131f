"""`make bench` still runs end to end: a one-level quick run of the real program in a subprocess."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.timeout(90)
def test_quick_bench_measures_both_paths_without_errors(tmp_path: Path) -> None:
    """A quick bench at concurrency 1 writes a JSON row per path, each with requests, a TTFB and 0 errors."""
    out = tmp_path / "bench.json"
    command = [sys.executable, "-m", "tests.bench", "--quick", "--levels", "1", "--duration", "1"]
    done = subprocess.run(
        [*command, "--out", str(out)], cwd=REPO_ROOT, capture_output=True, text=True, timeout=80, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.read_text())
    rows = {(row["path"], row["concurrency"]): row for row in result["rows"]}
    assert set(rows) == {("direct", 1), ("gateway", 1)}
    for row in rows.values():
        assert row["errors"] == 0, row["error_kinds"]
        assert row["requests"] >= 5
        assert row["ttfb_ms"]["p50"] > 0
        assert row["content_chunks_p50"] == 4
    assert result["comparisons"][0]["concurrency"] == 1
    assert {"gateway", "simulator", "redis", "token_service", "worker-0"} <= set(result["rss_mb"])
