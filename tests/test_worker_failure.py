"""A worker that can no longer do its work exits non-zero, so that compose or systemd restarts it."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import sys
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from kimi_sim.answers import answer_for
from shared import keys
from shared.schema import Done, TextDelta
from tests.sim_fixtures import SimFactory
from tests.test_worker_support import (
    add_accounts,
    chat_request,
    enqueue,
    reply_events,
    text_of,
    wait_until,
    worker_settings,
)
from upstream_worker.__main__ import serve

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.timeout(30)
async def test_a_worker_whose_group_cannot_exist_exits_1(redis: aioredis.Redis, redis_url: str) -> None:
    """`kimi:jobs` holding something that is not a stream: `python -m upstream_worker` logs worker_failed
    and exits with code 1 (not a hang, not 0)."""
    await redis.set(keys.JOBS_STREAM, "not a stream")
    env = {
        **os.environ,
        "REDIS_URL": redis_url,
        "WORKER_METRICS_PORT": "0",
        "WORKER_HOST": "127.0.0.1",
        "LOG_FORMAT": "json",
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "upstream_worker", cwd=ROOT, env=env, stderr=asyncio.subprocess.PIPE
    )
    _, stderr = await asyncio.wait_for(proc.communicate(), 20)
    assert proc.returncode == 1
    events = [json.loads(line)["event"] for line in stderr.decode().splitlines() if line.startswith("{")]
    assert events[-1] == "worker_failed"


@pytest.mark.timeout(30)
async def test_a_dead_worker_loop_ends_the_process_with_1_after_its_job(
    redis: aioredis.Redis, redis_url: str, kimi_sim_factory: SimFactory
) -> None:
    """The heartbeat loop dies (its task cancelled from outside, standing in for any unexpected error): the
    worker reads no more jobs, lets the job in flight finish and ack, and `serve` returns exit code 1."""
    sim = await kimi_sim_factory(chunk_count=10, chunk_delay_s=0.1)
    await add_accounts(redis, sim, 1)
    settings = dataclasses.replace(
        worker_settings(redis_url, sim.url), host="127.0.0.1", metrics_port=0, claim_idle_ms=10_000
    )
    serving = asyncio.create_task(serve(settings))
    job_id = await enqueue(redis, chat_request("in flight"))

    async def streaming() -> bool:
        return any(isinstance(e, TextDelta) for e in await reply_events(redis, job_id))

    await wait_until(streaming)
    [heartbeat] = [t for t in asyncio.all_tasks() if t.get_name() == "worker-heartbeat"]
    heartbeat.cancel()
    await asyncio.sleep(0.3)  # the read loop has stopped; the job in flight still streams
    late = await enqueue(redis, chat_request("never read"))
    assert await asyncio.wait_for(serving, 10) == 1
    events = await reply_events(redis, job_id)
    assert isinstance(events[-1], Done) and text_of(events) == answer_for("in flight")
    assert await reply_events(redis, late) == []
    assert await redis.xlen(keys.JOBS_STREAM) == 1  # the finished job was acked and deleted, not the late one
    assert not await redis.hexists(keys.WORKERS_HASH, settings.consumer_name)
