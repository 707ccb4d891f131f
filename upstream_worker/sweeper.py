"""The chat sweeper: deletes the Kimi chats kept for stored Responses API responses once nothing can use them.

A stored response keeps its Kimi chat, so that `previous_response_id` continues it natively; once the chat's
latest stored response has lapsed nothing reaches the chat any more, and it would stay in the Kimi account's
history for good. The gateway records each such chat in `kimi:chats:sweep` (gateway/stored_responses.py),
scored by when it is due; every worker process runs one sweeper, whose `sweep()` the worker's sweep loop calls
every CHAT_SWEEP_INTERVAL_S:

    ZRANGEBYSCORE kimi:chats:sweep -inf <now> LIMIT 0 SWEEP_BATCH    the due chats, a bounded batch
    ZREM <conversation>                       the claim: only the worker whose ZREM removed it goes on
    kimi:conv:<conversation>                  missing (expired) → nothing to delete: `gone`
    lease its account, pinned, no wait        busy or cooling → back in the set at now + interval: `retry`;
                                              disabled, invalid or removed → dropped: `gone`
    credentials → driver.delete_chat          released `ok` (`cancelled` when it failed): never a cooldown
    DEL kimi:conv:<conversation>, kimi:resp:chat:<conversation>                                 `deleted`

A delete Kimi refused (or whose credentials could not be had) is `failed`: back in the set in FAILED_RETRY_S,
record and all; the record's own TTL (CONVERSATION_TTL_S) bounds those retries, after which it is `gone`.
Chats kept with kimi-free-api's `conversation_id` are never in the set: their owners keep them on purpose.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Mapping
from enum import StrEnum
from typing import Final

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from shared import keys
from shared.errors import GatewayError, RateLimited, ServiceUnavailable
from shared.logging import get_logger
from token_service.client import AccountPool, Lease
from upstream_worker import conversations, metrics
from upstream_worker.drivers import Driver
from upstream_worker.runner import to_the_end

log = get_logger(__name__)

#: Due chats one sweep takes on: each costs a few Redis round trips and one Kimi call, so a tick stays
#: within seconds; a backlog is worked off over the next ticks (and by the other workers).
SWEEP_BATCH: Final = 100
#: A chat whose delete failed (Kimi down, a token refused) is tried again this much later: rarely enough
#: that a chat Kimi no longer has costs a call an hour until its record lapses.
FAILED_RETRY_S: Final = 3_600.0


class SweepOutcome(StrEnum):
    """What became of one due chat: the label of `kimi_worker_chats_swept_total{outcome}`."""

    DELETED = "deleted"
    #: Nothing left to delete, or no way to: its record lapsed, its account is out of service or removed.
    GONE = "gone"
    #: Its account was busy or cooling: back in the set for the next sweep.
    RETRY = "retry"
    FAILED = "failed"


class ChatSweeper:
    """One worker's sweeper; `sweep()` takes on one batch of due chats and never raises but for Redis."""

    def __init__(
        self, redis: aioredis.Redis, pool: AccountPool, drivers: Mapping[str, Driver], interval_s: float
    ) -> None:
        self._redis = redis
        self._pool = pool
        self._drivers = drivers
        self._interval_s = interval_s

    async def sweep(self, stop: asyncio.Event | None = None) -> list[SweepOutcome]:
        """Each due chat of one batch this worker claimed, swept; stops claiming once `stop` is set."""
        due = await self._redis.zrangebyscore(keys.CHATS_SWEEP, "-inf", _now_ms(), start=0, num=SWEEP_BATCH)
        outcomes = []
        for raw in due:
            if stop is not None and stop.is_set():
                break
            conversation_id = _text(raw)  # type: ignore[arg-type]  # no WITHSCORES: members only
            if await self._redis.zrem(keys.CHATS_SWEEP, conversation_id) != 1:
                continue  # another worker claimed it
            outcome = await self._guarded(conversation_id)
            metrics.CHATS_SWEPT.labels(outcome.value).inc()
            outcomes.append(outcome)
        return outcomes

    async def _guarded(self, conversation_id: str) -> SweepOutcome:
        """`_sweep_one`; an unexpected error is logged once and the chat tried again later."""
        try:
            return await self._sweep_one(conversation_id)
        except (RedisError, OSError):
            with contextlib.suppress(RedisError, OSError):  # a claimed chat is not lost to one failed command
                await self._later(conversation_id, self._interval_s)
            raise
        except Exception as exc:
            log.warning("chat_sweep_failed", conversation_id=conversation_id, error=type(exc).__name__)
            await self._later(conversation_id, FAILED_RETRY_S)
            return SweepOutcome.FAILED

    async def _sweep_one(self, conversation_id: str) -> SweepOutcome:
        conversation = await conversations.load(self._redis, conversation_id)
        driver = self._drivers.get(conversation.protocol) if conversation is not None else None
        if conversation is None or driver is None:
            await self._forget(conversation_id)
            return SweepOutcome.GONE
        try:
            lease = await self._pool.lease(only={conversation.account_id}, wait_s=0.0)
        except RateLimited:
            await self._later(conversation_id, self._interval_s)
            return SweepOutcome.RETRY
        except ServiceUnavailable:
            log.info(
                "chat_sweep_account_gone", conversation_id=conversation_id, account_id=conversation.account_id
            )
            await self._forget(conversation_id)
            return SweepOutcome.GONE
        if not await self._delete(lease, driver, conversation.chat_id):
            await self._later(conversation_id, FAILED_RETRY_S)
            return SweepOutcome.FAILED
        await self._forget(conversation_id)
        return SweepOutcome.DELETED

    async def _delete(self, lease: Lease, driver: Driver, chat_id: str) -> bool:
        """Delete the chat as the leased account; the lease is released whatever happens (the driver logs a
        refused delete itself)."""
        deleted = False
        try:
            creds = await self._pool.credentials(lease)
            deleted = await driver.delete_chat(creds, chat_id)
        except GatewayError as exc:
            log.warning("chat_sweep_credentials_failed", account_id=lease.account_id, error=exc.kind)
        finally:
            await to_the_end(self._pool.release(lease, "ok" if deleted else "cancelled"))
        return deleted

    async def _later(self, conversation_id: str, delay_s: float) -> None:
        """Back in the set, due `delay_s` from now; GT: never earlier than a score a newer response set."""
        due_ms = _now_ms() + round(delay_s * 1000)
        await self._redis.zadd(keys.CHATS_SWEEP, {conversation_id: due_ms}, gt=True)

    async def _forget(self, conversation_id: str) -> None:
        """The chat's conversation record and head: nothing continues a swept chat."""
        await self._redis.delete(
            keys.conversation_key(conversation_id), keys.response_chat_head_key(conversation_id)
        )


def _now_ms() -> int:
    return round(time.time() * 1000)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
