"""Keeping accounts honest: probes, the background prober and the background refresher.

A probe is one cheap authenticated call, the account kind's own (token_service/kinds.py `Kind.probe`: today
Connect `GetCurrentUser` for kimi-auth, REST `GET /api/user` for refresh_token). The prober re-checks cooling
accounts whose time is up and invalid accounts, returns those that recovered to active, and marks accounts
whose `exp` has passed as expired, so no account is lost silently. The refresher renews access tokens that
are about to expire, off the request path. This module depends on the pool (token_service/accounts.py), never
the reverse.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any, Literal

from shared.errors import BadRequest, UpstreamAuthError, UpstreamError, UpstreamRateLimited
from shared.logging import get_logger
from token_service import metrics
from token_service.accounts import Accounts
from token_service.kimi_auth import KimiAuthClient
from token_service.kinds import Credential, Kind, is_known, kind_named, kind_of, recognize
from token_service.store import Account, now_ms

ProbeResult = Literal["ok", "auth_failed", "rate_limited", "error", "expired"]

#: Only accounts leased within this window are kept warm; an idle one refreshes on its next lease.
RECENT_USE_S = 3600

log = get_logger("token_service.prober")


async def probe(accounts: Accounts, account_id: str) -> ProbeResult:
    """Probe one account by id (NotFound when there is none) and apply the verdict to its state."""
    return await probe_account(accounts, await accounts.get(account_id))


async def probe_account(accounts: Accounts, account: Account) -> ProbeResult:
    """Probe one account and apply the verdict to its state; returns the verdict."""
    result = await _verdict(accounts, account)
    metrics.PROBES.labels(result=result).inc()
    if result == "ok":
        await accounts.store.note_ok(account.id)
        await accounts.store.transition(account.id, "active", "probe_ok", only_from=("cooling", "invalid"))
    return result


async def _verdict(accounts: Accounts, account: Account) -> ProbeResult:
    if account.exp is not None and account.exp <= time.time():
        await accounts.store.transition(account.id, "expired", "exp_passed")
        return "expired"
    credential = await accounts.store.credential(account.id)
    if credential is None:
        return "error"
    kind = kind_of(credential)
    try:
        await _call(accounts, account.id, kind, credential)
    except UpstreamAuthError:
        if not kind.refreshes:  # a kind that refreshes is marked invalid by the refresher, when Kimi says so
            await accounts.store.transition(
                account.id, "invalid", "probe_auth_failed", only_from=("active", "cooling")
            )
        return "auth_failed"
    except UpstreamRateLimited as exc:
        await accounts.cool(
            account.id, "rate_limited", accounts.cooldown_s(kind, "rate_limited", exc.retry_after_s)
        )
        return "rate_limited"
    except UpstreamError as exc:
        await accounts.store.note_error(account.id, f"probe: {exc.message}")
        return "error"
    return "ok"


async def _call(accounts: Accounts, account_id: str, kind: Kind[Any], credential: Credential) -> None:
    auth = accounts.auth.at(await accounts.store.origin(account_id))  # the account's region's host
    if not kind.refreshes:
        await kind.probe(auth, credential, credential.secret)
        return
    access = await accounts.refresher.access_token(account_id)
    try:
        await kind.probe(auth, credential, access)
    except UpstreamAuthError:
        # The cached access token may be what was revoked; one forced refresh decides.
        await kind.probe(auth, credential, await accounts.refresher.access_token(account_id, force=True))


async def check_live(auth: KimiAuthClient, text: str) -> bool:
    """kimi-free-api's /token/check: does this credential work right now? Nothing is stored.

    A kind that refreshes must refresh and its access token pass the probe; any other is probed as it is.
    """
    try:
        credential = recognize(text)
        kind = kind_of(credential)
        auth = auth.for_region(credential.identity().region)
        bearer = credential.secret
        if kind.refresh is not None:
            bearer = (await kind.refresh(auth, credential)).access_token
        await kind.probe(auth, credential, bearer)
    except (BadRequest, UpstreamError):
        return False
    return True


async def probe_due(accounts: Accounts) -> dict[str, ProbeResult]:
    """One prober pass: expired accounts marked, due cooling and invalid accounts probed."""
    results: dict[str, ProbeResult] = {}
    now = now_ms()
    for account in await accounts.list():
        expired = account.exp is not None and account.exp * 1000 <= now
        if account.state in ("disabled", "expired") or not is_known(account.kind):
            continue
        if (
            expired
            or account.state == "invalid"
            or (account.state == "cooling" and account.cooling_until_ms <= now)
        ):
            results[account.id] = await probe_account(accounts, account)
    return results


async def refresh_due(accounts: Accounts) -> int:
    """One refresher pass: renew cached access tokens that will pass their margin before the next pass."""
    settings = accounts.settings
    horizon = time.time() + settings.refresh_margin_s + settings.probe_interval_s
    recent_ms = now_ms() - RECENT_USE_S * 1000
    renewed = 0
    for account in await accounts.list():
        if not is_known(account.kind) or not kind_named(account.kind).refreshes:
            continue
        if account.state != "active" or account.access_exp is None or account.last_used_ms < recent_ms:
            continue
        if account.access_exp <= horizon:
            try:
                await accounts.refresher.access_token(account.id, force=True)
                renewed += 1
            except UpstreamError as exc:
                log.warning("background_refresh_failed", account_id=account.id, error=exc.kind)
    return renewed


class Prober:
    """The token service's background task: probe and refresh every `interval_s` until `stop()`.

    It stops on an event rather than only on cancellation: a cancel that lands inside a client library's
    timeout handling can come back as a TimeoutError, which the loop would otherwise survive.
    """

    def __init__(self, accounts: Accounts, interval_s: float) -> None:
        self.accounts = accounts
        self.interval_s = interval_s
        self._stop = asyncio.Event()

    async def run(self) -> None:
        while not self._stop.is_set():
            await self.run_once()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self.interval_s)

    async def run_once(self) -> None:
        try:
            await probe_due(self.accounts)
            await refresh_due(self.accounts)
            await self.accounts.resync()
        except Exception as exc:  # a Redis hiccup must not stop the prober for good
            log.warning("prober_pass_failed", error=type(exc).__name__)

    def stop(self) -> None:
        self._stop.set()
