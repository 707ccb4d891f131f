"""Access tokens of accounts whose kind refreshes: cached until shortly before their `exp`, refreshed
single-flight. How a kind refreshes is its registry entry's `refresh` (token_service/kinds.py).

Single-flight across every process: the refresher holds `kimi:acct:{pool}:lock:<id>` (SET NX PX) while it
calls the upstream; everyone else polls the account hash until a fresh access token appears or the lock goes
away. A rotated credential that the refresh returns replaces the stored one.
"""

from __future__ import annotations

import asyncio
import secrets
import time

import redis.asyncio as aioredis

from shared.errors import (
    ServiceUnavailable,
    UpstreamAuthError,
    UpstreamError,
    UpstreamRateLimited,
    UpstreamUnavailable,
)
from shared.keys import account_key, refresh_lock_key
from shared.logging import get_logger
from token_service import metrics
from token_service.kimi_auth import TIMEOUT_S, KimiAuthClient
from token_service.kinds import kind_of
from token_service.store import AccountStore, now_ms

#: The lock outlives one refresh (a Connect call and its REST fallback, each with its own timeout) so it is
#: never lost mid-refresh, and frees itself when its holder crashes.
LOCK_TTL_MS = int((2 * TIMEOUT_S + 5) * 1000)
#: Waiters re-read the account this often.
POLL_S = 0.02
_UNLOCK = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

log = get_logger("token_service.refresh")


class Refresher:
    """Hands out fresh access tokens, refreshing each account at most once at a time across every process."""

    def __init__(
        self, redis: aioredis.Redis, store: AccountStore, auth: KimiAuthClient, margin_s: int
    ) -> None:
        self.redis = redis
        self.store = store
        self.auth = auth
        self.margin_s = margin_s
        self._unlock = redis.register_script(_UNLOCK)

    def is_fresh(self, exp: int) -> bool:
        return exp - self.margin_s > time.time()

    async def access_token(self, account_id: str, *, force: bool = False) -> str:
        """A usable access token; `force` replaces the cached one even if it looks fresh (after a 401)."""
        cached = await self.store.access(account_id)
        if cached is not None and not force and self.is_fresh(cached[1]):
            return cached[0]
        return await self._single_flight(account_id, stale=cached[0] if cached else None)

    async def _single_flight(self, account_id: str, stale: str | None) -> str:
        lock = refresh_lock_key(account_id)
        owner = secrets.token_hex(8)
        started_ms = now_ms()
        deadline = time.monotonic() + LOCK_TTL_MS / 1000
        while True:
            if await self.redis.set(lock, owner, nx=True, px=LOCK_TTL_MS):
                try:
                    return await self._newer(account_id, stale) or await self._refresh(account_id)
                finally:
                    await self._unlock(keys=[lock], args=[owner])
            await asyncio.sleep(POLL_S)
            newer = await self._newer(account_id, stale)
            if newer:
                return newer
            await self._raise_if_failed_since(account_id, started_ms)
            if time.monotonic() > deadline:
                raise UpstreamUnavailable(f"account {account_id}: timed out waiting for a token refresh")

    async def _newer(self, account_id: str, stale: str | None) -> str | None:
        """An access token someone else stored since we looked, if it is fresh."""
        cached = await self.store.access(account_id)
        if cached is not None and cached[0] != stale and self.is_fresh(cached[1]):
            return cached[0]
        return None

    async def _raise_if_failed_since(self, account_id: str, started_ms: int) -> None:
        """A waiter shares the holder's failure instead of calling Kimi again with a dead token."""
        failed_ms, state = await self.redis.hmget(account_key(account_id), ["refresh_failed_ms", "state"])
        if failed_ms and int(failed_ms) >= started_ms:
            if state == b"invalid":
                raise UpstreamAuthError(f"account {account_id}: refresh rejected by Kimi")
            raise UpstreamUnavailable(f"account {account_id}: token refresh failed")

    async def _refresh(self, account_id: str) -> str:
        credential = await self.store.credential(account_id)
        if credential is None:
            raise UpstreamAuthError(f"account {account_id} was removed")
        refresh = kind_of(credential).refresh
        if refresh is None:
            raise ServiceUnavailable(f"account {account_id}: its kind does not refresh")
        auth = self.auth.at(await self.store.origin(account_id))  # its region's hosts
        try:
            result = await refresh(auth, credential)
        except UpstreamError as exc:
            await self._failed(account_id, exc)
            raise
        await self.store.set_access(account_id, result.access_token, result.access_exp, result.rotated)
        await self.store.count(account_id, "refreshes")
        metrics.REFRESHES.labels(result="ok").inc()
        log.info(
            "token_refreshed",
            account_id=account_id,
            rotated=result.rotated is not None,
            access_exp=result.access_exp,
        )
        return result.access_token

    async def _failed(self, account_id: str, exc: UpstreamError) -> None:
        await self.store.note_error(account_id, f"refresh: {exc.message}")
        if isinstance(exc, UpstreamAuthError):
            metrics.REFRESHES.labels(result="auth_failed").inc()
            await self.store.drop_access(account_id)
            await self.store.transition(
                account_id, "invalid", "refresh_rejected", only_from=("active", "cooling")
            )
        elif isinstance(exc, UpstreamRateLimited):
            metrics.REFRESHES.labels(result="rate_limited").inc()
        else:
            metrics.REFRESHES.labels(result="error").inc()
        # Written last, so a waiter that sees it also sees the new state.
        await self.redis.hset(account_key(account_id), "refresh_failed_ms", str(now_ms()))
