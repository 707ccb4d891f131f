"""Atomic leases of accounts: one Lua script picks the best account and takes a slot in one step.

Each account has a zset `kimi:acct:lease:<id>` of lease ids scored by their expiry (unix ms). The script
drops expired members first, so a crashed worker's lease frees itself after `lease_ttl_s`; ZCARD is then
the in-flight count, compared with the per-account cap. Best = least in flight, then least recently used.
"""

from __future__ import annotations

import secrets
from typing import Literal

import msgspec
import redis.asyncio as aioredis
from redis.typing import EncodableT

from shared.keys import ACCOUNT_INDEX, ACCOUNT_PREFIX, lease_key
from token_service.jwt_info import AccountKind

# KEYS[1] index. ARGV: now_ms, ttl_ms, cap, lease_id, prefix, n_exclude, exclude ids…, only ids…
# Ephemeral (pass-through) accounts are only leased when named in `only`.
# Replies: {'ok', id, kind, ephemeral, state} | {'busy', n} | {'cooling', soonest_ms} | {'none', ''}
_LEASE = """
local now = tonumber(ARGV[1])
local ttl = tonumber(ARGV[2])
local cap = tonumber(ARGV[3])
local prefix = ARGV[5]
local nex = tonumber(ARGV[6])
local exclude = {}
for i = 1, nex do exclude[ARGV[6 + i]] = true end
local only = nil
if #ARGV > 6 + nex then
  only = {}
  for i = 7 + nex, #ARGV do only[ARGV[i]] = true end
end
local best, best_n, best_used, best_f
local soonest = nil
local busy = 0
for _, id in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  if not exclude[id] and (only == nil or only[id]) then
    local f = redis.call('HMGET', prefix .. id, 'state', 'cooling_until_ms', 'last_used_ms', 'exp', 'kind',
                         'ephemeral')
    if f[1] == false then
      redis.call('SREM', KEYS[1], id)
    elseif only ~= nil or f[6] ~= '1' then
      local until_ms = tonumber(f[2]) or 0
      local exp = tonumber(f[4])
      local usable = false
      if exp ~= nil and exp * 1000 <= now then
        usable = false
      elseif f[1] == 'active' then
        usable = true
      elseif f[1] == 'cooling' then
        if until_ms <= now then
          usable = true
        elseif soonest == nil or until_ms < soonest then
          soonest = until_ms
        end
      end
      if usable then
        local lk = prefix .. 'lease:' .. id
        redis.call('ZREMRANGEBYSCORE', lk, '-inf', now)
        local n = redis.call('ZCARD', lk)
        local used = tonumber(f[3]) or 0
        if n >= cap then
          busy = busy + 1
        elseif best == nil or n < best_n or (n == best_n and used < best_used) then
          best, best_n, best_used, best_f = id, n, used, f
        end
      end
    end
  end
end
if best == nil then
  if busy > 0 then return {'busy', tostring(busy)} end
  if soonest ~= nil then return {'cooling', tostring(soonest)} end
  return {'none', ''}
end
local lk = prefix .. 'lease:' .. best
redis.call('ZADD', lk, now + ttl, ARGV[4])
if redis.call('PTTL', lk) < ttl then redis.call('PEXPIRE', lk, ttl) end
redis.call('HSET', prefix .. best, 'last_used_ms', now)
redis.call('HINCRBY', prefix .. best, 'n_leases', 1)
return {'ok', best, best_f[5], best_f[6] or '0', best_f[1]}
"""

# KEYS[1] lease zset. ARGV: lease_id, new expiry ms, ttl ms. 0 when the lease had already expired.
_EXTEND = """
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) then return 0 end
redis.call('ZADD', KEYS[1], 'XX', ARGV[2], ARGV[1])
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[3]) then redis.call('PEXPIRE', KEYS[1], ARGV[3]) end
return 1
"""


class Lease(msgspec.Struct, frozen=True):
    """One slot on one account; give it back with `AccountPool.release`."""

    account_id: str
    lease_id: str
    kind: AccountKind
    ephemeral: bool = False


class Picked(msgspec.Struct, frozen=True):
    """What the lease script answered: a lease, or why there is none."""

    status: Literal["ok", "busy", "cooling", "none"]
    lease: Lease | None = None
    previous_state: str = ""
    soonest_cooling_ms: int = 0


class LeaseScripts:
    """The lease, extend and release primitives on Redis."""

    def __init__(self, redis: aioredis.Redis) -> None:
        self.redis = redis
        self._lease = redis.register_script(_LEASE)
        self._extend = redis.register_script(_EXTEND)

    async def take(
        self, *, now_ms: int, ttl_ms: int, cap: int, exclude: set[str], only: set[str] | None
    ) -> Picked:
        lease_id = secrets.token_hex(8)
        args: list[EncodableT] = [
            now_ms,
            ttl_ms,
            cap,
            lease_id,
            ACCOUNT_PREFIX,
            len(exclude),
            *sorted(exclude),
        ]
        if only is not None:
            # An empty `only` must match nothing, so it gets a member no account id can equal.
            args += sorted(only) or ["-"]
        reply = [part.decode() for part in await self._lease(keys=[ACCOUNT_INDEX], args=args)]
        if reply[0] == "ok":
            kind: AccountKind = "refresh_token" if reply[2] == "refresh_token" else "kimi_auth"
            lease = Lease(account_id=reply[1], lease_id=lease_id, kind=kind, ephemeral=reply[3] == "1")
            return Picked(status="ok", lease=lease, previous_state=reply[4])
        if reply[0] == "cooling":
            return Picked(status="cooling", soonest_cooling_ms=int(reply[1]))
        return Picked(status="busy" if reply[0] == "busy" else "none")

    async def extend(self, lease: Lease, *, now_ms: int, ttl_ms: int) -> bool:
        kept = await self._extend(
            keys=[lease_key(lease.account_id)], args=[lease.lease_id, now_ms + ttl_ms, ttl_ms]
        )
        return bool(kept)

    async def give_back(self, lease: Lease) -> None:
        await self.redis.zrem(lease_key(lease.account_id), lease.lease_id)

    async def in_flight(self, account_id: str, now_ms: int) -> int:
        return int(await self.redis.zcount(lease_key(account_id), now_ms + 1, "+inf"))
