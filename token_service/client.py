"""What the rest of the system may know of the token service: the only module `gateway/` and
`upstream_worker/` import from `token_service`. Its store, prober, refresher, admin and metrics stay inside.

Workers (upstream_worker/resources.py, runner.py):
    pool = AccountPool(redis, settings.pool, session, settings.common.kimi_base_url)
    lease = await pool.lease(exclude=…, only=…, kinds=…, wait_s=…)   # Lease; RateLimited | ServiceUnavailable
    creds = await pool.credentials(lease)                     # Credentials; refreshes single-flight
    await pool.extend(lease)                                  # bool
    await pool.release(lease, outcome, retry_after_s=None, detail=None)
    protocol_for(lease.kind, spec)                            # the driver that serves this model
    kinds_serving(spec)                                       # {"kimi_web": kinds, "api_key": kinds} for a model
    upstream_of(lease.kind)                                   # "kimi_web" | "api_key": the kind's public name
The gateway (gateway/auth.py, gateway/admin_proxy.py):
    passthrough_tokens(credential)                            # `Bearer T1,T2` → the tokens, or None
    check_passthrough_count(tokens, max_tokens)               # BadRequest: more than PASSTHROUGH_MAX_TOKENS
    check_passthrough(tokens)                                 # routes that need no job: checked, not stored
    await PassThroughAccounts(redis, settings.pool).add(tokens)   # ephemeral accounts → their ids
    ADMIN_ROUTES, ADMIN_MAX_BODY_BYTES                        # what it forwards to the token service
    is_local_caller(request), admin_key_offered(request, key)  # the admin rule, for the gateway's /metrics
    Account, ExtractBody, SaveBody, CheckBody, AddBody, KeyCreateBody  # admin wire Structs, for /openapi.json
"""

from __future__ import annotations

from shared.settings import TokenServiceSettings
from token_service.admin import ADMIN_ROUTES as _ADMIN_ROUTES
from token_service.admin import (
    AddBody,
    CheckBody,
    ExtractBody,
    KeyCreateBody,
    SaveBody,
    admin_key_offered,
    is_local_caller,
)
from token_service.kinds import UPSTREAMS, Upstream, kinds_serving, protocol_for, upstream_of
from token_service.leases import Lease
from token_service.passthrough import PassThroughAccounts, check_passthrough, passthrough_tokens
from token_service.passthrough import check_count as check_passthrough_count
from token_service.pool import BUSY_POLL_S, AccountPool, Credentials, ReleaseOutcome, Ticket
from token_service.store import Account

__all__ = [
    "ADMIN_MAX_BODY_BYTES",
    "ADMIN_ROUTES",
    "BUSY_POLL_S",
    "UPSTREAMS",
    "Account",
    "AccountPool",
    "AddBody",
    "CheckBody",
    "Credentials",
    "ExtractBody",
    "KeyCreateBody",
    "Lease",
    "PassThroughAccounts",
    "ReleaseOutcome",
    "SaveBody",
    "Ticket",
    "Upstream",
    "admin_key_offered",
    "check_passthrough",
    "check_passthrough_count",
    "is_local_caller",
    "kinds_serving",
    "passthrough_tokens",
    "protocol_for",
    "upstream_of",
]

#: The token service's HTTP routes (method, path template), which the gateway forwards to it unchanged.
ADMIN_ROUTES: tuple[tuple[str, str], ...] = tuple((route.method, route.path) for route in _ADMIN_ROUTES)
#: The largest admin body the token service reads (its own settings' cap), so the gateway buffers no more.
ADMIN_MAX_BODY_BYTES: int = TokenServiceSettings().max_body_bytes
