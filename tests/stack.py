"""The full stack for SDK tests: real Redis, the Kimi simulator, a token service and a gateway on TCP (the
gateway forwards the admin routes to that token service; its background prober is off, so account states move
only as a test makes them), and a worker in-process.

`stack_factory(**gateway_overrides)` starts one (e.g. `keepalive_interval_s=0.5`); everything it started is
stopped at teardown. Use it by importing the fixture into a test module: `from tests.stack import stack_factory`.

Keyword-only options, beside the gateway's settings:
- `worker_overrides={...}`: fields of the in-process worker's `WorkerSettings` (e.g. `keepalive_interval_s`).
- `worker_processes=N`: N real `python -m upstream_worker` processes instead of the in-process worker, each
  registered in `kimi:workers` before the factory returns (`Stack.workers`: names, logs, `kill()`);
  `worker_env={...}` adds environment variables to every one (e.g. `WORKER_CLAIM_IDLE_MS`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import signal
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest_asyncio
import redis.asyncio as aioredis
from aiohttp.test_utils import TestServer

from gateway.app import create_app
from kimi_sim.server import SimServer
from shared import keys
from shared.settings import (
    CommonSettings,
    GatewaySettings,
    PoolSettings,
    TokenServiceSettings,
    UpstreamTimeouts,
    WorkerSettings,
)
from tests.procs import Proc, Procs
from token_service.accounts import Accounts
from token_service.app import create_app as create_token_service
from upstream_worker.resources import open_worker

#: How long a worker process may take to start and send its first heartbeat.
WORKER_START_S = 20.0


@dataclass
class WorkerProc:
    """One `python -m upstream_worker` process of a stack; its consumer name is `name`."""

    name: str
    proc: Proc

    def kill(self) -> None:
        """SIGKILL: the process dies at once, its pending entries and leases stay behind."""
        self.proc.process.send_signal(signal.SIGKILL)
        self.proc.process.wait()

    def logged(self, event: str) -> list[dict[str, Any]]:
        """Its JSON log lines whose `event` is `event` (e.g. `job`: one per finished job)."""
        out = []
        for line in self.proc.log_lines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(record, dict) and record.get("event") == event:
                out.append(record)
        return out


@dataclass
class Stack:
    sim: SimServer
    redis: aioredis.Redis
    url: str
    settings: GatewaySettings
    #: The token service the gateway forwards `/auth/*`, `/admin/*` and `/token/check` to.
    token_service_url: str = ""
    #: The worker processes (empty when the worker runs in-process).
    workers: list[WorkerProc] = field(default_factory=list)

    async def add(self, kind: str = "kimi_auth", **sim_account: Any) -> str:
        """A simulator account (`SimState.add_account` options: plan, region, issuer) saved in the pool; its id."""
        token = self.sim.state.add_account(kind, **sim_account).token  # type: ignore[arg-type]
        async with aiohttp.ClientSession() as session:
            pool = Accounts(self.redis, PoolSettings(**sim_regions(self.sim)), session, self.sim.url)
            account, _ = await pool.add(token)
        return account.id

    async def sim_state(self) -> dict[str, Any]:
        """The simulator's `GET /__sim/state`: chats, deleted chats, streams."""
        async with aiohttp.ClientSession() as session, session.get(f"{self.sim.url}/__sim/state") as resp:
            state: dict[str, Any] = await resp.json()
        return state

    async def sim_requests(self, path: str = "") -> list[dict[str, Any]]:
        """The simulator's request log, only requests whose path contains `path`."""
        url = f"{self.sim.url}/__sim/requests"
        async with aiohttp.ClientSession() as session, session.get(url, params={"path": path}) as resp:
            log: list[dict[str, Any]] = await resp.json()
        return log

    async def arm(self, name: str, **params: Any) -> None:
        """Arm a simulator fault (kimi_sim/README.md)."""
        async with (
            aiohttp.ClientSession() as session,
            session.post(f"{self.sim.url}/__sim/faults", json={"name": name, **params}) as resp,
        ):
            resp.raise_for_status()

    async def configure_sim(self, **fields: Any) -> None:
        """Change `SimConfig` fields at run time (e.g. `chunk_delay_s`), as `POST /__sim/config` does."""
        async with (
            aiohttp.ClientSession() as session,
            session.post(f"{self.sim.url}/__sim/config", json=fields) as resp,
        ):
            resp.raise_for_status()


StackFactory = Callable[..., Awaitable[Stack]]


@pytest_asyncio.fixture
async def stack_factory(
    redis: aioredis.Redis, redis_url: str, kimi_sim: SimServer, tmp_path: Path
) -> AsyncIterator[StackFactory]:
    async with AsyncExitStack() as exits:

        async def start(
            *,
            worker_overrides: Mapping[str, Any] | None = None,
            worker_processes: int = 0,
            worker_env: Mapping[str, str] | None = None,
            **gateway_overrides: Any,
        ) -> Stack:
            common = CommonSettings(redis_url=redis_url, kimi_base_url=kimi_sim.url)
            regions = sim_regions(kimi_sim)
            settings = GatewaySettings(
                common=common,
                pool=PoolSettings(**regions),
                keepalive_interval_s=0.5,
                idle_timeout_s=30.0,
                request_timeout_s=40.0,
            )
            settings = dataclasses.replace(settings, **gateway_overrides)
            token_service_url = await _start_token_service(exits, settings)
            settings = dataclasses.replace(settings, token_service_url=token_service_url)
            server = TestServer(create_app(settings), host="127.0.0.1")
            await server.start_server()
            exits.push_async_callback(server.close)
            stack = Stack(kimi_sim, redis, f"http://127.0.0.1:{server.port}", settings, token_service_url)
            if worker_processes:
                procs = Procs(tmp_path)
                exits.callback(procs.stop_all)
                env = _worker_env(redis_url, kimi_sim, worker_env or {})
                stack.workers = [_start_worker(procs, env) for _ in range(worker_processes)]
                await _registered(redis, procs, [w.name for w in stack.workers])
                return stack
            worker_settings = WorkerSettings(
                common=common,
                pool=PoolSettings(max_concurrency_per_account=1, lease_ttl_s=30, **regions),
                concurrency=4,
                consumer_name=f"sdk-{uuid.uuid4().hex[:6]}",
                heartbeat_interval_s=0.1,
                timeouts=UpstreamTimeouts(connect_s=2.0, first_byte_s=30.0, idle_s=30.0),
            )
            worker_settings = dataclasses.replace(worker_settings, **(worker_overrides or {}))
            worker = await exits.enter_async_context(open_worker(worker_settings))
            task = asyncio.create_task(worker.run())

            async def stop() -> None:
                worker.stop()
                await asyncio.wait_for(task, 10)

            exits.push_async_callback(stop)
            return stack

        yield start


async def _start_token_service(exits: AsyncExitStack, gateway: GatewaySettings) -> str:
    """The token service on a free loopback port, with the gateway's common and pool settings; its URL."""
    settings = TokenServiceSettings(common=gateway.common, pool=gateway.pool)
    server = TestServer(create_token_service(settings, background=False), host="127.0.0.1")
    await server.start_server()
    exits.push_async_callback(server.close)
    return f"http://127.0.0.1:{server.port}"


def sim_regions(sim: SimServer) -> dict[str, str]:
    """PoolSettings fields that send each Kimi region's accounts to the simulator's host of that region."""
    return {"cn_base_url": sim.url, "global_base_url": sim.global_url}


def _worker_env(redis_url: str, sim: SimServer, extra: Mapping[str, str]) -> dict[str, str]:
    """The in-process worker's settings, as a worker process reads them from its environment."""
    return {
        **os.environ,
        "REDIS_URL": redis_url,
        "KIMI_BASE_URL": sim.url,
        "KIMI_CN_BASE_URL": sim.url,
        "KIMI_GLOBAL_BASE_URL": sim.global_url,
        "WORKER_HOST": "127.0.0.1",
        "WORKER_METRICS_PORT": "0",
        "WORKER_CONCURRENCY": "4",
        "ACCOUNT_MAX_CONCURRENCY": "1",
        "LEASE_TTL_S": "30",
        "WORKER_HEARTBEAT_INTERVAL_S": "0.1",
        "KIMI_CONNECT_TIMEOUT_S": "2",
        "KIMI_FIRST_BYTE_TIMEOUT_S": "30",
        "KIMI_IDLE_TIMEOUT_S": "30",
        "LOG_FORMAT": "json",
        "LOG_LEVEL": "INFO",
        **extra,
    }


def _start_worker(procs: Procs, env: Mapping[str, str]) -> WorkerProc:
    name = f"sdk-{uuid.uuid4().hex[:6]}"
    return WorkerProc(name, procs.start(name, ["-m", "upstream_worker"], {**env, "WORKER_NAME": name}))


async def _registered(redis: aioredis.Redis, procs: Procs, names: list[str]) -> None:
    """Wait until every worker has sent its first heartbeat (it reads jobs from then on)."""
    deadline = time.monotonic() + WORKER_START_S
    while not all(await asyncio.gather(*(redis.hexists(keys.WORKERS_HASH, n) for n in names))):
        procs.check_alive()
        if time.monotonic() > deadline:
            raise RuntimeError(f"worker processes did not start within {WORKER_START_S:g} s")
        await asyncio.sleep(0.05)
