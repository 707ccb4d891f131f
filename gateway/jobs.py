"""The gateway's end of the job stream: one job in, unless the backlog is full.

Workers delete the jobs they ack (XACK + XDEL), so `XLEN kimi:jobs` is the backlog: jobs queued or running.
One script adds a job only while the backlog is below `JOBS_BACKLOG_MAX`: one round trip, and atomic, so a
burst never overshoots the bound. Past it the client is told to come back later (429, `Retry-After`); nothing
queued is ever trimmed to make room, as `XADD MAXLEN` did.
"""

from __future__ import annotations

import hashlib

import redis.asyncio as aioredis
from redis.exceptions import NoScriptError

from shared.errors import RateLimited
from shared.keys import JOBS_STREAM
from shared.schema import Job, encode_job

#: A full backlog drains at the workers' pace (an answer takes seconds): a client should not hammer it.
BACKLOG_RETRY_AFTER_S = 5.0

#: KEYS[1] job stream; ARGV[1] backlog bound, ARGV[2] the msgpack job. The entry id, or nil when full.
_ENQUEUE_LUA = """
if redis.call('XLEN', KEYS[1]) >= tonumber(ARGV[1]) then return false end
return redis.call('XADD', KEYS[1], '*', 'job', ARGV[2])
"""
_ENQUEUE_SHA = hashlib.sha1(_ENQUEUE_LUA.encode()).hexdigest()


async def enqueue(redis: aioredis.Redis, job: Job, backlog_max: int) -> None:
    """Add `job` to the job stream; RateLimited when `backlog_max` jobs are already queued or running."""
    args = (1, JOBS_STREAM, backlog_max, encode_job(job))
    try:
        entry_id = await redis.evalsha(_ENQUEUE_SHA, *args)
    except NoScriptError:  # a restarted Redis, or SCRIPT FLUSH: EVAL loads the script again
        entry_id = await redis.eval(_ENQUEUE_LUA, *args)
    if entry_id is None:
        raise RateLimited(
            f"The job queue is full ({backlog_max} requests queued or running); retry later.",
            retry_after_s=BACKLOG_RETRY_AFTER_S,
        )
