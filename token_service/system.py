"""What the operator's console shows of the whole system (`GET /admin/system`): the job stream, the workers'
heartbeats and the account pool by state and kind, read from Redis in one pass.

    {"jobs": {"stream_length": n, "pending": n, "dead_letter": n},
     "workers": [{"name", "last_heartbeat_ms", "age_s", "alive"}, …],     # by name
     "accounts": {"total": n, "by_state": {state: n}, "by_kind": {kind: n}, "passthrough": n},
     "stale_after_s": s, "now_ms": ms}

`stream_length` counts the jobs queued or running (workers delete what they ack), `pending` those a worker holds;
a worker is alive while its heartbeat is at most `stale_after_s` old (the rule of /readyz, gateway/workers.py).
Pass-through accounts (clients' own tokens) are counted apart from the pool's.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from shared import keys
from shared.settings import CommonSettings
from token_service.kinds import KINDS, STATES
from token_service.store import Account

#: WORKER_STALE_S's default (shared/settings.py CommonSettings: the gateway's /readyz uses the same).
WORKER_STALE_S: float = CommonSettings().worker_stale_s


async def system_snapshot(
    redis: aioredis.Redis, accounts: list[Account], stale_after_s: float = WORKER_STALE_S
) -> dict[str, Any]:
    now_ms = int(time.time() * 1000)
    return {
        "jobs": await _jobs(redis),
        "workers": await _workers(redis, now_ms, stale_after_s),
        "accounts": _accounts(accounts),
        "stale_after_s": stale_after_s,
        "now_ms": now_ms,
    }


async def _jobs(redis: aioredis.Redis) -> dict[str, int]:
    pipe = redis.pipeline(transaction=False)
    pipe.xlen(keys.JOBS_STREAM)
    pipe.xlen(keys.DEAD_LETTER_STREAM)
    pipe.xpending(keys.JOBS_STREAM, keys.JOBS_GROUP)
    length, dead, pending = await pipe.execute(raise_on_error=False)
    # No stream or no group yet (no worker ever started): nothing is pending.
    held = 0 if isinstance(pending, ResponseError) else int(pending["pending"])
    return {"stream_length": int(length), "pending": held, "dead_letter": int(dead)}


async def _workers(redis: aioredis.Redis, now_ms: int, stale_after_s: float) -> list[dict[str, Any]]:
    beats = await redis.hgetall(keys.WORKERS_HASH)
    out = []
    for raw_name, raw_beat in sorted(beats.items()):
        beat_ms = _int(raw_beat)
        age_s = round(max(now_ms - beat_ms, 0) / 1000, 1)
        name = raw_name.decode("utf-8", "replace") if isinstance(raw_name, bytes) else str(raw_name)
        out.append(
            {"name": name, "last_heartbeat_ms": beat_ms, "age_s": age_s, "alive": age_s <= stale_after_s}
        )
    return out


def _accounts(accounts: list[Account]) -> dict[str, Any]:
    stored = [a for a in accounts if not a.ephemeral]
    states = Counter(a.state for a in stored)
    kinds = Counter(a.kind for a in stored)
    return {
        "total": len(stored),
        "by_state": {state: states[state] for state in STATES},
        "by_kind": {kind.name: kinds[kind.name] for kind in KINDS} | dict(kinds),
        "passthrough": len(accounts) - len(stored),
    }


def _int(value: bytes | str) -> int:
    try:
        return int(float(value))
    except ValueError:
        return 0
