"""Every Redis key name, TTL and block time of the system, with the unit in the name.

Layout (../shared/DESIGN.md §4):
    kimi:jobs                      stream of unfinished jobs, consumer group `workers`: a worker deletes
                                   the entry when it acks it; the gateway refuses new jobs past
                                   JOBS_BACKLOG_MAX entries (gateway/jobs.py), it never trims
    kimi:jobs:dead                 dead-letter stream (jobs delivered MAX_DELIVERIES times)
    kimi:reply:{<job id>}          per-job reply stream of canonical events (msgpack), with a TTL
    kimi:cancel:{<job id>}         set by the gateway when its client disconnects
    kimi:acct:{pool}:<id>          hash: one account (kind, encrypted secret, exp, state, counters …)
    kimi:acct:{pool}:index         set of every account id
    kimi:acct:{pool}:ready         zset of leasable accounts (active, or cooling whose time has come; not
                                   ephemeral) scored by load * 1e13 + last_used_ms, load = in_flight * 100 /
                                   the kind's cap: the head is the best (token_service/leases.py)
    kimi:acct:{pool}:cooling       zset of cooling accounts scored by cooling_until_ms: the head is the soonest
    kimi:acct:{pool}:lease:<id>    zset of one account's lease ids scored by their expiry (ms): in-flight count
    kimi:acct:{pool}:leases        zset of every lease as `<id>:<lease id>` scored by expiry (ms): the lease
                                   script pops expired ones (crashed workers) from its head
    kimi:acct:{pool}:layout        the layout version of ready / cooling / leases, set when they were built
    kimi:acct:{pool}:lock:<id>     single-flight refresh lock
    kimi:acct:{pool}:line:<kinds>  zset: the waiting line of jobs that may use these kinds (comma-joined),
                                   tickets (job ids) scored by arrival (ms): first come, first served
    kimi:acct:{pool}:line:due      zset of every ticket's deadline (ms), renewed at each poll of its job; the
                                   lease script drops lapsed ones (crashed workers) from its head
    kimi:acct:{pool}:line:owner    hash: ticket → `<kinds>|<client id>`
    kimi:acct:{pool}:line:waiting  hash: client id → how many of its tickets wait (capped per client)
    kimi:conv:<conversation id>    hash: which account and upstream ids a kept conversation belongs to
    kimi:workers                   hash: worker name → last heartbeat (unix ms)
    kimi:att:{<job id>}            hash: sha256 hex → the bytes of one attachment of that job (gateway writes,
                                   worker reads and deletes when the job ends; TTL as a backstop)
    kimi:resp:<response id>        JSON: a stored Responses API response, owner, input, history, the Kimi
                                   conversation it ran in; TTL
    kimi:resp:chat:<conversation>  the response id whose turn is that kept Kimi chat's latest (or
                                   `pending:<request id>` while a continuation runs): only it continues natively
    kimi:chats:sweep               zset of the kept Kimi chats of stored responses (conversation ids) scored by
                                   when (unix ms) the chat's latest stored response lapses, plus a request's
                                   timeout: the workers' sweeper deletes a due chat from its Kimi account
    kimi:upload:{<lane>:<acct>}:<sha256>
                                   the Kimi file id (JSON) of bytes already uploaded for that account on that
                                   lane (`rest` | `connect`): one upload per file per account, with a TTL

Hash tags (`{…}`) keep the keys that meet in one script or transaction in one Redis Cluster slot: the job and
reply keys of one job share `{<job id>}`; every account-pool key shares `{pool}`, because a lease script walks
the pool's zsets and touches whichever account it picks (a lease is O(log accounts), never a walk over every
account; see token_service/leases.py). The pool's fixed keys reach the scripts as KEYS (`ACCOUNT_POOL_KEYS`);
per-account keys are built in Lua from `ACCOUNT_PREFIX`, which lands them in the same slot.
Accounts stored by older versions under the untagged `kimi:acct:<id>` names are moved once by
token_service/migrate.py (`LEGACY_ACCOUNT_PREFIX`).
"""

from __future__ import annotations

JOBS_STREAM = "kimi:jobs"
JOBS_GROUP = "workers"
DEAD_LETTER_STREAM = "kimi:jobs:dead"
WORKERS_HASH = "kimi:workers"

#: Every account-pool key starts with this; `{pool}` is the Redis Cluster hash tag they all share.
ACCOUNT_PREFIX = "kimi:acct:{pool}:"
ACCOUNT_INDEX = f"{ACCOUNT_PREFIX}index"
ACCOUNT_READY = f"{ACCOUNT_PREFIX}ready"
ACCOUNT_COOLING = f"{ACCOUNT_PREFIX}cooling"
ACCOUNT_LEASES = f"{ACCOUNT_PREFIX}leases"
ACCOUNT_LAYOUT = f"{ACCOUNT_PREFIX}layout"
#: zset of pass-through (throwaway) account ids → when they lapse (unix ms): their total is bounded by it.
ACCOUNT_PASSTHROUGH = f"{ACCOUNT_PREFIX}passthrough"
#: The random key of the keyed hash that names pass-through accounts (set once, shared by every gateway).
ACCOUNT_ID_KEY = f"{ACCOUNT_PREFIX}idkey"
#: The pool's fixed keys, in the order the lease scripts take them as KEYS[1..5].
ACCOUNT_POOL_KEYS = (ACCOUNT_INDEX, ACCOUNT_READY, ACCOUNT_COOLING, ACCOUNT_LEASES, ACCOUNT_LAYOUT)
#: The untagged prefix of older versions (`kimi:acct:<id>`, `kimi:acct:index`, …), read only to migrate.
LEGACY_ACCOUNT_PREFIX = "kimi:acct:"

#: A waiting job renews its ticket every BUSY_POLL_S (50 ms); one not renewed for this long belongs to a
#: crashed worker and is dropped, so the jobs behind it move up (a Redis restart's second or so is no crash).
LINE_TICKET_TTL_S = 5
#: A reply stream outlives its job by this long so a reconnecting gateway can still read it.
REPLY_TTL_S = 300
#: Cancel flags only matter while the job runs.
CANCEL_TTL_S = 600
#: Gateway XREAD BLOCK on a reply stream; short so keep-alives and deadlines are checked often.
REPLY_BLOCK_MS = 1_000
#: Worker XREADGROUP BLOCK on the job stream.
JOBS_BLOCK_MS = 1_000
#: Kept conversations (conversation_id continuation) are remembered this long.
CONVERSATION_TTL_S = 7 * 24 * 3600
#: A job's attachment bytes are deleted by the worker when the job ends; the TTL only catches a gateway that
#: died between writing them and enqueueing, or a job no worker ever ran. A job is worth running for at most
#: REQUEST_TIMEOUT_S (600 s by default), so the bytes outlive that, and the gateway stretches the TTL for a
#: longer timeout (shared.attachments.attachment_ttl_s).
ATTACHMENT_TTL_S = 900
#: Kimi's retention of uploaded files is not documented (kimi-web-2026.md §6: no delete RPC, a 500 MB quota
#: per user), so an uploaded file id is trusted for a day: long enough for the conversations of a working
#: session that resend their document every turn, short enough that a file Kimi dropped fails few turns.
#: Every re-upload costs the account's quota, which argues against much less.
UPLOAD_CACHE_TTL_S = 24 * 3600


def reply_key(job_id: str) -> str:
    return f"kimi:reply:{{{job_id}}}"


def cancel_key(job_id: str) -> str:
    return f"kimi:cancel:{{{job_id}}}"


def account_key(account_id: str) -> str:
    return f"{ACCOUNT_PREFIX}{account_id}"


def lease_key(account_id: str) -> str:
    return f"{ACCOUNT_PREFIX}lease:{account_id}"


def refresh_lock_key(account_id: str) -> str:
    return f"{ACCOUNT_PREFIX}lock:{account_id}"


def conversation_key(conversation_id: str) -> str:
    return f"kimi:conv:{conversation_id}"


def attachments_key(job_id: str) -> str:
    """One job's attachment bytes; `{<job id>}` is the hash tag its job and reply keys share."""
    return f"kimi:att:{{{job_id}}}"


def upload_cache_key(lane: str, account_id: str, sha256: str) -> str:
    """`{<lane>:<account>}` keeps one account's cached uploads in one slot, so one MGET reads a turn's files."""
    return f"kimi:upload:{{{lane}:{account_id}}}:{sha256}"


#: How long a stored Responses API response (`store`, the default) can be read or continued with
#: `previous_response_id`: one day, the default of the gateway's `STORED_RESPONSE_TTL_S`. OpenAI keeps them
#: 30 days, but each holds a whole conversation's text in Redis memory, and agents (Codex) continue within
#: minutes; a longer life is a memory cost nobody asked for (and a day of chats left in the Kimi account).
STORED_RESPONSE_TTL_S = 86_400
#: The kept Kimi chats of stored responses, due for deletion once nothing can continue them any more
#: (upstream_worker/sweeper.py). Not a hash-tagged key: it meets no other key in a script or transaction.
CHATS_SWEEP = "kimi:chats:sweep"


def stored_response_key(response_id: str) -> str:
    """One stored response (JSON: owner, response object, input items, the conversation as canonical messages)."""
    return f"kimi:resp:{response_id}"


def response_chat_head_key(conversation_id: str) -> str:
    """Which stored response a kept Kimi chat ends with (response ids start with `resp_`: no clash); it lives as
    long as the conversation record it goes with (`CONVERSATION_TTL_S`)."""
    return f"kimi:resp:chat:{conversation_id}"
