"""From samples to numbers: percentiles, the added time (b − a), the issue's targets, the table and the JSON.

Percentiles are nearest-rank. The added time at a level is the gateway's TTFB percentile minus the direct one
at the same percentile (a difference of distributions, not of paired requests).
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from tests.bench.load import LevelRun

PERCENTILES = (50, 95, 99)
#: Issue 4's targets for this first version.
ADDED_P50_MAX_MS = 3.0
ADDED_P99_MAX_MS = 10.0
THROUGHPUT_RATIO_MIN = 0.25
THROUGHPUT_LEVEL = 64
RSS_MAX_MB = 150.0
#: Our own services; Redis and the simulator are reported but are not the gateway's to keep small.
OWN_SERVICES = ("gateway", "token_service", "worker-")


def percentile(values: list[float], p: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


def _ms(values: list[float]) -> dict[str, float | None]:
    return {f"p{p}": _round(percentile(values, p), 1000) for p in PERCENTILES}


def _round(value: float | None, scale: float = 1.0) -> float | None:
    return None if value is None else round(value * scale, 3)


@dataclass
class Row:
    """One path at one concurrency level."""

    path: str
    concurrency: int
    requests: int
    errors: int
    error_kinds: dict[str, int]
    rps: float
    ttfb_ms: dict[str, float | None]
    latency_ms: dict[str, float | None]
    chunks_p50: float | None
    elapsed_s: float
    cpu_s: dict[str, float] = field(default_factory=dict)
    #: CPU cores busy with processes outside the bench during this row: other work skews the numbers.
    other_cores: float = 0.0
    #: Redis command → (calls, microseconds) during this row.
    redis_cmds: dict[str, tuple[int, int]] = field(default_factory=dict)

    def redis_per_request(self) -> dict[str, dict[str, float]]:
        """Calls and Redis-busy microseconds per request, by command, busiest first."""
        n = max(self.requests, 1)
        ordered = sorted(self.redis_cmds.items(), key=lambda kv: -kv[1][1])
        return {cmd: {"calls": round(c / n, 2), "usec": round(u / n, 1)} for cmd, (c, u) in ordered}

    def to_json(self) -> dict[str, Any]:
        cpu_per_req = {
            k: round(v / self.requests * 1000, 3) if self.requests else None for k, v in self.cpu_s.items()
        }
        return {
            "path": self.path,
            "concurrency": self.concurrency,
            "requests": self.requests,
            "errors": self.errors,
            "error_kinds": self.error_kinds,
            "requests_per_s": round(self.rps, 2),
            "ttfb_ms": self.ttfb_ms,
            "latency_ms": self.latency_ms,
            "content_chunks_p50": self.chunks_p50,
            "elapsed_s": round(self.elapsed_s, 3),
            "cpu_s": {k: round(v, 3) for k, v in self.cpu_s.items()},
            "cpu_ms_per_request": cpu_per_req,
            "other_processes_cpu_cores": round(self.other_cores, 2),
            "redis_per_request": self.redis_per_request(),
        }


def summarize(run: LevelRun, cpu_s: dict[str, float], redis_cmds: dict[str, tuple[int, int]]) -> Row:
    ok = [s for s in run.samples if s.ok]
    ttfbs = [s.ttfb_s for s in ok if s.ttfb_s is not None]
    return Row(
        path=run.target,
        concurrency=run.concurrency,
        requests=len(run.samples),
        errors=len(run.samples) - len(ok),
        error_kinds=dict(Counter(s.error or "?" for s in run.samples if not s.ok)),
        rps=len(ok) / run.elapsed_s if run.elapsed_s > 0 else 0.0,
        ttfb_ms=_ms(ttfbs),
        latency_ms=_ms([s.total_s for s in ok]),
        chunks_p50=percentile([float(s.chunks) for s in ok], 50),
        elapsed_s=run.elapsed_s,
        cpu_s=cpu_s,
        redis_cmds=redis_cmds,
    )


# ---------------------------------------------------------------- comparisons and targets


def _pair(rows: list[Row], concurrency: int) -> tuple[Row, Row] | None:
    direct = next((r for r in rows if r.path == "direct" and r.concurrency == concurrency), None)
    gateway = next((r for r in rows if r.path == "gateway" and r.concurrency == concurrency), None)
    return (direct, gateway) if direct and gateway else None


def added_ms(direct: Row, gateway: Row) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for key in direct.ttfb_ms:
        a, b = direct.ttfb_ms[key], gateway.ttfb_ms[key]
        out[key] = None if a is None or b is None else round(b - a, 3)
    return out


def comparisons(rows: list[Row]) -> list[dict[str, Any]]:
    out = []
    for level in sorted({r.concurrency for r in rows}):
        pair = _pair(rows, level)
        if pair is None:
            continue
        direct, gateway = pair
        ratio = gateway.rps / direct.rps if direct.rps else None
        out.append(
            {
                "concurrency": level,
                "added_ttfb_ms": added_ms(direct, gateway),
                "throughput_ratio": None if ratio is None else round(ratio, 4),
            }
        )
    return out


def _target(name: str, value: float | None, limit: float, *, at_most: bool) -> dict[str, Any]:
    holds = value is not None and (value <= limit if at_most else value >= limit)
    return {"target": name, "value": value, "limit": limit, "holds": holds}


def targets(rows: list[Row], rss: dict[str, dict[str, float | None]]) -> list[dict[str, Any]]:
    out = []
    if (pair := _pair(rows, 1)) is not None:
        added = added_ms(*pair)
        out.append(_target("c=1 added TTFB p50 (ms) <= 3", added["p50"], ADDED_P50_MAX_MS, at_most=True))
        out.append(_target("c=1 added TTFB p99 (ms) <= 10", added["p99"], ADDED_P99_MAX_MS, at_most=True))
    if (pair := _pair(rows, THROUGHPUT_LEVEL)) is not None:
        direct, gateway = pair
        ratio = round(gateway.rps / direct.rps, 4) if direct.rps else None
        out.append(
            _target("c=64 gateway/direct throughput >= 0.25", ratio, THROUGHPUT_RATIO_MIN, at_most=False)
        )
        out.append(_target("c=64 gateway errors == 0", float(gateway.errors), 0.0, at_most=True))
    own = [v["peak_mb"] for k, v in rss.items() if k.startswith(OWN_SERVICES) and v["peak_mb"] is not None]
    if own:
        out.append(_target("peak RSS of every own service (MB) <= 150", max(own), RSS_MAX_MB, at_most=True))
    return out


# ---------------------------------------------------------------- printing


def _fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def table(rows: list[Row], rss: dict[str, dict[str, float | None]], checks: list[dict[str, Any]]) -> str:
    lines = [
        f"{'path':<8} {'conc':>4} {'req/s':>8} {'TTFB p50':>9} {'p95':>7} {'p99':>7} "
        f"{'added p50':>10} {'p95':>7} {'p99':>7} {'ratio':>6} {'errors':>6} {'noise':>5}"
    ]
    for row in rows:
        added: dict[str, float | None] = {"p50": None, "p95": None, "p99": None}
        ratio: float | None = None
        pair = _pair(rows, row.concurrency)
        if row.path == "gateway" and pair is not None:
            added = added_ms(*pair)
            ratio = row.rps / pair[0].rps if pair[0].rps else None
        t = row.ttfb_ms
        lines.append(
            f"{row.path:<8} {row.concurrency:>4} {row.rps:>8.1f} {_fmt(t['p50']):>9} {_fmt(t['p95']):>7} "
            f"{_fmt(t['p99']):>7} {_fmt(added['p50']):>10} {_fmt(added['p95']):>7} {_fmt(added['p99']):>7} "
            f"{_fmt(ratio, 2):>6} {row.errors:>6} {row.other_cores:>5.2f}"
        )
    lines.append(
        "times in ms; ratio = gateway/direct req/s; noise = CPU cores used by other processes meanwhile"
    )
    lines.append("")
    lines.append(cpu_table(rows))
    lines.append("")
    lines.append(redis_table(rows))
    lines.append("")
    lines.append(
        "RSS after the last level (MB): "
        + ", ".join(f"{name} peak {_fmt(v['peak_mb'])} / now {_fmt(v['now_mb'])}" for name, v in rss.items())
    )
    lines.append("")
    for check in checks:
        mark = "holds" if check["holds"] else "MISSED"
        lines.append(f"  [{mark:>6}] {check['target']}: {check['value']}")
    return "\n".join(lines)


def cpu_table(rows: list[Row]) -> str:
    names = sorted({k for r in rows for k in r.cpu_s})
    head = f"{'CPU ms per request':<18} {'conc':>4} " + " ".join(f"{n[:13]:>13}" for n in names)
    body = []
    for row in rows:
        per = [row.cpu_s.get(n, 0.0) / row.requests * 1000 if row.requests else 0.0 for n in names]
        body.append(f"{row.path:<18} {row.concurrency:>4} " + " ".join(f"{v:>13.2f}" for v in per))
    return "\n".join([head, *body])


def redis_table(rows: list[Row]) -> str:
    """Per gateway row: Redis calls and busy time per request, and the five busiest commands."""
    lines = [
        "Redis per gateway request: commands (those run inside scripts included), then the busiest commands",
        "as (calls, microseconds inside Redis); a script's time includes the commands it runs",
    ]
    for row in rows:
        if row.path != "gateway":
            continue
        per = row.redis_per_request()
        calls = sum(v["calls"] for v in per.values())
        top = ", ".join(f"{cmd} ({v['calls']:g}, {v['usec']:g})" for cmd, v in list(per.items())[:5])
        lines.append(f"  c={row.concurrency:<4} {calls:7.1f} commands   {top}")
    return "\n".join(lines)
