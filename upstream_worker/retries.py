"""What an upstream failure means: for the account, how it is released; for the job, what it may still try.

Failures are told apart by their type (the `shared.errors` tree; each driver raises the right class where it
recognises a signal), never by their text. `release_outcome` maps a failure to the account's release outcome;
`RetryBudget` decides whether a job that has sent no content yet tries again: another account after a failover
error, or a wait for an account that was only busy.

Kimi runs one stream per user. Right after a turn was cut short (a client's `stop` / `max_tokens`, or a
disconnect) Kimi may still count the closed stream as running for a moment, and the next call on that account
answers `UpstreamStreamBusy`. That is a moment of this one request, not a limit of the account: the account is
not cooled, only skipped by the job's next lease, so that another account can serve at once. When none can (a
continued conversation is pinned to its account; a pool of one), the job waits a little and asks the busy
accounts again: `STREAM_BUSY_WAITS_S`, never past the job's deadline.

A model the account's plan may not use (`UpstreamPlanRequired`: K3 on a free account) is not the account's
failure either: it is released `cancelled` (no cooldown, no error noted) and skipped by this job only, without
counting against `max_attempts` (each such account is excluded, so the pool's size bounds it). When no account
is left the client gets that error: 403, the model needs a paid Kimi plan.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from shared.errors import (
    ClientError,
    ContentFiltered,
    UpstreamAuthError,
    UpstreamError,
    UpstreamOverloaded,
    UpstreamPlanRequired,
    UpstreamQuotaExhausted,
    UpstreamRateLimited,
    UpstreamStreamBusy,
    UpstreamUnavailable,
)
from token_service.pool import ReleaseOutcome
from upstream_worker.kimi.files import FileForgotten

#: Failures worth another account before the first token (429, quota, overload, 401, 5xx, no connection).
FAILOVER = (UpstreamRateLimited, UpstreamOverloaded, UpstreamAuthError, UpstreamUnavailable)
#: Waits before asking a busy account again: a stream Kimi still counts ends within a second or two of its
#: close. One job takes at most one busy answer more than there are waits, then the client gets the 429.
STREAM_BUSY_WAITS_S = (0.5, 1.0, 2.0)
MAX_STREAM_BUSY = len(STREAM_BUSY_WAITS_S) + 1


def release_outcome(failure: BaseException | None) -> ReleaseOutcome:
    """How an account is released after an attempt that ended with `failure` (None: it succeeded)."""
    match failure:
        case None | ClientError() | ContentFiltered():
            # A client's mistake Kimi refused, or its content policy: no fault of the account.
            return "ok"
        case asyncio.CancelledError() | UpstreamStreamBusy() | UpstreamPlanRequired() | FileForgotten():
            # Cut by the job, or refused before it ran (busy, or a model its plan lacks), or a stale cached
            # file of ours (FileForgotten): nothing is learned about the account.
            return "cancelled"
        case UpstreamQuotaExhausted():
            return "quota"
        case UpstreamRateLimited():
            return "rate_limited"
        case UpstreamOverloaded():
            return "overloaded"
        case UpstreamAuthError():
            return "auth_failed"
        case _:
            return "upstream_error"


@dataclass(slots=True)
class RetryBudget:
    """One job's failures before its first token, and the accounts its next lease must skip."""

    max_attempts: int
    #: Unix seconds after which the job is worthless (0: none); no wait goes past it.
    deadline_s: float = 0.0
    failures: int = 0
    busy_answers: int = 0
    waits: int = 0
    excluded: set[str] = field(default_factory=set)
    #: Excluded only because Kimi said they were busy: leased again after a wait.
    busy: set[str] = field(default_factory=set)
    last_error: UpstreamError | None = None
    #: A stale cached file was found (FileForgotten): the turn is tried once more, uploading again.
    refreshed_files: bool = False

    def retry_after(self, account_id: str, exc: UpstreamError) -> bool:
        """Count a failure of `account_id`; True when the job may try again (with the account skipped, unless
        only its cached files were stale)."""
        if isinstance(exc, FileForgotten):
            if self.refreshed_files:
                return False
            self.refreshed_files = True
            self.last_error = exc
            return True
        if isinstance(exc, UpstreamStreamBusy):
            self.busy_answers += 1
            if self.busy_answers >= MAX_STREAM_BUSY:
                return False
            self.busy.add(account_id)
        elif isinstance(exc, UpstreamPlanRequired):
            pass  # another account may have the plan; excluding each one bounds this by the pool's size
        elif isinstance(exc, FAILOVER):
            self.failures += 1
            if self.failures >= self.max_attempts:
                return False
        else:
            return False
        self.excluded.add(account_id)
        self.last_error = exc
        return True

    async def wait_for_busy(self) -> bool:
        """No other account can serve: wait, then let the busy accounts be leased again.

        False (at once) when no account was busy or the wait would pass the job's deadline.
        """
        if not self.busy:
            return False
        delay_s = STREAM_BUSY_WAITS_S[min(self.waits, len(STREAM_BUSY_WAITS_S) - 1)]
        if self.deadline_s and time.time() + delay_s >= self.deadline_s:
            return False
        await asyncio.sleep(delay_s)
        self.waits += 1
        self.excluded -= self.busy
        self.busy.clear()
        return True
