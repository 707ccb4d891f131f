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
    """A quick bench (every scenario: level 1, a burst of 20, 20 paced streams) writes a JSON row per path
    and level, a wave per scenario and path, each with requests, a time to first token and 0 errors."""
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
    [burst] = result["scenarios"]["burst"]["waves"]
    assert (burst["path"], burst["requests"], burst["errors"]) == ("gateway", 20, 0)
    assert burst["ttft_ms"]["p50"] > 0 and burst["chunks_p50"] == 4
    pace = {wave["path"]: wave for wave in result["scenarios"]["pace"]["waves"]}
    assert set(pace) == {"direct", "gateway"}
    for wave in pace.values():
        assert (wave["requests"], wave["errors"], wave["chunks_p50"], wave["pacing_ms"]) == (20, 0, 20, 20.0)
        assert wave["added_inter_chunk_delay_ms"]["p99"] is not None
    assert {"gateway", "worker-0"} <= set(result["scenarios"]["pace"]["rss_mb"]["gateway"])
