"""`python -m tests.bench`: start the stack, drive both paths at each level, print the table, write JSON."""

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

from tests.bench import profile, report
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


@dataclass(frozen=True, slots=True)
class Options:
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


def parse_args(argv: list[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(prog="python -m tests.bench", description=__doc__)
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
    parser.add_argument("--quick", action="store_true", help="a short smoke run: 4 chunks, 1 ms apart")
    args = parser.parse_args(argv)
    levels = tuple(sorted({int(x) for x in args.levels.split(",") if x.strip()}))
    quick = bool(args.quick)
    return Options(
        levels=levels,
        duration_s=args.duration,
        chunks=4 if quick and args.chunks == 16 else args.chunks,
        chunk_delay_ms=1.0 if quick and args.chunk_delay_ms == 5.0 else args.chunk_delay_ms,
        workers=args.workers,
        worker_concurrency=args.worker_concurrency or 2 * max(levels),
        min_requests=args.min_requests if args.min_requests is not None else (5 if quick else MIN_REQUESTS),
        log_level=args.log_level,
        out=args.out,
        keep_logs=args.keep_logs,
        quick=quick,
        pool_accounts=args.pool_accounts,
        profile=args.profile,
    )


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


async def _prepare(session: aiohttp.ClientSession, stack: Stack, opts: Options) -> tuple[DirectTarget, int]:
    top = max(opts.levels)
    pool_size = opts.pool_accounts or 2 * top + 2
    started = time.perf_counter()
    tokens = await mint_refresh_tokens(session, stack.sim_url, top + pool_size)
    direct = DirectTarget(stack.sim_url, await access_tokens(session, stack.sim_url, tokens[:top]))
    await register(session, stack.gateway_url, stack.token_service_url, tokens[top:])
    _progress(
        f"accounts: {top} direct, {pool_size} in the gateway pool ({time.perf_counter() - started:.1f} s)",
    )
    return direct, pool_size


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
    top = max(opts.levels)
    connector = aiohttp.TCPConnector(limit=top + 32, limit_per_host=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        started = time.perf_counter()
        async with running_stack(config, session) as stack:
            _progress(f"stack ready in {time.perf_counter() - started:.1f} s (logs: {log_dir})")
            direct, pool_size = await _prepare(session, stack, opts)
            gateway = GatewayTarget(stack.gateway_url)
            # Unmeasured: opens connection pools and lets every pool account refresh its access token once.
            await warm_up(session, direct, top, top)
            await warm_up(session, gateway, top, pool_size + top)
            stats_redis = aioredis.Redis.from_url(stack.redis_url)
            try:
                rows = [
                    await _measure(session, stats_redis, stack, target, level, opts)
                    for level in opts.levels
                    for target in (direct, gateway)
                ]
            finally:
                await stats_redis.aclose()
            rss = {
                s.name: {"peak_mb": _r(peak_rss_mb(s.pid)), "now_mb": _r(rss_mb(s.pid))}
                for s in stack.services
            }
    return _result(opts, pool_size, rows, rss)


def _r(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def _result(
    opts: Options, pool_size: int, rows: list[report.Row], rss: dict[str, dict[str, float | None]]
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
        "targets": report.targets(rows, rss),
        "_rows": rows,
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
    print(
        f"\n{len(opts.levels)} levels, {opts.chunks} chunks {opts.chunk_delay_ms:g} ms apart, "
        f"{opts.workers} worker(s) x {opts.worker_concurrency}, {os.cpu_count()} CPUs"
    )
    print(report.table(rows, result["rss_mb"], result["targets"]))
    opts.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwritten: {opts.out}")
    if not opts.keep_logs:
        shutil.rmtree(log_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
