"""Atomic leases of accounts: one Lua script per operation, O(log N) in the number of accounts.

Redis layout (prefix `kimi:acct:{pool}:`, one Redis Cluster hash tag for the whole pool; see shared/keys.py):
    ready            zset of leasable accounts (active, or cooling whose time has come; not ephemeral, `exp`
                     not passed) scored by in_flight * 1e13 + last_used_ms: the head is the best account
    cooling          zset of cooling accounts scored by cooling_until_ms: the head is the soonest back
    lease:<id>       zset of one account's lease ids scored by expiry (ms): its in-flight count
    leases           zset of every lease as `<id>:<lease id>` scored by expiry: crashed workers' leases are
                     popped from its head by the next lease
    layout           set once the zsets above have been built from the hashes (older data migrates lazily)

Every script that includes `PLACE_LUA` takes the pool's fixed keys as KEYS[1..5] (`ACCOUNT_POOL_KEYS`: index,
ready, cooling, leases, layout) and its own keys after them; per-account keys are `prefix .. id` and
`prefix .. 'lease:' .. id`, with the prefix in ARGV.

Every write that can change where an account belongs (state transitions, saves, token rotation) calls the
`place()` Lua function below inside its own script, so the zsets follow the hashes. Accounts that turn out
not to be leasable when they reach the head of `ready` (an `exp` that passed, a vanished hash) are moved
where they belong on the spot. The token service's prober rebuilds the zsets from the hashes now and then,
which heals any drift.
"""

from __future__ import annotations

import secrets
from typing import Literal

import msgspec
import redis.asyncio as aioredis
from redis.typing import EncodableT, KeyT

from shared.keys import ACCOUNT_LEASES, ACCOUNT_POOL_KEYS, ACCOUNT_PREFIX, account_key, lease_key
from token_service.jwt_info import AccountKind

#: Lua helpers shared by every script that may move an account between `ready` and `cooling`.
#: The score keeps in-flight counts above 1e13 ms (the year 2286), exact in a double up to 899 in flight.
PLACE_LUA = """
local INDEX, READY, COOLING, LEASES, LAYOUT = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local SCALE = 1e13
local FIELDS = {'state', 'cooling_until_ms', 'last_used_ms', 'exp', 'ephemeral', 'kind'}

local function fmt(x) return string.format('%.0f', x) end

local function usable(f, now)
  local exp = tonumber(f[4])
  if exp ~= nil and exp * 1000 <= now then return false end
  if f[1] == 'active' then return true end
  return f[1] == 'cooling' and (tonumber(f[2]) or 0) <= now
end

-- Puts one account where its hash says it belongs; returns its FIELDS, or false when the hash is gone.
local function place(prefix, id, now)
  local f = redis.call('HMGET', prefix .. id, unpack(FIELDS))
  if f[1] == false then
    redis.call('ZREM', READY, id)
    redis.call('ZREM', COOLING, id)
    return false
  end
  local exp = tonumber(f[4])
  local until_ms = tonumber(f[2]) or 0
  if f[5] == '1' or (exp ~= nil and exp * 1000 <= now) or (f[1] ~= 'active' and f[1] ~= 'cooling') then
    redis.call('ZREM', READY, id)
    redis.call('ZREM', COOLING, id)
  elseif f[1] == 'cooling' and until_ms > now then
    redis.call('ZREM', READY, id)
    redis.call('ZADD', COOLING, fmt(until_ms), id)
  else
    redis.call('ZREM', COOLING, id)
    local n = redis.call('ZCARD', prefix .. 'lease:' .. id)
    redis.call('ZADD', READY, fmt(n * SCALE + (tonumber(f[3]) or 0)), id)
  end
  return f
end

-- After an account's in-flight count changed: its `ready` score follows (last used is kept).
local function rescore(prefix, id)
  local score = redis.call('ZSCORE', READY, id)
  if score then
    local n = redis.call('ZCARD', prefix .. 'lease:' .. id)
    redis.call('ZADD', READY, fmt(n * SCALE + math.fmod(tonumber(score), SCALE)), id)
  end
end

-- Rebuilds `ready`, `cooling` and `leases` from the index, the hashes and the per-account lease zsets.
local function rebuild(prefix, now)
  redis.call('DEL', READY, COOLING)
  for _, id in ipairs(redis.call('SMEMBERS', INDEX)) do
    local lk = prefix .. 'lease:' .. id
    redis.call('ZREMRANGEBYSCORE', lk, '-inf', now)
    local held = redis.call('ZRANGE', lk, 0, -1, 'WITHSCORES')
    for i = 1, #held, 2 do redis.call('ZADD', LEASES, held[i + 1], id .. ':' .. held[i]) end
    if not place(prefix, id, now) then redis.call('SREM', INDEX, id) end
  end
  redis.call('SET', LAYOUT, '1')
end
"""

# KEYS: the pool's (ACCOUNT_POOL_KEYS), account hash, lease zset. ARGV: prefix, account id, now_ms
_PLACE = PLACE_LUA + "place(ARGV[1], ARGV[2], tonumber(ARGV[3]))\nreturn 1\n"
# KEYS: the pool's (ACCOUNT_POOL_KEYS). ARGV: prefix, now_ms
_REBUILD = PLACE_LUA + "rebuild(ARGV[1], tonumber(ARGV[2]))\nreturn 1\n"

# KEYS: the pool's (ACCOUNT_POOL_KEYS). ARGV: now_ms, ttl_ms, cap, lease_id, prefix, n_exclude, exclude ids…,
# only ids…
# Ephemeral (pass-through) accounts are only leased when named in `only`.
# Replies: {'ok', id, kind, ephemeral, state, <IN_USE_FIELDS but kind>} | {'busy', n} | {'cooling', soonest_ms}
# | {'none', ''}. The account's fields save `AccountPool.credentials` a round trip on the first token's path.
_LEASE = (
    PLACE_LUA
    + """
--: At most this many expired leases / finished cooldowns are handled per call (amortized O(1)).
local BATCH = 256
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
  for i = 7 + nex, #ARGV do only[#only + 1] = ARGV[i] end
end

if redis.call('EXISTS', LAYOUT) == 0 then rebuild(prefix, now) end

-- Leases of crashed workers, soonest expired first.
for _, m in ipairs(redis.call('ZRANGEBYSCORE', LEASES, '-inf', now, 'LIMIT', 0, BATCH)) do
  local sep = string.find(m, ':', 1, true)
  local id = string.sub(m, 1, sep - 1)
  redis.call('ZREM', LEASES, m)
  redis.call('ZREM', prefix .. 'lease:' .. id, string.sub(m, sep + 1))
  rescore(prefix, id)
end
-- Cooldowns that are over: back to `ready` (the hash says `cooling` until the pool marks them active).
for _, id in ipairs(redis.call('ZRANGEBYSCORE', COOLING, '-inf', now, 'LIMIT', 0, BATCH)) do
  place(prefix, id, now)
end

local best, best_f
local busy = 0
local soonest = nil

-- `only`: a small explicit set, each account checked directly (ephemeral ones included).
local function pick_only()
  local best_n, best_used
  for _, id in ipairs(only) do
    if not exclude[id] then
      local f = redis.call('HMGET', prefix .. id, unpack(FIELDS))
      if f[1] == false then
        redis.call('SREM', INDEX, id)
      elseif usable(f, now) then
        local lk = prefix .. 'lease:' .. id
        for _, gone in ipairs(redis.call('ZRANGEBYSCORE', lk, '-inf', now)) do
          redis.call('ZREM', lk, gone)
          redis.call('ZREM', LEASES, id .. ':' .. gone)
        end
        local n = redis.call('ZCARD', lk)
        local used = tonumber(f[3]) or 0
        if n >= cap then
          busy = busy + 1
        elseif best == nil or n < best_n or (n == best_n and used < best_used) then
          best, best_f, best_n, best_used = id, f, n, used
        end
      elseif f[1] == 'cooling' and (tonumber(f[4]) == nil or tonumber(f[4]) * 1000 > now) then
        local until_ms = tonumber(f[2]) or 0
        if soonest == nil or until_ms < soonest then soonest = until_ms end
      end
    end
  end
end

-- Walks the head of a zset, skipping excluded ids; `check(id, score)` answers true to stop, false to go
-- on, or 'moved' when it took the id out of this zset.
local function walk(key, check)
  local start = 0
  while true do
    local head = redis.call('ZRANGE', key, start, start + nex + 7, 'WITHSCORES')
    if #head == 0 then return end
    local moved = 0
    for i = 1, #head, 2 do
      if not exclude[head[i]] then
        local verdict = check(head[i], tonumber(head[i + 1]))
        if verdict == true then return end
        if verdict == 'moved' then moved = moved + 1 end
      end
    end
    start = start + #head / 2 - moved
  end
end

local function check_ready(id, score)
  local f = redis.call('HMGET', prefix .. id, unpack(FIELDS))
  if f[1] ~= false and f[5] ~= '1' and usable(f, now) then
    if math.floor(score / SCALE) >= cap then busy = 1 else best, best_f = id, f end
    return true
  end
  if not place(prefix, id, now) then redis.call('SREM', INDEX, id) end
  return 'moved'
end

local function check_cooling(id, score)
  local f = redis.call('HMGET', prefix .. id, unpack(FIELDS))
  local exp = tonumber(f[4])
  if f[1] == 'cooling' and f[5] ~= '1' and (exp == nil or exp * 1000 > now) then
    soonest = score
    return true
  end
  if not place(prefix, id, now) then redis.call('SREM', INDEX, id) end
  return 'moved'
end

if only ~= nil then
  pick_only()
else
  walk(READY, check_ready)
  if best == nil and busy == 0 then walk(COOLING, check_cooling) end
end

if best == nil then
  if busy > 0 then return {'busy', tostring(busy)} end
  if soonest ~= nil then return {'cooling', fmt(soonest)} end
  return {'none', ''}
end
local lk = prefix .. 'lease:' .. best
redis.call('ZADD', lk, now + ttl, ARGV[4])
redis.call('ZADD', LEASES, now + ttl, best .. ':' .. ARGV[4])
redis.call('HSET', prefix .. best, 'last_used_ms', now)
redis.call('HINCRBY', prefix .. best, 'n_leases', 1)
if redis.call('ZSCORE', READY, best) then
  redis.call('ZADD', READY, fmt(redis.call('ZCARD', lk) * SCALE + now), best)
end
local reply = {'ok', best, best_f[6] or '', best_f[5] or '0', best_f[1]}
local more = redis.call('HMGET', prefix .. best, 'sub', 'device_id', 'session_id', 'secret', 'access', 'access_exp')
for i = 1, 6 do reply[5 + i] = more[i] or '' end
return reply
"""
)

# KEYS[1] lease zset, KEYS[2] every lease. ARGV: lease_id, member, now ms, new expiry ms.
# 0 when the lease had already expired (its slot may belong to another worker by now).
_EXTEND = """
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not score or tonumber(score) <= tonumber(ARGV[3]) then return 0 end
redis.call('ZADD', KEYS[1], 'XX', ARGV[4], ARGV[1])
redis.call('ZADD', KEYS[2], ARGV[4], ARGV[2])
return 1
"""

# KEYS: the pool's (ACCOUNT_POOL_KEYS), then KEYS[6] lease zset, KEYS[7] account hash.
# ARGV: prefix, account id, lease_id, counter field, now ms, note ('ok' | 'error' | ''), error detail.
# The counters and notes go only to an account that still exists (an ephemeral one may have expired).
_RELEASE = (
    PLACE_LUA
    + """
redis.call('ZREM', KEYS[6], ARGV[3])
redis.call('ZREM', LEASES, ARGV[2] .. ':' .. ARGV[3])
rescore(ARGV[1], ARGV[2])
if redis.call('EXISTS', KEYS[7]) == 1 then
  redis.call('HINCRBY', KEYS[7], ARGV[4], 1)
  if ARGV[6] == 'ok' then
    redis.call('HSET', KEYS[7], 'last_ok_ms', ARGV[5])
  elseif ARGV[6] == 'error' then
    redis.call('HSET', KEYS[7], 'last_error', ARGV[7], 'last_error_ms', ARGV[5])
  end
end
return 1
"""
)

POOL_KEYS: list[KeyT] = list(ACCOUNT_POOL_KEYS)


def place_keys(account_id: str) -> list[KeyT]:
    """KEYS of a script that places one account: the pool's, then the account's hash and lease zset."""
    return [*POOL_KEYS, account_key(account_id), lease_key(account_id)]


#: An error detail kept on the account (operator-facing text from our own code, never a token).
DETAIL_MAX_CHARS = 200

Note = Literal["ok", "error", ""]


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
    #: The leased account's `IN_USE_FIELDS`, still sealed, for `AccountStore.in_use`.
    fields: tuple[str, ...] = ()


class LeaseScripts:
    """The lease, extend and release primitives on Redis, and the placement of accounts in the zsets."""

    def __init__(self, redis: aioredis.Redis) -> None:
        self.redis = redis
        self._lease = redis.register_script(_LEASE)
        self._extend = redis.register_script(_EXTEND)
        self._release = redis.register_script(_RELEASE)
        self._place = redis.register_script(_PLACE)
        self._rebuild = redis.register_script(_REBUILD)

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
        reply = [part.decode() for part in await self._lease(keys=POOL_KEYS, args=args)]
        if reply[0] == "ok":
            kind: AccountKind = "refresh_token" if reply[2] == "refresh_token" else "kimi_auth"
            lease = Lease(account_id=reply[1], lease_id=lease_id, kind=kind, ephemeral=reply[3] == "1")
            return Picked(status="ok", lease=lease, previous_state=reply[4], fields=(reply[2], *reply[5:11]))
        if reply[0] == "cooling":
            return Picked(status="cooling", soonest_cooling_ms=int(reply[1]))
        return Picked(status="busy" if reply[0] == "busy" else "none")

    async def extend(self, lease: Lease, *, now_ms: int, ttl_ms: int) -> bool:
        kept = await self._extend(
            keys=[lease_key(lease.account_id), ACCOUNT_LEASES],
            args=[lease.lease_id, _member(lease), now_ms, now_ms + ttl_ms],
        )
        return bool(kept)

    async def give_back(
        self, lease: Lease, *, now_ms: int, counter: str, note: Note = "", detail: str = ""
    ) -> None:
        """Free the slot and count the outcome on the account, in one round trip."""
        await self._release(
            keys=[*POOL_KEYS, lease_key(lease.account_id), account_key(lease.account_id)],
            args=[
                ACCOUNT_PREFIX,
                lease.account_id,
                lease.lease_id,
                f"n_{counter}",
                now_ms,
                note,
                detail[:DETAIL_MAX_CHARS],
            ],
        )

    async def place(self, account_id: str, now_ms: int) -> None:
        """Put an account in `ready`, `cooling` or neither, as its hash says."""
        await self._place(keys=place_keys(account_id), args=[ACCOUNT_PREFIX, account_id, now_ms])

    async def rebuild(self, now_ms: int) -> None:
        """Rebuild the zsets from the hashes (O(accounts), for the background prober)."""
        await self._rebuild(keys=POOL_KEYS, args=[ACCOUNT_PREFIX, now_ms])

    async def in_flight(self, account_id: str, now_ms: int) -> int:
        return int(await self.redis.zcount(lease_key(account_id), now_ms + 1, "+inf"))


def _member(lease: Lease) -> str:
    return f"{lease.account_id}:{lease.lease_id}"
