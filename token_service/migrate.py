"""Accounts stored by older versions under untagged keys (`kimi:acct:<id>`, `kimi:acct:index`, …) move once to
the `kimi:acct:{pool}:` layout of shared/keys.py. The token service runs this at start; with no old index left
it does nothing. The derived zsets (ready, cooling, leases) are not moved: the next lease rebuilds them.
"""

from __future__ import annotations

import contextlib

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from shared.keys import ACCOUNT_INDEX, ACCOUNT_LAYOUT, LEGACY_ACCOUNT_PREFIX, account_key, lease_key
from shared.logging import get_logger

log = get_logger("token_service.migrate")

LEGACY_INDEX = f"{LEGACY_ACCOUNT_PREFIX}index"
_LEGACY_DERIVED = tuple(f"{LEGACY_ACCOUNT_PREFIX}{name}" for name in ("ready", "cooling", "leases", "layout"))


async def migrate_legacy_accounts(redis: aioredis.Redis) -> int:
    """Move every account of the old index (hash and in-flight leases); returns how many there were."""
    ids = sorted(m.decode() if isinstance(m, bytes) else m for m in await redis.smembers(LEGACY_INDEX))
    if not ids:
        return 0
    for account_id in ids:
        await _move(redis, f"{LEGACY_ACCOUNT_PREFIX}{account_id}", account_key(account_id))
        await _move(redis, f"{LEGACY_ACCOUNT_PREFIX}lease:{account_id}", lease_key(account_id))
        await redis.sadd(ACCOUNT_INDEX, account_id)
    await redis.delete(LEGACY_INDEX, *_LEGACY_DERIVED, ACCOUNT_LAYOUT)
    log.info("accounts_migrated", count=len(ids), to_prefix=account_key(""))
    return len(ids)


async def _move(redis: aioredis.Redis, old: str, new: str) -> None:
    """RENAMENX (TTL kept); when the new key already exists it is the newer data and the old one goes."""
    with contextlib.suppress(ResponseError):  # no such key: nothing to move
        if not await redis.renamenx(old, new):
            await redis.delete(old)
