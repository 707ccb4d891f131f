"""Keeping accounts honest: probes, the background prober and the background refresher.

The prober re-checks cooling accounts whose time is up and invalid accounts with one cheap authenticated
call (REST `GET /api/user` for refresh_token accounts, Connect `GetCurrentUser` for kimi-auth), returns
those that recovered to active, and marks accounts whose `exp` has passed as expired, so no account is
lost silently. The refresher renews access tokens that are about to expire, off the request path.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import TYPE_CHECKING

from shared.errors import BadRequest, UpstreamAuthError, UpstreamError, UpstreamRateLimited
from shared.logging import get_logger
from token_service import metrics
from token_service.jwt_info import decode_claims, kind_of
from token_service.kimi_auth import KimiAuthClient
from token_service.store import Account, now_ms

if TYPE_CHECKING:
    from token_service.pool import AccountPool, ProbeResult

#: Only accounts leased within this window are kept warm; an idle one refreshes on its next lease.
RECENT_USE_S = 3600

log = get_logger("token_service.prober")


async def probe_account(pool: AccountPool, account: Account) -> ProbeResult:
    """Probe one account and apply the verdict to its state; returns the verdict."""
    result = await _verdict(pool, account)
    metrics.PROBES.labels(result=result).inc()
    if result == "ok":
        await pool.store.note_ok(account.id)
        await pool.store.transition(account.id, "active", "probe_ok", only_from=("cooling", "invalid"))
    return result


async def _verdict(pool: AccountPool, account: Account) -> ProbeResult:
    if account.exp is not None and account.exp <= time.time():
        await pool.store.transition(account.id, "expired", "exp_passed")
        return "expired"
    try:
        await _call(pool, account)
    except UpstreamAuthError:
        if account.kind == "kimi_auth":
            await pool.store.transition(
                account.id, "invalid", "probe_auth_failed", only_from=("active", "cooling")
            )
        return "auth_failed"
    except UpstreamRateLimited as exc:
        await pool.cool(account.id, "rate_limited", exc.retry_after_s)
        return "rate_limited"
    except UpstreamError as exc:
        await pool.store.note_error(account.id, f"probe: {exc.message}")
        return "error"
    return "ok"


async def _call(pool: AccountPool, account: Account) -> None:
    if account.kind == "kimi_auth":
        token = await pool.store.secret(account.id)
        await pool.auth.probe_connect(token or "")
        return
    access = await pool.refresher.access_token(account.id)
    try:
        await pool.auth.probe_rest(access)
    except UpstreamAuthError:
        # The cached access token may be what was revoked; one forced refresh decides.
        await pool.auth.probe_rest(await pool.refresher.access_token(account.id, force=True))


async def check_live(auth: KimiAuthClient, token: str) -> bool:
    """kimi-free-api's /token/check: a refresh for a refresh_token, GetCurrentUser for a kimi-auth."""
    try:
        kind = kind_of(decode_claims(token.strip()))
        if kind == "kimi_auth":
            await auth.probe_connect(token.strip())
            return True
        result = await auth.refresh(token.strip())
    except (BadRequest, UpstreamError):
        return False
    return bool(result.access_token and result.refresh_token)


async def probe_due(pool: AccountPool) -> dict[str, ProbeResult]:
    """One prober pass: expired accounts marked, due cooling and invalid accounts probed."""
    results: dict[str, ProbeResult] = {}
    now = now_ms()
    for account in await pool.list():
        expired = account.exp is not None and account.exp * 1000 <= now
        if account.state in ("disabled", "expired"):
            continue
        if (
            expired
            or account.state == "invalid"
            or (account.state == "cooling" and account.cooling_until_ms <= now)
        ):
            results[account.id] = await probe_account(pool, account)
    return results


async def refresh_due(pool: AccountPool) -> int:
    """One refresher pass: renew cached access tokens that will pass their margin before the next pass."""
    horizon = time.time() + pool.settings.refresh_margin_s + pool.settings.probe_interval_s
    recent_ms = now_ms() - RECENT_USE_S * 1000
    renewed = 0
    for account in await pool.list():
        if account.kind != "refresh_token" or account.state != "active" or account.access_exp is None:
            continue
        if account.last_used_ms < recent_ms:
            continue
        if account.access_exp <= horizon:
            try:
                await pool.refresher.access_token(account.id, force=True)
                renewed += 1
            except UpstreamError as exc:
                log.warning("background_refresh_failed", account_id=account.id, error=exc.kind)
    return renewed


class Prober:
    """The token service's background task: probe and refresh every `interval_s` until `stop()`.

    It stops on an event rather than only on cancellation: a cancel that lands inside a client library's
    timeout handling can come back as a TimeoutError, which the loop would otherwise survive.
    """

    def __init__(self, pool: AccountPool, interval_s: float) -> None:
        self.pool = pool
        self.interval_s = interval_s
        self._stop = asyncio.Event()

    async def run(self) -> None:
        while not self._stop.is_set():
            await self.run_once()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self.interval_s)

    async def run_once(self) -> None:
        try:
            await probe_due(self.pool)
            await refresh_due(self.pool)
            await self.pool.resync()
        except Exception as exc:  # a Redis hiccup must not stop the prober for good
            log.warning("prober_pass_failed", error=type(exc).__name__)

    def stop(self) -> None:
        self._stop.set()
