"""Token-service metrics (names in docs/INTERNALS.md), defined once at import.

Workers import the pool (through token_service/client.py), so refreshes and transitions they cause are
counted in their own process; the account gauges are filled from Redis by the token service at each scrape
(`update_account_gauges`). Labels are bounded: account short ids, kinds and fixed enums, never tokens.
"""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Iterable
from typing import Protocol

from prometheus_client import Counter, Gauge

from token_service.kinds import STATES

ACCOUNTS = Gauge("kimi_accounts", "Accounts by state", ["state"])
EXPIRY = Gauge(
    "kimi_account_token_expiry_timestamp_seconds",
    "Unix time at which the account's stored token (kimi-auth or refresh_token) expires",
    ["account", "kind"],
)
REFRESHES = Counter("kimi_token_refreshes_total", "Access-token refreshes by result", ["result"])
COOLDOWNS = Counter("kimi_account_cooldowns_total", "Accounts put to cool down, by reason", ["reason"])
TRANSITIONS = Counter(
    "kimi_account_state_transitions_total",
    "Account state changes",
    ["from_state", "to_state", "reason"],
)
PROBES = Counter("kimi_account_probes_total", "Background and on-demand account probes by result", ["result"])


class _AccountView(Protocol):
    @property
    def id(self) -> str: ...
    @property
    def kind(self) -> str: ...
    @property
    def state(self) -> str: ...
    @property
    def exp(self) -> int | None: ...


def update_account_gauges(accounts: Iterable[_AccountView]) -> None:
    """Replace the per-account and per-state gauges with the accounts stored right now."""
    by_state: Tally[str] = Tally()
    EXPIRY.clear()
    for account in accounts:
        by_state[account.state] += 1
        if account.exp is not None:
            EXPIRY.labels(account=account.id, kind=account.kind).set(account.exp)
    for state in STATES:
        ACCOUNTS.labels(state=state).set(by_state[state])
