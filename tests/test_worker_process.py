"""Real `python -m upstream_worker` processes: SIGKILL reclaim by another worker, SIGTERM drain, /metrics."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest

from kimi_sim.answers import answer_for
from kimi_sim.server import SimServer
from shared import keys
from shared.schema import Done, TextDelta
from tests.sim_fixtures import SimFactory
from tests.test_worker_support import (
    add_accounts,
    chat_request,
    enqueue,
    pending_count,
    reply_events,
    text_of,
    wait_until,
)

ROOT = Path(__file__).resolve().parent.parent
CHAT_PATH = "/apiv2/kimi.gateway.chat.v1.ChatService/Chat"


class WorkerProcess:
    def __init__(self, proc: asyncio.subprocess.Process, name: str, log: Path) -> None:
        self.proc, self.name, self.log = proc, name, log

    def lines(self) -> list[dict[str, object]]:
        out = []
        for line in self.log.read_text(errors="replace").splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return out

    def logged(self, event: str) -> dict[str, object] | None:
        return next((line for line in self.lines() if line.get("event") == event), None)

    @property
    def metrics_url(self) -> str:
        started = self.logged("worker_started")
        assert started is not None
        return f"http://127.0.0.1:{started['metrics_port']}"


Launcher = Callable[..., Awaitable[WorkerProcess]]


@pytest.fixture
async def launch(redis, redis_url: str, tmp_path: Path) -> AsyncIterator[Launcher]:
    """`await launch(name, sim, **env)` → a started worker process, registered in kimi:workers."""
    procs: list[WorkerProcess] = []

    async def start(name: str, sim: SimServer, **env: str) -> WorkerProcess:
        environ = {
            **os.environ,
            "REDIS_URL": redis_url,
            "KIMI_BASE_URL": sim.url,
            "WORKER_NAME": name,
            "WORKER_METRICS_PORT": "0",
            "WORKER_HOST": "127.0.0.1",
            "WORKER_CLAIM_IDLE_MS": "500",
            "WORKER_HEARTBEAT_INTERVAL_S": "0.1",
            "ACCOUNT_MAX_CONCURRENCY": "16",
            "LOG_FORMAT": "json",
            **env,
        }
        log = tmp_path / f"{name}.log"
        with log.open("wb") as sink:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "upstream_worker", cwd=ROOT, env=environ, stdout=sink, stderr=sink
            )
        worker = WorkerProcess(proc, name, log)
        procs.append(worker)

        async def ready() -> bool:
            assert proc.returncode is None, log.read_text()
            return (
                bool(await redis.hexists(keys.WORKERS_HASH, name))
                and worker.logged("worker_started") is not None
            )

        await wait_until(ready, timeout_s=20)
        return worker

    yield start
    for worker in procs:
        if worker.proc.returncode is None:
            worker.proc.kill()
        await worker.proc.wait()


async def test_jobs_of_a_killed_worker_are_finished_by_the_other(
    redis, kimi_sim: SimServer, launch: Launcher
) -> None:
    """SIGKILL a worker mid-job: the other worker reclaims its unanswered jobs and answers all of them."""
    await add_accounts(redis, kimi_sim, 4)
    kimi_sim.state.faults.arm("stall_first_byte", count=4, path=CHAT_PATH, seconds=30)
    w1 = await launch("w1", kimi_sim, WORKER_CONCURRENCY="4")
    prompts = [f"job {n}" for n in range(6)]
    job_ids = [await enqueue(redis, chat_request(p)) for p in prompts[:4]]

    async def stalled() -> bool:
        return len([r for r in kimi_sim.state.requests if r.path == CHAT_PATH]) == 4

    await wait_until(stalled)
    w2 = await launch("w2", kimi_sim, WORKER_CONCURRENCY="4")
    await asyncio.sleep(1.0)  # twice the claim threshold: a live worker keeps its jobs
    consumers = await redis.xinfo_consumers(keys.JOBS_STREAM, keys.JOBS_GROUP)
    assert {c["name"]: c["pending"] for c in consumers if c["pending"]} == {b"w1": 4}

    w1.proc.send_signal(signal.SIGKILL)
    await w1.proc.wait()
    job_ids += [await enqueue(redis, chat_request(p)) for p in prompts[4:]]

    async def all_done() -> bool:
        ends = [(await reply_events(redis, j))[-1:] for j in job_ids]
        return all(end and isinstance(end[0], Done) for end in ends)

    await wait_until(all_done, timeout_s=15)
    for prompt, job_id in zip(prompts, job_ids, strict=True):
        assert text_of(await reply_events(redis, job_id)) == answer_for(prompt)

    async def all_acked() -> bool:  # each job is acked right after its Done and chat cleanup
        return await pending_count(redis) == 0

    await wait_until(all_acked)

    async with aiohttp.ClientSession() as session:
        async with session.get(f"{w2.metrics_url}/healthz") as resp:
            assert resp.status == 200
            assert (await resp.json())["consumer"] == "w2"
        async with session.get(f"{w2.metrics_url}/metrics") as resp:
            exposition = await resp.text()
    assert "kimi_worker_reclaimed_jobs_total 4.0" in exposition
    assert 'kimi_worker_jobs_total{outcome="ok"} 6.0' in exposition
    assert "kimi_worker_heartbeat_timestamp_seconds" in exposition


async def test_sigterm_drains_in_flight_jobs_and_reads_no_new_one(
    redis, kimi_sim_factory: SimFactory, launch: Launcher
) -> None:
    """On SIGTERM the worker finishes and acks its in-flight job, reads nothing new, and exits 0."""
    sim = await kimi_sim_factory(chunk_count=10, chunk_delay_s=0.1)
    await add_accounts(redis, sim, 1)
    worker = await launch("drainer", sim, WORKER_CONCURRENCY="4")
    first = await enqueue(redis, chat_request("in flight"))

    async def streaming() -> bool:
        return any(isinstance(e, TextDelta) for e in await reply_events(redis, first))

    await wait_until(streaming)
    worker.proc.send_signal(signal.SIGTERM)

    async def draining() -> bool:
        return worker.logged("worker_draining") is not None

    await wait_until(draining)
    second = await enqueue(redis, chat_request("too late for this worker"))
    assert await asyncio.wait_for(worker.proc.wait(), 10) == 0

    events = await reply_events(redis, first)
    assert isinstance(events[-1], Done) and text_of(events) == answer_for("in flight")
    assert await reply_events(redis, second) == []
    assert await pending_count(redis) == 0
    # The first job was acked and deleted; the second stays in the stream, never delivered.
    group = (await redis.xinfo_groups(keys.JOBS_STREAM))[0]
    [(second_entry, _fields)] = await redis.xrange(keys.JOBS_STREAM)
    assert group["last-delivered-id"] < second_entry
    assert not await redis.hexists(keys.WORKERS_HASH, "drainer")
