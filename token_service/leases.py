"""Atomic leases of accounts: one Lua script per operation, O(log N) in the number of accounts.

Redis layout (prefix `kimi:acct:{pool}:`, one Redis Cluster hash tag for the whole pool; see shared/keys.py):
    ready            zset of leasable accounts (active, or cooling whose time has come; not ephemeral, `exp`
                     not passed) scored by load * 1e13 + last_used_ms, where
                     load = floor(in_flight * 100 / the kind's cap): the head is the best account, and a head
                     at load 100 means every account is at its cap
    cooling          zset of cooling accounts scored by cooling_until_ms: the head is the soonest back
    lease:<id>       zset of one account's lease ids scored by expiry (ms): its in-flight count
    leases           zset of every lease as `<id>:<lease id>` scored by expiry: crashed workers' leases are
                     popped from its head by the next lease
    layout           the version of the zsets' layout, set when they were built from the hashes: a lease that
                     finds another one (older data) rebuilds them first

Every script that includes `PLACE_LUA` takes the pool's fixed keys as KEYS[1..5] (`ACCOUNT_POOL_KEYS`: index,
ready, cooling, leases, layout) and its own keys after them, and one argument: a JSON object of named
parameters (`prefix`, `now_ms`, `caps` — each kind's per-account cap — and the script's own). Per-account keys
are `prefix .. id` and `prefix .. 'lease:' .. id`. The lease script answers by name too: a flat name/value list.

Every write that can change where an account belongs (state transitions, saves, token rotation) calls the
`place()` Lua function below inside its own script, so the zsets follow the hashes. A process never leases nor
moves an account of a kind missing from its `caps` (one a newer process added): it walks past it. Accounts that turn out
not to be leasable when they reach the head of `ready` (an `exp` that passed, a vanished hash) are moved
where they belong on the spot. The token service's prober rebuilds the zsets from the hashes now and then,
which heals any drift (a changed cap, for one, scores an account anew at its next placement or rebuild).
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import msgspec
import redis.asyncio as aioredis
from redis.typing import KeyT

from shared.keys import (
    ACCOUNT_LEASES,
    ACCOUNT_POOL_KEYS,
    ACCOUNT_PREFIX,
    LINE_TICKET_TTL_S,
    account_key,
    lease_key,
)

#: Lua helpers shared by every script that may move an account between `ready` and `cooling`.
#: The score keeps loads above 1e13 ms (the year 2286), exact in a double up to load 899 (`MAX_LOAD`).
PLACE_LUA = """
local P = cjson.decode(ARGV[1])
local INDEX, READY, COOLING, LEASES, LAYOUT = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local PREFIX, NOW, CAPS = P.prefix, P.now_ms, P.caps
local SCALE = 1e13
local FULL = 100
local MAX_LOAD = 899
--: 2: `ready` scored by load relative to each kind's cap (1: by in-flight count).
local LAYOUT_VERSION = '2'

local function fmt(x) return string.format('%.0f', x) end
local function lease_zset(id) return PREFIX .. 'lease:' .. id end

-- The fields of an account's hash the scripts decide on, by name; nil when the hash is gone.
local function account(id)
  local v = redis.call('HMGET', PREFIX .. id, 'state', 'cooling_until_ms', 'last_used_ms', 'exp', 'ephemeral', 'kind')
  if v[1] == false then return nil end
  local kind = v[6] or ''
  return {
    state = v[1], cooling_until_ms = tonumber(v[2]) or 0, last_used_ms = tonumber(v[3]) or 0,
    exp = tonumber(v[4]), ephemeral = v[5] == '1', kind = kind, cap = CAPS[kind],
  }
end

local function expired(a) return a.exp ~= nil and a.exp * 1000 <= NOW end

-- Leasable now; an account of a kind this process does not know (no cap) never is.
local function usable(a)
  if a.cap == nil or expired(a) then return false end
  if a.state == 'active' then return true end
  return a.state == 'cooling' and a.cooling_until_ms <= NOW
end

local function load(id, cap)
  return math.min(MAX_LOAD, math.floor(redis.call('ZCARD', lease_zset(id)) * FULL / cap))
end

-- Puts one account where its hash says it belongs; returns its fields, or nil when the hash is gone. An
-- account of a kind this process does not know (a newer process's) is left where it is, for those that do.
local function place(id)
  local a = account(id)
  if a ~= nil and a.cap == nil then return a end
  if a == nil or a.ephemeral or expired(a) or (a.state ~= 'active' and a.state ~= 'cooling') then
    redis.call('ZREM', READY, id)
    redis.call('ZREM', COOLING, id)
  elseif a.state == 'cooling' and a.cooling_until_ms > NOW then
    redis.call('ZREM', READY, id)
    redis.call('ZADD', COOLING, fmt(a.cooling_until_ms), id)
  else
    redis.call('ZREM', COOLING, id)
    redis.call('ZADD', READY, fmt(load(id, a.cap) * SCALE + a.last_used_ms), id)
  end
  return a
end

-- After an account's in-flight count changed: its `ready` score follows (last used is kept).
local function rescore(id)
  local score = redis.call('ZSCORE', READY, id)
  if score then
    local cap = CAPS[redis.call('HGET', PREFIX .. id, 'kind')]
    if cap ~= nil then
      redis.call('ZADD', READY, fmt(load(id, cap) * SCALE + math.fmod(tonumber(score), SCALE)), id)
    end
  end
end

-- Rebuilds `ready`, `cooling` and `leases` from the index, the hashes and the per-account lease zsets.
local function rebuild()
  local indexed = {}
  for _, id in ipairs(redis.call('SMEMBERS', INDEX)) do
    indexed[id] = true
    local lk = lease_zset(id)
    redis.call('ZREMRANGEBYSCORE', lk, '-inf', NOW)
    local held = redis.call('ZRANGE', lk, 0, -1, 'WITHSCORES')
    for i = 1, #held, 2 do redis.call('ZADD', LEASES, held[i + 1], id .. ':' .. held[i]) end
    if place(id) == nil then redis.call('SREM', INDEX, id) end
  end
  for _, key in ipairs({READY, COOLING}) do
    for _, id in ipairs(redis.call('ZRANGE', key, 0, -1)) do
      if not indexed[id] then redis.call('ZREM', key, id) end
    end
  end
  redis.call('SET', LAYOUT, LAYOUT_VERSION)
end
"""

#: The waiting line's keys and `drop`, shared by the lease and leave scripts (layout: shared/keys.py).
LINE_LUA = """
-- The waiting line (FCFS) of a ticketed lease: `line:<kinds>` zset of tickets scored by arrival (ms),
-- `line:due` zset of every ticket's deadline (a waiting job renews it at each poll: a crashed worker's ticket
-- lapses), `line:owner` hash ticket -> '<kinds>|<client>', `line:waiting` hash client -> tickets waiting.
local DUE, OWNERS, WAITING = PREFIX .. 'line:due', PREFIX .. 'line:owner', PREFIX .. 'line:waiting'

local function drop(ticket)
  redis.call('ZREM', DUE, ticket)
  local owner = redis.call('HGET', OWNERS, ticket)
  if not owner then return end
  redis.call('HDEL', OWNERS, ticket)
  local sep = string.find(owner, '|', 1, true)
  local client = string.sub(owner, sep + 1)
  redis.call('ZREM', PREFIX .. 'line:' .. string.sub(owner, 1, sep - 1), ticket)
  if redis.call('HINCRBY', WAITING, client, -1) <= 0 then redis.call('HDEL', WAITING, client) end
end

"""

# P: account_id.
_PLACE = PLACE_LUA + "place(P.account_id)\nreturn 1\n"
_REBUILD = PLACE_LUA + "rebuild()\nreturn 1\n"

# P: ttl_ms, lease_id, exclude (ids), only (ids; absent: the whole pool), kinds (kind names; absent: every kind
# this process knows), fields (hash fields to answer).
# Ephemeral (pass-through) accounts are only leased when named in `only`. Accounts of a kind outside `kinds` are
# walked past like those of a kind this process does not know (left where they are, never leased).
# Answers a flat name/value list: status ok | busy | cooling | none, then account_id and the `fields` of the
# leased account (they save `AccountPool.credentials` a round trip on the first token's path), `busy` (how many
# candidates are at their cap) or `soonest_ms` (when the first cooling candidate is back).
_LEASE = (
    PLACE_LUA
    + LINE_LUA
    + """
--: At most this many expired leases / finished cooldowns are handled per call (amortized O(1)).
local BATCH = 256
local exclude = {}
for _, id in ipairs(P.exclude) do exclude[id] = true end
local nex = #P.exclude
local only = P.only
local wanted_kinds = nil
if P.kinds ~= nil then
  wanted_kinds = {}
  for _, kind in ipairs(P.kinds) do wanted_kinds[kind] = true end
end
-- Of a kind this lease may take (and that this process knows).
local function wanted(a) return a.cap ~= nil and (wanted_kinds == nil or wanted_kinds[a.kind] == true) end

if redis.call('GET', LAYOUT) ~= LAYOUT_VERSION then rebuild() end

-- Leases of crashed workers, soonest expired first.
for _, m in ipairs(redis.call('ZRANGEBYSCORE', LEASES, '-inf', NOW, 'LIMIT', 0, BATCH)) do
  local sep = string.find(m, ':', 1, true)
  local id = string.sub(m, 1, sep - 1)
  redis.call('ZREM', LEASES, m)
  redis.call('ZREM', lease_zset(id), string.sub(m, sep + 1))
  rescore(id)
end
-- Cooldowns that are over: back to `ready` (the hash says `cooling` until the pool marks them active).
for _, id in ipairs(redis.call('ZRANGEBYSCORE', COOLING, '-inf', NOW, 'LIMIT', 0, BATCH)) do
  place(id)
end

local best, best_a
local busy = 0
local soonest = nil

-- `only`: a small explicit set, each account checked directly (ephemeral ones included).
local function pick_only()
  local best_n, best_used
  for _, id in ipairs(only) do
    if not exclude[id] then
      local a = account(id)
      if a == nil then
        redis.call('SREM', INDEX, id)
      elseif not wanted(a) then
        -- another kind than this lease takes: not a candidate
      elseif usable(a) then
        local lk = lease_zset(id)
        for _, gone in ipairs(redis.call('ZRANGEBYSCORE', lk, '-inf', NOW)) do
          redis.call('ZREM', lk, gone)
          redis.call('ZREM', LEASES, id .. ':' .. gone)
        end
        local n = redis.call('ZCARD', lk)
        if n >= a.cap then
          busy = busy + 1
        elseif best == nil or n < best_n or (n == best_n and a.last_used_ms < best_used) then
          best, best_a, best_n, best_used = id, a, n, a.last_used_ms
        end
      elseif a.state == 'cooling' and a.cap ~= nil and not expired(a) then
        if soonest == nil or a.cooling_until_ms < soonest then soonest = a.cooling_until_ms end
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
  local a = account(id)
  if a ~= nil and not wanted(a) then return false end
  if a ~= nil and not a.ephemeral and usable(a) then
    if math.floor(score / SCALE) >= FULL then busy = 1 else best, best_a = id, a end
    return true
  end
  if place(id) == nil then redis.call('SREM', INDEX, id) end
  return 'moved'
end

local function check_cooling(id, score)
  local a = account(id)
  if a ~= nil and not wanted(a) then return false end
  if a ~= nil and a.state == 'cooling' and not a.ephemeral and not expired(a) then
    soonest = score
    return true
  end
  if place(id) == nil then redis.call('SREM', INDEX, id) end
  return 'moved'
end

local LINE = PREFIX .. 'line:' .. (P.line or '')

-- Takes a place in the line (kept across polls: ZADD NX by arrival); false when the client's cap is reached.
local function join()
  if redis.call('HEXISTS', OWNERS, P.ticket) == 1 then return true end
  if P.client ~= '' and tonumber(redis.call('HGET', WAITING, P.client) or '0') >= P.client_max then
    return false
  end
  redis.call('ZADD', LINE, 'NX', fmt(P.arrival_ms), P.ticket)
  redis.call('HSET', OWNERS, P.ticket, (P.line or '') .. '|' .. P.client)
  redis.call('HINCRBY', WAITING, P.client, 1)
  return true
end

-- A free account goes to a waiting job only when fewer jobs than free accounts are ahead of it in its line.
-- Answers a reply to return at once (the client's cap), else nil with `best` / `busy` as the line decides.
local function line_gate()
  for _, t in ipairs(redis.call('ZRANGEBYSCORE', DUE, '-inf', NOW, 'LIMIT', 0, BATCH)) do drop(t) end
  if best ~= nil and redis.call('ZCARD', LINE) > 0 and redis.call('ZSCORE', LINE, P.ticket) == false then
    if not join() then return {'status', 'crowded'} end
  end
  local rank = redis.call('ZRANK', LINE, P.ticket)
  if best ~= nil and rank then
    local free = redis.call('ZCOUNT', READY, '-inf', '(' .. fmt(FULL * SCALE))
    if rank >= free then best, busy = nil, 1 end
  end
  if best ~= nil or busy == 0 then
    drop(P.ticket)
    return nil
  end
  if not join() then return {'status', 'crowded'} end
  redis.call('ZADD', DUE, fmt(NOW + P.ticket_ttl_ms), P.ticket)
  return nil
end

if only ~= nil then
  pick_only()
else
  walk(READY, check_ready)
  if best == nil and busy == 0 then walk(COOLING, check_cooling) end
end

if only == nil and P.ticket ~= nil then
  local gate = line_gate()
  if gate ~= nil then return gate end
end

if best == nil then
  if busy > 0 then return {'status', 'busy', 'busy', tostring(busy)} end
  if soonest ~= nil then return {'status', 'cooling', 'soonest_ms', fmt(soonest)} end
  return {'status', 'none'}
end
local lk = lease_zset(best)
redis.call('ZADD', lk, fmt(NOW + P.ttl_ms), P.lease_id)
redis.call('ZADD', LEASES, fmt(NOW + P.ttl_ms), best .. ':' .. P.lease_id)
redis.call('HSET', PREFIX .. best, 'last_used_ms', fmt(NOW))
redis.call('HINCRBY', PREFIX .. best, 'n_leases', 1)
if redis.call('ZSCORE', READY, best) then
  redis.call('ZADD', READY, fmt(load(best, best_a.cap) * SCALE + NOW), best)
end
local reply = {'status', 'ok', 'account_id', best}
local values = redis.call('HMGET', PREFIX .. best, unpack(P.fields))
for i, name in ipairs(P.fields) do
  reply[#reply + 1] = name
  reply[#reply + 1] = values[i] or ''
end
return reply
"""
)

# P: ticket. A job that stops waiting (its wait is over, or it was cancelled) leaves the line.
_LEAVE = PLACE_LUA + LINE_LUA + "drop(P.ticket)\nreturn 1\n"

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
# P: account_id, lease_id, counter (hash field), note ('ok' | 'error' | ''), detail.
# The counters and notes go only to an account that still exists (an ephemeral one may have expired).
_RELEASE = (
    PLACE_LUA
    + """
redis.call('ZREM', KEYS[6], P.lease_id)
redis.call('ZREM', LEASES, P.account_id .. ':' .. P.lease_id)
rescore(P.account_id)
if redis.call('EXISTS', KEYS[7]) == 1 then
  redis.call('HINCRBY', KEYS[7], P.counter, 1)
  if P.note == 'ok' then
    redis.call('HSET', KEYS[7], 'last_ok_ms', fmt(NOW))
  elseif P.note == 'error' then
    redis.call('HSET', KEYS[7], 'last_error', P.detail, 'last_error_ms', fmt(NOW))
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
_params_encoder = msgspec.json.Encoder()


class Lease(msgspec.Struct, frozen=True):
    """One slot on one account; give it back with `AccountPool.release`."""

    account_id: str
    lease_id: str
    #: The account's kind (a name of token_service/kinds.py's registry).
    kind: str
    ephemeral: bool = False


class Ticket(msgspec.Struct, frozen=True):
    """A job's place in the pool's waiting line while every account it may use is at its cap.

    The line is first-come-first-served by `arrival_ms` (one line per set of kinds, `line`); a client
    (`client`, "" for an open gateway's callers, who are not capped) holds at most `client_max` places.
    """

    job_id: str
    arrival_ms: int
    line: str
    client: str = ""
    client_max: int = 0


class Picked(msgspec.Struct, frozen=True):
    """What the lease script answered: a lease, or why there is none (`crowded`: the client's places in the
    waiting line are all taken)."""

    status: Literal["ok", "busy", "cooling", "none", "crowded"]
    lease: Lease | None = None
    previous_state: str = ""
    soonest_cooling_ms: int = 0
    #: The leased account's hash fields asked for (still sealed), by name, "" when absent.
    fields: Mapping[str, str] = msgspec.field(default_factory=dict)


class LeaseScripts:
    """The lease, extend and release primitives on Redis, and the placement of accounts in the zsets.

    `caps` is each kind's per-account cap (`kinds.max_in_flight`); a kind missing from it is never leased.
    """

    def __init__(self, redis: aioredis.Redis, caps: Mapping[str, int]) -> None:
        self.redis = redis
        self.caps = {kind: max(1, cap) for kind, cap in caps.items()}
        self._lease = redis.register_script(_LEASE)
        self._extend = redis.register_script(_EXTEND)
        self._release = redis.register_script(_RELEASE)
        self._place = redis.register_script(_PLACE)
        self._rebuild = redis.register_script(_REBUILD)
        self._leave = redis.register_script(_LEAVE)

    def params(self, now_ms: int, **named: Any) -> bytes:
        """The one argument of a `PLACE_LUA` script: the pool's parameters and the script's own, by name."""
        return _params_encoder.encode(
            {"prefix": ACCOUNT_PREFIX, "now_ms": now_ms, "caps": self.caps, **named}
        )

    async def take(
        self,
        *,
        now_ms: int,
        ttl_ms: int,
        exclude: set[str],
        only: set[str] | None,
        fields: Sequence[str],
        kinds: frozenset[str] | None = None,
        ticket: Ticket | None = None,
    ) -> Picked:
        lease_id = secrets.token_hex(8)
        named: dict[str, Any] = {
            "ttl_ms": ttl_ms,
            "lease_id": lease_id,
            "exclude": sorted(exclude),
            "fields": list(fields),
        }
        if only is not None:
            named["only"] = sorted(only)
        if kinds is not None:
            named["kinds"] = sorted(kinds)
        if ticket is not None:
            named.update(
                ticket=ticket.job_id,
                arrival_ms=ticket.arrival_ms,
                line=ticket.line,
                client=ticket.client,
                client_max=ticket.client_max,
                ticket_ttl_ms=LINE_TICKET_TTL_S * 1000,
            )
        raw = await self._lease(keys=POOL_KEYS, args=[self.params(now_ms, **named)])
        reply = reply_by_name(raw)
        status = reply["status"]
        if status == "ok":
            answered = {name: reply.get(name, "") for name in fields}
            lease = Lease(
                account_id=reply["account_id"],
                lease_id=lease_id,
                kind=answered.get("kind", ""),
                ephemeral=answered.get("ephemeral") == "1",
            )
            return Picked(status="ok", lease=lease, previous_state=answered.get("state", ""), fields=answered)
        if status == "cooling":
            return Picked(status="cooling", soonest_cooling_ms=int(reply["soonest_ms"]))
        return Picked(status="busy" if status == "busy" else "crowded" if status == "crowded" else "none")

    async def leave(self, ticket: Ticket, now_ms: int) -> None:
        """Take a job's ticket out of the waiting line (a no-op when it holds none)."""
        await self._leave(keys=POOL_KEYS, args=[self.params(now_ms, ticket=ticket.job_id)])

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
        params = self.params(
            now_ms,
            account_id=lease.account_id,
            lease_id=lease.lease_id,
            counter=f"n_{counter}",
            note=note,
            detail=detail[:DETAIL_MAX_CHARS],
        )
        await self._release(
            keys=[*POOL_KEYS, lease_key(lease.account_id), account_key(lease.account_id)], args=[params]
        )

    async def place(self, account_id: str, now_ms: int) -> None:
        """Put an account in `ready`, `cooling` or neither, as its hash says."""
        await self._place(keys=place_keys(account_id), args=[self.params(now_ms, account_id=account_id)])

    async def rebuild(self, now_ms: int) -> None:
        """Rebuild the zsets from the hashes (O(accounts), for the background prober)."""
        await self._rebuild(keys=POOL_KEYS, args=[self.params(now_ms)])

    async def in_flight(self, account_id: str, now_ms: int) -> int:
        return int(await self.redis.zcount(lease_key(account_id), now_ms + 1, "+inf"))


def reply_by_name(reply: list[bytes]) -> dict[str, str]:
    """A script's flat name/value list as a dict."""
    text = [part.decode() for part in reply]
    return dict(zip(text[::2], text[1::2], strict=True))


def _member(lease: Lease) -> str:
    return f"{lease.account_id}:{lease.lease_id}"
