"""The two load scenarios beside the concurrency levels: a burst, and streams at Kimi's own pace.

- **burst**: `n` streaming requests sent at the same moment (one coroutine each, one connector with room
  for all), nothing before them for a while. It measures what a burst costs: errors by kind (a request
  refused for want of a Redis connection, a timeout…), time to first token, the wall time until the last
  answer ends.
- **pace**: `n` streams at once, each `chunks` chunks `delay` apart as the simulator paces them (Kimi sends
  a chunk every few tens of ms). It measures what the relay adds between two chunks: for every chunk after a
  stream's first, its gap to the previous one minus the pacing. A relay that keeps up adds about 0; a chunk
  held back shows as a positive value, and the one that catches up after it as a negative one. The same wave
  straight against the simulator gives the machine's own share (the simulator and the load generator run on
  the same two cores).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

import aiohttp

from tests.bench.load import Sample, Target, guarded
from tests.bench.report import percentile

#: A prompt whose answer (`你好！You said: <prompt>. 这是模拟回答。`) has more characters than the pace
#: scenario has chunks: the simulator cuts an answer into at most one chunk per character.
PACE_PROMPT = "Pace the benchmark: " + "Kimi streams one chunk every forty milliseconds; keep up. " * 3


@dataclass(slots=True)
class Wave:
    """Every request of one scenario on one path, sent together."""

    scenario: str
    path: str
    requests: int
    elapsed_s: float
    samples: list[Sample]
    nominal_gap_s: float | None = None

    def errors(self) -> dict[str, int]:
        return dict(Counter(s.error or "?" for s in self.samples if not s.ok))

    def ttft_ms(self) -> dict[str, float | None]:
        return _ms([s.ttfb_s for s in self.samples if s.ok and s.ttfb_s is not None])

    def added_gap_ms(self, *, steady: bool = False) -> dict[str, float | None]:
        """Inter-chunk gap minus the pacing, over every chunk after the first of every successful stream;
        `steady`: only chunks that arrived once every stream had its first (the wave's starts are over)."""
        if self.nominal_gap_s is None:
            return {}
        ok = [s for s in self.samples if s.ok and s.arrivals]
        since = max((s.arrivals[0] for s in ok), default=0.0) if steady else 0.0
        added = [
            later - earlier - self.nominal_gap_s
            for s in ok
            for earlier, later in zip(s.arrivals, s.arrivals[1:], strict=False)
            if later > since
        ]
        return _ms(added)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "scenario": self.scenario,
            "path": self.path,
            "requests": self.requests,
            "errors": self.requests - sum(s.ok for s in self.samples),
            "error_kinds": self.errors(),
            "elapsed_s": round(self.elapsed_s, 3),
            "ttft_ms": self.ttft_ms(),
            "chunks_p50": percentile([float(s.chunks) for s in self.samples if s.ok], 50),
        }
        if self.nominal_gap_s is not None:
            out["pacing_ms"] = round(self.nominal_gap_s * 1000, 3)
            out["added_inter_chunk_delay_ms"] = self.added_gap_ms()
            out["added_inter_chunk_delay_steady_ms"] = self.added_gap_ms(steady=True)
        return out


def _ms(values: list[float]) -> dict[str, float | None]:
    out = {f"p{p}": percentile(values, p) for p in (50, 95, 99)}
    out["max"] = max(values) if values else None
    return {k: None if v is None else round(v * 1000, 2) for k, v in out.items()}


async def wave(
    session: aiohttp.ClientSession,
    target: Target,
    scenario: str,
    requests: int,
    nominal_gap_s: float | None = None,
) -> Wave:
    """Send `requests` requests at once and wait for every one of them to end."""
    started = time.perf_counter()
    samples = await asyncio.gather(*(guarded(target, session, slot) for slot in range(requests)))
    return Wave(scenario, target.name, requests, time.perf_counter() - started, list(samples), nominal_gap_s)


# ---------------------------------------------------------------- numbers and their printing

#: Issue 10's targets for the two scenarios.
ADDED_GAP_P99_MAX_MS = 20.0
RSS_MAX_MB = 150.0
OWN_SERVICES = ("gateway", "token_service", "worker-")


def summary(done: Wave) -> str:
    """One progress line."""
    line = f"{done.requests} requests in {done.elapsed_s:.1f} s, errors {done.errors() or 0}"
    line += f", TTFT p50 {done.ttft_ms()['p50']} ms"
    if done.nominal_gap_s is not None:
        line += f", added gap p99 {done.added_gap_ms()['p99']} ms"
    return line


def to_json(run: dict[str, Any]) -> dict[str, Any]:
    return {
        "waves": [w.to_json() for w in run["waves"]],
        "cpu_s": run["cpu_s"],
        "rss_mb": run["rss_mb"],
    }


def _own_peak(rss: dict[str, dict[str, float | None]]) -> float | None:
    peaks = [v["peak_mb"] for k, v in rss.items() if k.startswith(OWN_SERVICES) and v["peak_mb"] is not None]
    return max(peaks) if peaks else None


def targets(runs: dict[str, dict[str, Any] | None]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for name, run in runs.items():
        if run is None:
            continue
        gateway = next(w for w in run["waves"] if w.path == "gateway")
        errors = gateway.requests - sum(s.ok for s in gateway.samples)
        out.append(_target(f"{name}: gateway errors == 0", float(errors), 0.0))
        if gateway.nominal_gap_s is not None:
            p99 = gateway.added_gap_ms()["p99"]
            out.append(_target(f"{name}: added inter-chunk delay p99 (ms) <= 20", p99, ADDED_GAP_P99_MAX_MS))
        peak = _own_peak(run["rss_mb"]["gateway"])
        out.append(_target(f"{name}: peak RSS of every own service (MB) <= 150", peak, RSS_MAX_MB))
    return out


def _target(name: str, value: float | None, limit: float) -> dict[str, Any]:
    return {"target": name, "value": value, "limit": limit, "holds": value is not None and value <= limit}


def _f(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def table(name: str, run: dict[str, Any], opts: Any) -> str:
    """The scenario's table: one row per path, then errors by kind, CPU and peak RSS per service."""
    if name == "burst":
        head = (
            f"burst: {opts.burst} streaming requests sent at once through the gateway, "
            f"{opts.chunks} chunks {opts.chunk_delay_ms:g} ms apart"
        )
    else:
        head = (
            f"pace: {opts.pace_streams} streams at once, {opts.pace_chunks} chunks {opts.pace_delay_ms:g} ms "
            f"apart; added = the gap between two chunks minus {opts.pace_delay_ms:g} ms"
        )
    lines = [
        head,
        f"{'path':<8} {'requests':>8} {'errors':>6} {'wall s':>7} {'TTFT p50':>9} {'p95':>7} {'p99':>7} "
        f"{'max':>7} {'added p50':>10} {'p99':>7} {'max':>7} {'steady p50':>11} {'p99':>7} {'noise':>5}",
    ]
    for done in run["waves"]:
        ttft, added, steady = done.ttft_ms(), done.added_gap_ms(), done.added_gap_ms(steady=True)
        errors = done.requests - sum(s.ok for s in done.samples)
        noise = run["cpu_s"][done.path]["other_processes_cores"]
        lines.append(
            f"{done.path:<8} {done.requests:>8} {errors:>6} {done.elapsed_s:>7.1f} {_f(ttft['p50']):>9} "
            f"{_f(ttft['p95']):>7} {_f(ttft['p99']):>7} {_f(ttft['max']):>7} {_f(added.get('p50')):>10} "
            f"{_f(added.get('p99')):>7} {_f(added.get('max')):>7} {_f(steady.get('p50')):>11} "
            f"{_f(steady.get('p99')):>7} {noise:>5.2f}"
        )
    if name == "pace":
        lines.append("steady: only chunks that arrived after every stream had its first chunk")
    for done in run["waves"]:
        cpu = run["cpu_s"][done.path]
        rss = run["rss_mb"][done.path]
        lines.append(f"  {done.path}: errors by kind {done.errors() or '{}'}")
        lines.append(
            "    CPU s: " + ", ".join(f"{k} {v:.2f}" for k, v in cpu.items() if k != "other_processes_cores")
        )
        lines.append("    peak RSS MB: " + ", ".join(f"{k} {_f(v['peak_mb'])}" for k, v in rss.items()))
    return "\n".join(lines)
