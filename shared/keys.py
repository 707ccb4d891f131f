"""Every Redis key name, TTL and block time of the system, with the unit in the name.

Layout (../shared/DESIGN.md §4):
    kimi:jobs                      stream of jobs, consumer group `workers`
    kimi:jobs:dead                 dead-letter stream (jobs delivered MAX_DELIVERIES times)
    kimi:reply:{<job id>}          per-job reply stream of canonical events (msgpack), with a TTL
    kimi:cancel:{<job id>}         set by the gateway when its client disconnects
    kimi:acct:<id>                 hash: one account (kind, encrypted secret, exp, state, counters …)
    kimi:acct:index                set of every account id
    kimi:acct:ready                zset of leasable accounts (active, or cooling whose time has come; not
                                   ephemeral) scored by in_flight * 1e13 + last_used_ms: the head is the best
    kimi:acct:cooling              zset of cooling accounts scored by cooling_until_ms: the head is the soonest
    kimi:acct:lease:<id>           zset of one account's lease ids scored by their expiry (ms): in-flight count
    kimi:acct:leases               zset of every lease as `<id>:<lease id>` scored by expiry (ms): the lease
                                   script pops expired ones (crashed workers) from its head
    kimi:acct:layout               set once ready / cooling / leases were built from the hashes
    kimi:acct:lock:<id>            single-flight refresh lock
    kimi:conv:<conversation id>    hash: which account and upstream ids a kept conversation belongs to
    kimi:workers                   hash: worker name → last heartbeat (unix ms)

Job and reply keys of one job share the `{<job id>}` hash tag so that a Redis Cluster keeps them together.
Account keys are only touched together inside the lease scripts, which run on one Redis (see
token_service/leases.py): a lease is O(log accounts), never a walk over every account.
"""

from __future__ import annotations

JOBS_STREAM = "kimi:jobs"
JOBS_GROUP = "workers"
DEAD_LETTER_STREAM = "kimi:jobs:dead"
WORKERS_HASH = "kimi:workers"

ACCOUNT_INDEX = "kimi:acct:index"
ACCOUNT_PREFIX = "kimi:acct:"
ACCOUNT_READY = "kimi:acct:ready"
ACCOUNT_COOLING = "kimi:acct:cooling"
ACCOUNT_LEASES = "kimi:acct:leases"

#: Approximate cap of the job stream; acked entries beyond it are trimmed (XADD MAXLEN ~).
JOBS_MAXLEN = 100_000
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
