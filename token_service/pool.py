"""The account pool as workers use it: lease, use and release accounts on Redis directly.

    pool = AccountPool(redis, settings.pool, session, settings.common.kimi_base_url)
    lease = await pool.lease(exclude={"a1"})      # RateLimited(retry_after_s) | ServiceUnavailable
    creds = await pool.credentials(lease)         # refreshes single-flight (a Redis lock) when needed
    await pool.extend(lease)                      # while streaming
    await pool.release(lease, "ok" | "rate_limited" | …, retry_after_s=None, detail=None)

Release outcomes drive the state machine: rate_limited / quota / overloaded → cooling until a time (the
upstream's Retry-After, else the kind's cooldown), auth_failed → invalid (a kind that refreshes first tries one
forced refresh), others only count. What differs between kinds is asked of token_service/kinds.py.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Literal

import aiohttp
import msgspec
import redis.asyncio as aioredis

from shared.errors import BadRequest, RateLimited, ServiceUnavailable, UpstreamAuthError
from shared.settings import PoolSettings
from token_service.crypto import SecretBox
from token_service.jwt_info import Claims, decode_claims
from token_service.kimi_auth import KimiAuthClient
from token_service.kinds import COOL_REASONS, IN_SERVICE, CoolReason, Kind, kind_named, max_in_flight
from token_service.leases import Lease, LeaseScripts, Ticket
from token_service.refresh import Refresher
from token_service.regions import Origins
from token_service.store import IN_USE_FIELDS, AccountStore, InUse, now_ms

ReleaseOutcome = Literal[
    "ok", "rate_limited", "quota", "overloaded", "auth_failed", "upstream_error", "cancelled"
]

#: While every account is at its cap, `lease(wait_s=…)` polls this often.
BUSY_POLL_S = 0.05
#: What `RateLimited.retry_after_s` says when every account is busy rather than cooling.
BUSY_RETRY_AFTER_S = 1.0

__all__ = ["BUSY_POLL_S", "AccountPool", "Credentials", "Lease", "ReleaseOutcome", "Ticket"]


class Credentials(msgspec.Struct, frozen=True):
    """What a driver needs to call as this account."""

    account_id: str
    #: The account's kind (a registry name); `token_service.client.protocol_for` turns it into a protocol.
    kind: str
    access_token: str
    user_id: str
    device_id: str
    session_id: str
    #: Where calls as this account go: a kind's own host, else the account's region's web origin
    #: (token_service/regions.py); None: the driver's KIMI_BASE_URL.
    origin: str | None = None


class AccountPool:
    """Leases of the pool's accounts, their credentials, and the state their outcomes lead to."""

    def __init__(
        self,
        redis: aioredis.Redis,
        settings: PoolSettings,
        session: aiohttp.ClientSession,
        kimi_base_url: str,
    ) -> None:
        self.settings = settings
        self.origins = Origins(kimi_base_url, settings.cn_base_url, settings.global_base_url)
        self.auth = KimiAuthClient(
            session, kimi_base_url, rest_fallback=settings.refresh_rest_fallback, origins=self.origins
        )
        self.scripts = LeaseScripts(redis, max_in_flight(settings))
        self.store = AccountStore(redis, SecretBox(settings.token_encryption_key), self.scripts, self.origins)
        self.refresher = Refresher(redis, self.store, self.auth, settings.refresh_margin_s)
        #: The account fields the lease script answered, by lease id, until `credentials` or `release`.
        self._leased_fields: dict[str, dict[str, str]] = {}

    async def lease(
        self,
        *,
        exclude: set[str] | None = None,
        only: set[str] | None = None,
        kinds: frozenset[str] | None = None,
        wait_s: float = 0.0,
        ticket: Ticket | None = None,
        stop: asyncio.Event | None = None,
    ) -> Lease:
        """The best usable account (of `kinds`, when given: names of the kind registry); waits up to `wait_s`
        while every one is at its concurrency cap. With a `ticket`, the wait is first-come-first-served
        across every process (token_service/leases.py): the job keeps its place in the line between calls
        and leaves it when it gives up. Setting `stop` ends the wait at its next poll (as if it had run out)."""
        try:
            return await self._lease(exclude, only, kinds, wait_s, ticket, stop)
        except BaseException:
            if ticket is not None:
                await self.scripts.leave(ticket, now_ms())
            raise

    async def _lease(
        self,
        exclude: set[str] | None,
        only: set[str] | None,
        kinds: frozenset[str] | None,
        wait_s: float,
        ticket: Ticket | None,
        stop: asyncio.Event | None,
    ) -> Lease:
        deadline = time.monotonic() + wait_s
        while True:
            picked = await self.scripts.take(
                now_ms=now_ms(),
                ttl_ms=self.settings.lease_ttl_s * 1000,
                exclude=exclude or set(),
                only=only,
                fields=IN_USE_FIELDS,
                kinds=kinds,
                ticket=ticket,
            )
            if picked.lease is not None:
                self._leased_fields[picked.lease.lease_id] = dict(picked.fields)
                if picked.previous_state == "cooling":
                    await self.store.transition(
                        picked.lease.account_id, "active", "cooldown_over", only_from=("cooling",)
                    )
                return picked.lease
            stopped = stop is not None and stop.is_set()
            if picked.status != "busy" or time.monotonic() >= deadline or stopped:
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
        if not account.kind.refreshes:
            bearer = account.credential.secret
        elif account.access is not None and self._fresh(account.access_exp):
            bearer = account.access
        else:
            bearer = await self.refresher.access_token(lease.account_id)
        origin = self.store.origin_of(account.region, account.base_url)
        return _credentials(lease.account_id, account, bearer, origin)

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
            await self._after_auth_failure(lease, kind_named(lease.kind))
        elif (reason := _COOLS_FOR.get(outcome)) is not None:
            seconds = self.cooldown_s(kind_named(lease.kind), reason, retry_after_s)
            await self.cool(lease.account_id, reason, seconds)

    def cooldown_s(self, kind: Kind[Any], reason: CoolReason, retry_after_s: float | None) -> float:
        """The upstream's Retry-After when it gave one, else the kind's cooldown for the reason."""
        return retry_after_s if retry_after_s is not None else kind.limits(self.settings).cooldown_s[reason]

    async def cool(self, account_id: str, reason: CoolReason, seconds: float) -> None:
        """Cool an account in service for `seconds` (a disabled or invalid one stays as it is)."""
        until = now_ms() + int(seconds * 1000)
        await self.store.transition(account_id, "cooling", reason, until_ms=until, only_from=IN_SERVICE)

    def _fresh(self, exp: int | None) -> bool:
        return exp is not None and self.refresher.is_fresh(exp)

    async def _after_auth_failure(self, lease: Lease, kind: Kind[Any]) -> None:
        if not kind.refreshes:
            await self.store.transition(lease.account_id, "invalid", "auth_failed", only_from=IN_SERVICE)
            return
        try:
            await self.refresher.access_token(lease.account_id, force=True)
        except UpstreamAuthError:
            pass  # the refresher has already marked the account invalid
        except Exception:
            return  # the upstream was unreachable: not a verdict on the credential


#: The outcomes that cool an account, each its own reason.
_COOLS_FOR: dict[ReleaseOutcome, CoolReason] = {reason: reason for reason in COOL_REASONS}
_COUNTER_OF: dict[ReleaseOutcome, str] = {
    "ok": "ok",
    "rate_limited": "rate_limited",
    "quota": "quota",
    "overloaded": "overloaded",
    "auth_failed": "auth_failed",
    "upstream_error": "errors",
    "cancelled": "ok",
}


def _no_account(status: str, soonest_ms: int) -> Exception:
    if status == "cooling":
        wait = max(0.0, (soonest_ms - now_ms()) / 1000)
        return RateLimited(f"every Kimi account is cooling down; retry in {wait:.0f} s", retry_after_s=wait)
    if status == "busy":
        return RateLimited("every Kimi account is busy", retry_after_s=BUSY_RETRY_AFTER_S)
    if status == "crowded":
        return RateLimited(
            "too many requests of this client are waiting for a Kimi account",
            retry_after_s=BUSY_RETRY_AFTER_S,
        )
    return ServiceUnavailable(
        'no usable Kimi account: add one with POST /auth/save {"token": "<kimi-auth or refresh_token>"}'
    )


def _credentials(account_id: str, account: InUse, bearer: str, origin: str) -> Credentials:
    """A bearer that is a JWT carries the freshest ids; the stored ones stand in for any it lacks."""
    try:
        claims: Claims | None = decode_claims(bearer)
    except BadRequest:
        claims = None
    return Credentials(
        account_id=account_id,
        kind=account.kind.name,
        access_token=bearer,
        user_id=(claims.sub if claims and claims.sub else account.user_id),
        device_id=(claims.device_id if claims and claims.device_id else account.device_id),
        session_id=(claims.ssid if claims and claims.ssid else account.session_id),
        origin=account.credential.origin() or origin or None,
    )
