"""`python -m tests.bench`: start the stack, run the scenarios, print the tables, write JSON.

Scenarios (`--scenario`, default all of them, in this order):
- **levels**: both paths (straight to the simulator, through the gateway) at each concurrency level;
- **burst**: `--burst` streaming requests sent through the gateway at the same moment;
- **pace**: `--pace-streams` streams at once, `--pace-chunks` chunks `--pace-delay-ms` apart, on both paths.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import platform
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import aiohttp
import redis.asyncio as aioredis

from tests.bench import profile, report, scenarios
from tests.bench.accounts import access_tokens, mint_refresh_tokens, register
from tests.bench.load import MODEL, DirectTarget, GatewayTarget, Target, run_level, warm_up
from tests.bench.services import (
    REPO_ROOT,
    Stack,
    StackConfig,
    cpu_seconds,
    default_log_dir,
    machine_busy_seconds,
    peak_rss_mb,
    redis_command_stats,
    reset_peak_rss,
    rss_mb,
    running_stack,
)

#: Every level keeps going until this many requests finished, so c=1 has enough samples for a p99.
MIN_REQUESTS = 200
#: Key of the whole machine's busy CPU time in a snapshot.
MACHINE = "_machine"
#: Part of a gateway row that `--profile` samples (py-spy takes whole seconds and must end within the row).
PROFILED_SHARE = 0.8
#: Settle time between levels: workers release leases and delete chats of the level that just ended.
SETTLE_S = 0.3
SCENARIOS = ("levels", "burst", "pace")
#: Warm-up concurrency: enough to go round a pool of a thousand accounts quickly.
WARM_UP_CONCURRENCY = 256


@dataclass(frozen=True, slots=True)
class Options:
    scenarios: tuple[str, ...]
    levels: tuple[int, ...]
    duration_s: float
    chunks: int
    chunk_delay_ms: float
    workers: int
    worker_concurrency: int
    min_requests: int
    log_level: str
    out: Path
    keep_logs: bool
    quick: bool
    pool_accounts: int | None
    profile: Path | None
    burst: int
    pace_streams: int
    pace_chunks: int
    pace_delay_ms: float

    @property
    def top(self) -> int:
        """The most streams at once any selected scenario needs."""
        needs = {"levels": max(self.levels), "burst": self.burst, "pace": self.pace_streams}
        return max(needs[name] for name in self.scenarios)

    @property
    def direct_accounts(self) -> int:
        """Accounts of the direct path: one per concurrent stream (Kimi allows one stream per account)."""
        needs = {"levels": max(self.levels), "burst": 0, "pace": self.pace_streams}
        return max(needs[name] for name in self.scenarios)


def parse_args(argv: list[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(
        prog="python -m tests.bench", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument(
        "--scenario", default="all", help=f"{', '.join(SCENARIOS)} or all; comma-separated (default all)"
    )
    parser.add_argument("--levels", default="1,16,64,256", help="concurrency levels, comma-separated")
    parser.add_argument("--duration", type=float, default=6.0, help="seconds per path and level")
    parser.add_argument("--chunks", type=int, default=16, help="content chunks per answer")
    parser.add_argument("--chunk-delay-ms", type=float, default=5.0, help="pause before each chunk")
    parser.add_argument("--workers", type=int, default=1, help="upstream_worker processes")
    parser.add_argument(
        "--worker-concurrency",
        type=int,
        default=0,
        help="jobs per worker process (default: twice the highest level, so nothing queues)",
    )
    parser.add_argument("--min-requests", type=int, default=None, help=f"per level (default {MIN_REQUESTS})")
    parser.add_argument("--log-level", default="INFO", help="LOG_LEVEL of the services")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "bench-results.json")
    parser.add_argument("--keep-logs", action="store_true", help="keep the services' logs")
    parser.add_argument(
        "--pool-accounts",
        type=int,
        default=None,
        help="accounts in the gateway pool (default 2 x top level + 2)",
    )
    parser.add_argument("--profile", type=Path, default=None, help="py-spy the gateway and workers into DIR")
    parser.add_argument("--burst", type=int, default=None, help="requests of the burst (default 1000)")
    parser.add_argument("--pace-streams", type=int, default=None, help="streams of pace (default 1000)")
    parser.add_argument("--pace-chunks", type=int, default=None, help="chunks per pace stream (default 100)")
    parser.add_argument("--pace-delay-ms", type=float, default=None, help="pace pacing (default 40)")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a short smoke run: 4 chunks 1 ms apart; burst 20; pace 20 streams of 20 chunks 20 ms apart",
    )
    args = parser.parse_args(argv)
    levels = tuple(sorted({int(x) for x in args.levels.split(",") if x.strip()}))
    quick = bool(args.quick)
    chosen = {x.strip() for x in args.scenario.split(",") if x.strip()}
    if chosen == {"all"}:
        chosen = set(SCENARIOS)
    if not chosen or chosen - set(SCENARIOS):
        parser.error(f"--scenario takes {', '.join(SCENARIOS)} or all, not {args.scenario!r}")
    top_level = max(levels)
    burst = _given(args.burst, 20 if quick else 1000)
    pace_streams = _given(args.pace_streams, 20 if quick else 1000)
    needed = max(
        top_level if "levels" in chosen else 0,
        burst if "burst" in chosen else 0,
        pace_streams if "pace" in chosen else 0,
    )
    return Options(
        scenarios=tuple(name for name in SCENARIOS if name in chosen),
        levels=levels,
        duration_s=args.duration,
        chunks=4 if quick and args.chunks == 16 else args.chunks,
        chunk_delay_ms=1.0 if quick and args.chunk_delay_ms == 5.0 else args.chunk_delay_ms,
        workers=args.workers,
        worker_concurrency=args.worker_concurrency or 2 * needed,
        min_requests=args.min_requests if args.min_requests is not None else (5 if quick else MIN_REQUESTS),
        log_level=args.log_level,
        out=args.out,
        keep_logs=args.keep_logs,
        quick=quick,
        pool_accounts=args.pool_accounts,
        profile=args.profile,
        burst=burst,
        pace_streams=pace_streams,
        pace_chunks=_given(args.pace_chunks, 20 if quick else 100),
        pace_delay_ms=_given(args.pace_delay_ms, 20.0 if quick else 40.0),
    )


def _given(value: Any, default: Any) -> Any:
    return default if value is None else value


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _cpu_snapshot(stack: Stack) -> dict[str, float]:
    snapshot = {s.name: cpu_seconds(s.pid) for s in stack.services}
    times = os.times()
    snapshot["loadgen"] = times.user + times.system
    snapshot[MACHINE] = machine_busy_seconds()
    return snapshot


async def _measure(
    session: aiohttp.ClientSession,
    stats_redis: aioredis.Redis,
    stack: Stack,
    target: Target,
    level: int,
    opts: Options,
) -> report.Row:
    async with session.delete(f"{stack.sim_url}/__sim/requests") as resp:  # the request log grows per call
        await resp.read()
    profiling = _start_profile(stack, target, level, opts)
    before, cmds_before = _cpu_snapshot(stack), await redis_command_stats(stats_redis)
    run = await run_level(session, target, level, opts.duration_s, opts.min_requests)
    after, cmds_after = _cpu_snapshot(stack), await redis_command_stats(stats_redis)
    if profiling is not None:
        _progress(f"  profiles: {', '.join(str(p) for p in await profiling)}")
    stack.check_alive()
    cmds = {
        cmd: (calls - cmds_before.get(cmd, (0, 0))[0], usec - cmds_before.get(cmd, (0, 0))[1])
        for cmd, (calls, usec) in cmds_after.items()
        if calls > cmds_before.get(cmd, (0, 0))[0]
    }
    cpu = {k: after[k] - before.get(k, 0.0) for k in after}
    machine = cpu.pop(MACHINE)
    row = report.summarize(run, cpu, cmds)
    row.other_cores = max(0.0, machine - sum(cpu.values())) / run.elapsed_s
    _progress(
        f"  {row.path:<8} c={level:<4} {row.rps:8.1f} req/s  TTFB p50 {row.ttfb_ms['p50']} ms  "
        f"errors {row.errors} {row.error_kinds or ''}"
    )
    await asyncio.sleep(SETTLE_S)
    return row


def _start_profile(
    stack: Stack, target: Target, level: int, opts: Options
) -> asyncio.Task[list[Path]] | None:
    """Sample the gateway and the workers during a gateway row, when asked to (`--profile DIR`)."""
    if opts.profile is None or target.name != "gateway":
        return None
    pids = {s.name: s.pid for s in stack.services if s.name == "gateway" or s.name.startswith("worker-")}
    return asyncio.create_task(profile.record(pids, opts.duration_s * PROFILED_SHARE, opts.profile, level))


def _pool_size(opts: Options) -> int:
    """Accounts in the gateway pool. Levels: twice the top level + 2 (a lease is released only after Done,
    so a client's next request may start before its last account is free again); a burst or a pace wave is
    one request per account, so a few more than its requests."""
    if opts.pool_accounts:
        return opts.pool_accounts
    needs = {"levels": 2 * max(opts.levels) + 2, "burst": opts.burst + 8, "pace": opts.pace_streams + 8}
    return max(needs[name] for name in opts.scenarios)


async def _prepare(session: aiohttp.ClientSession, stack: Stack, opts: Options) -> tuple[list[str], int]:
    """Mint the direct path's accounts (their access tokens) and the gateway pool's (registered)."""
    direct, pool_size = opts.direct_accounts, _pool_size(opts)
    started = time.perf_counter()
    tokens = await mint_refresh_tokens(session, stack.sim_url, direct + pool_size)
    direct_tokens = await access_tokens(session, stack.sim_url, tokens[:direct])
    await register(session, stack.gateway_url, stack.token_service_url, tokens[direct:])
    _progress(
        f"accounts: {direct} direct, {pool_size} in the gateway pool ({time.perf_counter() - started:.1f} s)",
    )
    return direct_tokens, pool_size


async def run(opts: Options, log_dir: Path) -> dict[str, Any]:
    config = StackConfig(
        chunks=opts.chunks,
        chunk_delay_ms=opts.chunk_delay_ms,
        workers=opts.workers,
        worker_concurrency=opts.worker_concurrency,
        account_max_concurrency=1,
        log_level=opts.log_level,
        log_dir=log_dir,
    )
    connector = aiohttp.TCPConnector(limit=opts.top + 32, limit_per_host=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        started = time.perf_counter()
        async with running_stack(config, session) as stack:
            _progress(f"stack ready in {time.perf_counter() - started:.1f} s (logs: {log_dir})")
            direct_tokens, pool_size = await _prepare(session, stack, opts)
            warm = min(opts.top, WARM_UP_CONCURRENCY)
            # Unmeasured: opens connection pools and lets every pool account refresh its access token once.
            if direct_tokens:
                await warm_up(session, DirectTarget(stack.sim_url, direct_tokens), warm, warm)
            await warm_up(session, GatewayTarget(stack.gateway_url), warm, pool_size + warm)
            rows: list[report.Row] = []
            rss: dict[str, dict[str, float | None]] = {}
            if "levels" in opts.scenarios:
                rows, rss = await _levels(session, stack, opts, direct_tokens)
            waves = {
                name: await _scenario(session, stack, opts, name, direct_tokens) for name in opts.scenarios
            }
    waves.pop("levels", None)
    return _result(opts, pool_size, rows, rss, waves)


async def _levels(
    session: aiohttp.ClientSession, stack: Stack, opts: Options, direct_tokens: list[str]
) -> tuple[list[report.Row], dict[str, dict[str, float | None]]]:
    """Both paths at each level; peak RSS read after the top level."""
    direct = DirectTarget(stack.sim_url, direct_tokens)
    gateway = GatewayTarget(stack.gateway_url)
    stats_redis = aioredis.Redis.from_url(stack.redis_url)
    try:
        rows = [
            await _measure(session, stats_redis, stack, target, level, opts)
            for level in opts.levels
            for target in (direct, gateway)
        ]
    finally:
        await stats_redis.aclose()
    return rows, _rss(stack)


async def _scenario(
    session: aiohttp.ClientSession, stack: Stack, opts: Options, name: str, direct_tokens: list[str]
) -> dict[str, Any] | None:
    """One burst or pace run: its waves, the CPU and peak RSS of each service while it ran."""
    runs: list[tuple[Target, int, float | None]]
    if name == "burst":
        await _configure_sim(session, stack, opts.chunks, opts.chunk_delay_ms)
        runs = [(GatewayTarget(stack.gateway_url), opts.burst, None)]
    elif name == "pace":
        await _configure_sim(session, stack, opts.pace_chunks, opts.pace_delay_ms)
        gap_s = opts.pace_delay_ms / 1000
        runs = [
            (DirectTarget(stack.sim_url, direct_tokens, scenarios.PACE_PROMPT), opts.pace_streams, gap_s),
            (GatewayTarget(stack.gateway_url, scenarios.PACE_PROMPT), opts.pace_streams, gap_s),
        ]
    else:
        return None
    result: dict[str, Any] = {"waves": [], "cpu_s": {}, "rss_mb": {}}
    for target, requests, gap in runs:
        await asyncio.sleep(SETTLE_S)
        for service in stack.services:
            reset_peak_rss(service.pid)
        before = _cpu_snapshot(stack)
        done = await scenarios.wave(session, target, name, requests, gap)
        after = _cpu_snapshot(stack)
        stack.check_alive()
        cpu = {k: round(after[k] - before.get(k, 0.0), 3) for k in after}
        busy = cpu.pop(MACHINE)
        cpu["other_processes_cores"] = round(max(0.0, busy - sum(cpu.values())) / done.elapsed_s, 2)
        result["waves"].append(done)
        result["cpu_s"][target.name] = cpu
        result["rss_mb"][target.name] = _rss(stack)
        _progress(f"  {name:<6} {target.name:<8} {scenarios.summary(done)}")
    return result


async def _configure_sim(session: aiohttp.ClientSession, stack: Stack, chunks: int, delay_ms: float) -> None:
    body = {"chunk_count": chunks, "chunk_delay_s": delay_ms / 1000}
    async with session.post(f"{stack.sim_url}/__sim/config", json=body) as resp:
        await resp.read()
        resp.raise_for_status()


def _rss(stack: Stack) -> dict[str, dict[str, float | None]]:
    return {s.name: {"peak_mb": _r(peak_rss_mb(s.pid)), "now_mb": _r(rss_mb(s.pid))} for s in stack.services}


def _r(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def _result(
    opts: Options,
    pool_size: int,
    rows: list[report.Row],
    rss: dict[str, dict[str, float | None]],
    waves: dict[str, dict[str, Any] | None],
) -> dict[str, Any]:
    config = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(opts).items()}
    config.update(
        {
            "model": MODEL,
            "gateway_pool_accounts": pool_size,
            "account_max_concurrency": 1,
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "ttfb": "request start to first content token: REST cmpl (direct), delta.content (gateway)",
        }
    )
    return {
        "started_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "config": config,
        "rows": [r.to_json() for r in rows],
        "comparisons": report.comparisons(rows),
        "rss_mb": rss,
        "scenarios": {name: scenarios.to_json(run) for name, run in waves.items() if run is not None},
        "targets": report.targets(rows, rss) + scenarios.targets(waves),
        "_rows": rows,
        "_waves": waves,
    }


def main(argv: list[str] | None = None) -> int:
    opts = parse_args(argv)
    log_dir = default_log_dir()
    try:
        result = asyncio.run(run(opts, log_dir))
    except Exception as exc:
        print(f"bench failed: {exc}\nservice logs kept in {log_dir}", file=sys.stderr)
        return 2
    rows: list[report.Row] = result.pop("_rows")
    waves: dict[str, dict[str, Any] | None] = result.pop("_waves")
    print(
        f"\n{opts.workers} worker(s) x {opts.worker_concurrency}, {os.cpu_count()} CPUs, "
        f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())} at the end"
    )
    if rows:
        levels = ",".join(str(level) for level in opts.levels)
        print(f"\nlevels {levels}: {opts.chunks} chunks {opts.chunk_delay_ms:g} ms apart")
        print(report.table(rows, result["rss_mb"], []))
    for name, measured in waves.items():
        if measured is not None:
            print(f"\n{scenarios.table(name, measured, opts)}")
    print()
    for check in result["targets"]:
        print(f"  [{'holds' if check['holds'] else 'MISSED':>6}] {check['target']}: {check['value']}")
    opts.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwritten: {opts.out}")
    if not opts.keep_logs:
        shutil.rmtree(log_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
