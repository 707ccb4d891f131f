"""The system under test: each service as its own subprocess, waited on, measured from /proc, and stopped.

Services are started with the interpreter running the bench (`sys.executable -m <package>`), so the Popen
pid is the service's own process and /proc/<pid>/status is its memory (VmHWM: peak resident set).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import redis.asyncio as aioredis

from shared.keys import WORKERS_HASH
from shared.redis_server import RedisHandle, free_port, start_redis_server

REPO_ROOT = Path(__file__).resolve().parents[2]
#: Cold imports of five Python processes on two cores take a few seconds; the gateway also waits for a worker.
READY_TIMEOUT_S = 45.0
READY_POLL_S = 0.1
STOP_TIMEOUT_S = 5.0
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True, slots=True)
class StackConfig:
    chunks: int
    chunk_delay_ms: float
    workers: int
    worker_concurrency: int
    account_max_concurrency: int
    log_level: str
    log_dir: Path


@dataclass
class Service:
    """One running process of the stack."""

    name: str
    process: subprocess.Popen[bytes]
    log_path: Path | None

    @property
    def pid(self) -> int:
        return self.process.pid

    def exited(self) -> int | None:
        return self.process.poll()

    def log_tail(self, chars: int = 2000) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return self.log_path.read_text(errors="replace")[-chars:]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=STOP_TIMEOUT_S)


@dataclass
class Stack:
    """Addresses and processes of one started system."""

    redis_url: str
    sim_url: str
    gateway_url: str
    token_service_url: str
    services: list[Service] = field(default_factory=list)

    def by_name(self, name: str) -> Service:
        return next(s for s in self.services if s.name == name)

    def check_alive(self) -> None:
        for service in self.services:
            code = service.exited()
            if code is not None:
                raise RuntimeError(f"{service.name} exited with code {code}:\n{service.log_tail()}")


class StartupError(RuntimeError):
    pass


# ---------------------------------------------------------------- /proc readings


def _status_kb(pid: int, key: str) -> int | None:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return None


def peak_rss_mb(pid: int) -> float | None:
    """VmHWM: the highest resident set the process has had."""
    kb = _status_kb(pid, "VmHWM")
    return None if kb is None else kb / 1024


def reset_peak_rss(pid: int) -> None:
    """Start VmHWM over from the current resident set (Linux `clear_refs` 5), to measure one scenario's peak."""
    with contextlib.suppress(OSError):
        Path(f"/proc/{pid}/clear_refs").write_text("5")


def rss_mb(pid: int) -> float | None:
    kb = _status_kb(pid, "VmRSS")
    return None if kb is None else kb / 1024


def cpu_seconds(pid: int) -> float:
    """User + system CPU time the process has used so far."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat.rsplit(")", 1)[1].split()
    # After the ")" closing comm, utime and stime are the 12th and 13th fields (stat(5) fields 14 and 15).
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS


def machine_busy_seconds() -> float:
    """CPU time every core of the machine has spent busy since boot (/proc/stat), for the noise estimate."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[:8])
    return (user + nice + system + irq + softirq + steal) / _CLOCK_TICKS


async def redis_command_stats(client: aioredis.Redis) -> dict[str, tuple[int, int]]:
    """Calls and microseconds per Redis command so far (INFO commandstats; script-internal calls included)."""
    info = await client.info("commandstats")
    return {name.removeprefix("cmdstat_"): (int(v["calls"]), int(v["usec"])) for name, v in info.items()}


# ---------------------------------------------------------------- starting


def _env(extra: Mapping[str, str], log_level: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GATEWAY_", "TOKEN_SERVICE_", "WORKER_"))}
    env.update({"LOG_LEVEL": log_level, "LOG_FORMAT": "json", "PYTHONUNBUFFERED": "1"})
    env.pop("ADMIN_API_KEY", None)
    env.update(extra)
    return env


def _spawn(name: str, module: str, args: list[str], env: dict[str, str], log_dir: Path) -> Service:
    log_path = log_dir / f"{name}.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", module, *args],
            cwd=REPO_ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    return Service(name, process, log_path)


def _spawn_python_services(config: StackConfig, redis_url: str, ports: dict[str, int]) -> list[Service]:
    sim_url = f"http://127.0.0.1:{ports['sim']}"
    common = {"REDIS_URL": redis_url, "KIMI_BASE_URL": sim_url}
    pool = {"ACCOUNT_MAX_CONCURRENCY": str(config.account_max_concurrency)}
    sim_args = ["--port", str(ports["sim"]), "--chunks", str(config.chunks)]
    sim_args += ["--chunk-delay-ms", f"{config.chunk_delay_ms:g}"]
    log_dir, level = config.log_dir, config.log_level
    services = [
        _spawn("simulator", "kimi_sim", sim_args, _env({}, level), log_dir),
        _spawn(
            "token_service",
            "token_service",
            [],
            _env(
                {
                    **common,
                    **pool,
                    "TOKEN_SERVICE_HOST": "127.0.0.1",
                    "TOKEN_SERVICE_PORT": str(ports["token_service"]),
                },
                level,
            ),
            log_dir,
        ),
        _spawn(
            "gateway",
            "gateway",
            [],
            _env(
                {
                    **common,
                    **pool,
                    "GATEWAY_HOST": "127.0.0.1",
                    "GATEWAY_PORT": str(ports["gateway"]),
                    "TOKEN_SERVICE_URL": f"http://127.0.0.1:{ports['token_service']}",
                },
                level,
            ),
            log_dir,
        ),
    ]
    for index in range(config.workers):
        worker_env = {
            **common,
            **pool,
            "WORKER_METRICS_PORT": "0",
            "WORKER_CONCURRENCY": str(config.worker_concurrency),
            "WORKER_NAME": consumer_name(f"worker-{index}"),
        }
        services.append(_spawn(f"worker-{index}", "upstream_worker", [], _env(worker_env, level), log_dir))
    return services


def consumer_name(service_name: str) -> str:
    """The worker's consumer name in the group (and its key in the workers hash)."""
    return f"bench-{service_name}"


# ---------------------------------------------------------------- readiness


async def _wait_http(session: aiohttp.ClientSession, url: str, service: Service, *, need_ok: bool) -> None:
    """Poll `url` until it answers (200 when `need_ok`, any HTTP status otherwise)."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    last = "no answer"
    while time.monotonic() < deadline:
        if service.exited() is not None:
            raise StartupError(f"{service.name} exited at start:\n{service.log_tail()}")
        try:
            async with session.get(url, timeout=aiohttp.ClientTimeout(total=2)) as resp:
                await resp.read()
                if resp.status == 200 or (not need_ok and resp.status < 500):
                    return
                last = f"HTTP {resp.status}"
        except (aiohttp.ClientError, TimeoutError) as exc:
            last = type(exc).__name__
        await asyncio.sleep(READY_POLL_S)
    raise StartupError(
        f"{service.name} not ready at {url} after {READY_TIMEOUT_S:.0f} s ({last}):\n{service.log_tail()}"
    )


async def _wait_workers(redis_url: str, workers: list[Service]) -> None:
    """Every worker has written its heartbeat into the workers hash."""
    client = aioredis.Redis.from_url(redis_url)
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            for worker in workers:
                if worker.exited() is not None:
                    raise StartupError(f"{worker.name} exited at start:\n{worker.log_tail()}")
            names = {n.decode() if isinstance(n, bytes) else n for n in await client.hkeys(WORKERS_HASH)}
            if all(consumer_name(w.name) in names for w in workers):
                return
            await asyncio.sleep(READY_POLL_S)
        raise StartupError(f"workers did not heartbeat into {WORKERS_HASH} within {READY_TIMEOUT_S:.0f} s")
    finally:
        await client.aclose()


async def _wait_ready(session: aiohttp.ClientSession, stack: Stack) -> None:
    workers = [s for s in stack.services if s.name.startswith("worker-")]
    await asyncio.gather(
        _wait_http(session, f"{stack.sim_url}/__sim/state", stack.by_name("simulator"), need_ok=True),
        _wait_http(
            session, f"{stack.token_service_url}/healthz", stack.by_name("token_service"), need_ok=False
        ),
        _wait_http(session, f"{stack.gateway_url}/readyz", stack.by_name("gateway"), need_ok=True),
        _wait_workers(stack.redis_url, workers),
    )


# ---------------------------------------------------------------- the stack


def _redis_service(handle: RedisHandle) -> Service:
    assert handle.process is not None
    return Service("redis", handle.process, None)


@contextlib.asynccontextmanager
async def running_stack(config: StackConfig, session: aiohttp.ClientSession) -> AsyncIterator[Stack]:
    """Start Redis and every service, wait until all are ready, stop them all on the way out."""
    redis_handle = start_redis_server()
    ports = {name: free_port() for name in ("sim", "token_service", "gateway")}
    stack = Stack(
        redis_url=redis_handle.url,
        sim_url=f"http://127.0.0.1:{ports['sim']}",
        gateway_url=f"http://127.0.0.1:{ports['gateway']}",
        token_service_url=f"http://127.0.0.1:{ports['token_service']}",
        services=[_redis_service(redis_handle)],
    )
    try:
        stack.services += _spawn_python_services(config, redis_handle.url, ports)
        await _wait_ready(session, stack)
        yield stack
    finally:
        for service in reversed(stack.services[1:]):
            service.stop()
        redis_handle.stop()


def default_log_dir() -> Path:
    return Path(tempfile.mkdtemp(prefix="kimi-bench-"))
