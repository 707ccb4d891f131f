"""What the rest of the system may know of the token service: the only module `gateway/` and
`upstream_worker/` import from `token_service`. Its store, prober, refresher, admin and metrics stay inside.

Workers (upstream_worker/resources.py, runner.py):
    pool = AccountPool(redis, settings.pool, session, settings.common.kimi_base_url)
    lease = await pool.lease(exclude=…, only=…, wait_s=…)    # Lease; RateLimited | ServiceUnavailable
    creds = await pool.credentials(lease)                     # Credentials; refreshes single-flight
    await pool.extend(lease)                                  # bool
    await pool.release(lease, outcome, retry_after_s=None, detail=None)
    protocol_for(lease.kind, spec)                            # the driver that serves this model
The gateway (gateway/auth.py):
    passthrough_tokens(credential)                            # `Bearer T1,T2` → the tokens, or None
    check_passthrough(tokens)                                 # routes that need no job: checked, not stored
    await PassThroughAccounts(redis, settings.pool).add(tokens)   # ephemeral accounts → their ids
"""

from __future__ import annotations

from token_service.kinds import protocol_for
from token_service.leases import Lease
from token_service.passthrough import PassThroughAccounts, check_passthrough, passthrough_tokens
from token_service.pool import BUSY_POLL_S, AccountPool, Credentials, ReleaseOutcome

__all__ = [
    "BUSY_POLL_S",
    "AccountPool",
    "Credentials",
    "Lease",
    "PassThroughAccounts",
    "ReleaseOutcome",
    "check_passthrough",
    "passthrough_tokens",
    "protocol_for",
]
