"""The account pool library: workers lease, use and release accounts on Redis directly.

    pool = AccountPool(redis, settings.pool, KimiAuthClient(session, base_url))
    lease = await pool.lease(exclude={"a1"})      # RateLimited(retry_after_s) | ServiceUnavailable
    creds = await pool.credentials(lease)         # refreshes single-flight (a Redis lock) when needed
    await pool.extend(lease)                      # while streaming
    await pool.release(lease, "ok" | "rate_limited" | …, retry_after_s=None, detail=None)

Release outcomes drive the state machine: rate_limited / quota / overloaded → cooling until a time,
auth_failed → invalid (a refresh_token account first tries one refresh), others only count.
"""

from __future__ import annotations

import asyncio
import time
from typing import Literal

import msgspec
import redis.asyncio as aioredis

from shared.errors import (
    AuthenticationFailed,
    BadRequest,
    NotFound,
    RateLimited,
    ServiceUnavailable,
    UpstreamAuthError,
)
from shared.settings import PoolSettings
from token_service.crypto import SecretBox
from token_service.jwt_info import AccountKind, Claims, decode_claims
from token_service.kimi_auth import KimiAuthClient
from token_service.leases import Lease, LeaseScripts
from token_service.prober import check_live, probe_account
from token_service.refresh import Refresher
from token_service.store import Account, AccountState, AccountStore, InUse, NewToken, check_token, now_ms

ReleaseOutcome = Literal[
    "ok", "rate_limited", "quota", "overloaded", "auth_failed", "upstream_error", "cancelled"
]
ProbeResult = Literal["ok", "auth_failed", "rate_limited", "error", "expired"]

#: While every account is at its cap, `lease(wait_s=…)` polls this often.
BUSY_POLL_S = 0.05
#: What `RateLimited.retry_after_s` says when every account is busy rather than cooling.
BUSY_RETRY_AFTER_S = 1.0
_COOLABLE: tuple[AccountState, ...] = ("active", "cooling")

__all__ = ["AccountPool", "Credentials", "Lease", "ProbeResult", "ReleaseOutcome"]


class Credentials(msgspec.Struct, frozen=True):
    """What a Kimi driver needs to call as this account."""

    account_id: str
    kind: AccountKind
    access_token: str
    user_id: str
    device_id: str
    session_id: str


class AccountPool:
    def __init__(self, redis: aioredis.Redis, settings: PoolSettings, auth: KimiAuthClient) -> None:
        self.settings = settings
        self.auth = auth
        self.store = AccountStore(redis, SecretBox(settings.token_encryption_key))
        self.scripts: LeaseScripts = self.store.scripts
        self.refresher = Refresher(redis, self.store, auth, settings.refresh_margin_s)
        #: The account fields the lease script answered, by lease id, until `credentials` or `release`.
        self._leased_fields: dict[str, tuple[str, ...]] = {}

    # -- leases ---------------------------------------------------------------------------------------------

    async def lease(
        self, *, exclude: set[str] | None = None, only: set[str] | None = None, wait_s: float = 0.0
    ) -> Lease:
        """The best usable account; waits up to `wait_s` while every one is at its concurrency cap."""
        deadline = time.monotonic() + wait_s
        while True:
            picked = await self.scripts.take(
                now_ms=now_ms(),
                ttl_ms=self.settings.lease_ttl_s * 1000,
                cap=self.settings.max_concurrency_per_account,
                exclude=exclude or set(),
                only=only,
            )
            if picked.lease is not None:
                self._leased_fields[picked.lease.lease_id] = picked.fields
                if picked.previous_state == "cooling":
                    await self.store.transition(
                        picked.lease.account_id, "active", "cooldown_over", only_from=("cooling",)
                    )
                return picked.lease
            if picked.status != "busy" or time.monotonic() >= deadline:
                raise _no_account(picked.status, picked.soonest_cooling_ms)
            await asyncio.sleep(BUSY_POLL_S)

    async def extend(self, lease: Lease) -> bool:
        """Push the lease's expiry out by `lease_ttl_s`; False when it had already expired."""
        return await self.scripts.extend(lease, now_ms=now_ms(), ttl_ms=self.settings.lease_ttl_s * 1000)

    async def credentials(self, lease: Lease) -> Credentials:
        """What the driver needs to call as the leased account; no Redis read after `lease` while fresh."""
        fields = self._leased_fields.pop(lease.lease_id, None)
        if fields is not None:
            account = self.store.in_use(fields)
        else:
            account = await self.store.for_use(lease.account_id)
        if account is None:
            raise ServiceUnavailable(f"account {lease.account_id} was removed")
        token = account.token
        if account.kind == "kimi_auth":
            if token is None:
                raise ServiceUnavailable(f"account {lease.account_id} has no stored token")
        elif token is None or account.token_exp is None or not self.refresher.is_fresh(account.token_exp):
            token = await self.refresher.access_token(lease.account_id)
        return _credentials(lease.account_id, account, token)

    async def release(
        self,
        lease: Lease,
        outcome: ReleaseOutcome,
        retry_after_s: float | None = None,
        detail: str | None = None,
    ) -> None:
        """Give the slot back and apply the outcome to the account's state and counters.

        Freeing the slot, counting the outcome and noting `last_ok` / `last_error` are one round trip; only
        an outcome that changes the account's state (cooling, invalid) costs more.
        """
        self._leased_fields.pop(lease.lease_id, None)
        quiet = outcome in ("ok", "cancelled")
        await self.scripts.give_back(
            lease,
            now_ms=now_ms(),
            counter=_COUNTER_OF[outcome],
            note="ok" if outcome == "ok" else "" if quiet else "error",
            detail="" if quiet else detail or outcome,
        )
        if outcome == "auth_failed":
            await self._after_auth_failure(lease)
        elif outcome in _COOL_DEFAULT:
            await self.cool(lease.account_id, outcome, retry_after_s)

    async def cool(self, account_id: str, reason: str, retry_after_s: float | None) -> None:
        seconds = (
            retry_after_s if retry_after_s is not None else getattr(self.settings, _COOL_DEFAULT[reason])
        )
        until = now_ms() + int(seconds * 1000)
        await self.store.transition(account_id, "cooling", reason, until_ms=until, only_from=_COOLABLE)

    async def _after_auth_failure(self, lease: Lease) -> None:
        if lease.kind == "kimi_auth":
            await self.store.transition(lease.account_id, "invalid", "auth_failed", only_from=_COOLABLE)
            return
        try:
            await self.refresher.access_token(lease.account_id, force=True)
        except UpstreamAuthError:
            pass  # the refresher has already marked the account invalid
        except Exception:
            return  # Kimi was unreachable: not a verdict on the token

    # -- accounts -------------------------------------------------------------------------------------------

    async def add(self, token: str) -> tuple[Account, bool]:
        """Save a kimi-auth or refresh_token account (BadRequest for garbage or an expired token)."""
        return await self.store.save(check_token(token))

    async def add_ephemeral(self, tokens: list[str]) -> list[str]:
        """Pass-through tokens as accounts with a TTL; the same token always yields the same id."""
        ids = []
        for position, token in enumerate(tokens, start=1):
            new = _checked_passthrough(token, position, len(tokens))
            if not await self.store.touch_ephemeral(new.account_id, self.settings.ephemeral_ttl_s):
                await self.store.save(new, ephemeral_ttl_s=self.settings.ephemeral_ttl_s)
            ids.append(new.account_id)
        return ids

    async def list(self) -> list[Account]:
        return await self.store.list()

    async def get(self, account_id: str) -> Account:
        account = await self.store.get(account_id)
        if account is None:
            raise NotFound(f"no account {account_id!r}", param="account_id")
        return account

    async def remove(self, account_id: str) -> None:
        if not await self.store.remove(account_id):
            raise NotFound(f"no account {account_id!r}", param="account_id")

    async def clear(self) -> int:
        return await self.store.clear()

    async def disable(self, account_id: str) -> Account:
        await self.get(account_id)
        await self.store.transition(account_id, "disabled", "admin")
        return await self.get(account_id)

    async def enable(self, account_id: str) -> Account:
        account = await self.get(account_id)
        expired = account.exp is not None and account.exp <= time.time()
        await self.store.transition(account_id, "expired" if expired else "active", "admin")
        return await self.get(account_id)

    async def in_flight(self, account_id: str) -> int:
        return await self.scripts.in_flight(account_id, now_ms())

    async def resync(self) -> None:
        """Rebuild the lease zsets from the account hashes (the prober does it every pass, to heal drift)."""
        await self.scripts.rebuild(now_ms())

    # -- probes ---------------------------------------------------------------------------------------------

    async def probe(self, account_id: str) -> ProbeResult:
        """One cheap authenticated call; moves a recovered cooling / invalid account back to active."""
        return await probe_account(self, await self.get(account_id))

    async def check_token(self, token: str) -> bool:
        """kimi-free-api's /token/check: is this token live right now (nothing is stored)?"""
        return await check_live(self.auth, token)


_COUNTER_OF: dict[str, str] = {
    "ok": "ok",
    "rate_limited": "rate_limited",
    "quota": "quota",
    "overloaded": "overloaded",
    "auth_failed": "auth_failed",
    "upstream_error": "errors",
    "cancelled": "ok",
}
_COOL_DEFAULT: dict[str, str] = {
    "rate_limited": "cooldown_429_s",
    "quota": "quota_window_s",
    "overloaded": "cooldown_overload_s",
}


def _no_account(status: str, soonest_ms: int) -> Exception:
    if status == "cooling":
        wait = max(0.0, (soonest_ms - now_ms()) / 1000)
        return RateLimited(f"every Kimi account is cooling down; retry in {wait:.0f} s", retry_after_s=wait)
    if status == "busy":
        return RateLimited("every Kimi account is busy", retry_after_s=BUSY_RETRY_AFTER_S)
    return ServiceUnavailable(
        'no usable Kimi account: add one with POST /auth/save {"token": "<kimi-auth or refresh_token>"}'
    )


def _checked_passthrough(token: str, position: int, total: int) -> NewToken:
    try:
        return check_token(token)
    except BadRequest as exc:
        raise AuthenticationFailed(f"pass-through token {position} of {total}: {exc.message}") from None


def _credentials(account_id: str, account: InUse, token: str) -> Credentials:
    try:
        claims: Claims | None = decode_claims(token)
    except BadRequest:
        claims = None
    return Credentials(
        account_id=account_id,
        kind=account.kind,
        access_token=token,
        user_id=(claims.sub if claims and claims.sub else account.user_id),
        device_id=(claims.device_id if claims and claims.device_id else account.device_id),
        session_id=(claims.ssid if claims and claims.ssid else account.session_id),
    )
