"""The worker's Prometheus metrics, defined once (names from docs/INTERNALS.md), and the queue sampler.

Labels are bounded: job outcomes, error kinds and tool-call outcomes and formats are fixed enums, protocols
are "rest" / "connect" / "moonshot"; the drift counter's names come from upstream, so each protocol keeps at
most `DRIFT_NAMES_MAX` of them and counts the rest as "other".
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import redis.asyncio as aioredis
from prometheus_client import Counter, Gauge, Histogram

from shared import keys

#: Upstream streams last from a second to many minutes (agent lanes).
_DURATION_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
_TTFB_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 120)
#: Counting entries behind last-delivered-id stops here (Redis < 7 reports no `lag`); a bigger backlog
#: reads as this number, which is alarm enough.
LAG_SCAN_LIMIT = 10_000

JOBS = Counter("kimi_worker_jobs", "Jobs finished, by outcome.", ["outcome"])
UPSTREAM_DURATION = Histogram(
    "kimi_worker_upstream_duration_seconds",
    "One upstream call, start to end.",
    ["protocol"],
    buckets=_DURATION_BUCKETS,
)
UPSTREAM_TTFB = Histogram(
    "kimi_worker_upstream_time_to_first_byte_seconds",
    "Upstream call start to its first event.",
    ["protocol"],
    buckets=_TTFB_BUCKETS,
)
UPSTREAM_ERRORS = Counter(
    "kimi_worker_upstream_errors", "Upstream failures, by error kind.", ["protocol", "kind"]
)
FAILOVERS = Counter("kimi_worker_failovers", "Jobs retried on another account before the first token.")
#: kind ∈ kimi_web, api_key (the `x-upstream-kind` header); model is `ModelSpec.label`.
REQUESTS_BY_KIND = Counter(
    "kimi_worker_requests_by_kind", "Answers served, by the upstream kind of the account.", ["kind", "model"]
)
JOBS_IN_FLIGHT = Gauge("kimi_worker_jobs_in_flight", "Jobs this process is running.")
QUEUE_LENGTH = Gauge("kimi_queue_length", "Entries in the job stream (XLEN).")
QUEUE_PENDING = Gauge("kimi_queue_pending", "Jobs delivered to a worker and not yet acked.")
QUEUE_LAG = Gauge("kimi_queue_lag", "Jobs in the stream not yet delivered to any worker.")
DEAD_LETTER_LENGTH = Gauge("kimi_queue_dead_letter_length", "Entries in the dead-letter stream.")
RECLAIMED = Counter("kimi_worker_reclaimed_jobs", "Jobs taken over from a dead consumer.")
HEARTBEAT = Gauge("kimi_worker_heartbeat_timestamp_seconds", "Unix time of this worker's last heartbeat.")
#: Tool calls read from Kimi's answers (upstream_worker/toolcalls). `outcome`: `parsed` (used as answered),
#: `repaired` (used after the one correction attempt), `failed` (the answer became an error); `format`: the
#: form the call was written in (`toolcalls.CALL_FORMATS`), or `none` for a failure with no call (a required
#: call missing). Counted once per call for parsed / repaired, once per answer for failed.
TOOL_CALLS = Counter(
    "kimi_worker_tool_calls", "Tool calls in Kimi's answers, by outcome and format.", ["outcome", "format"]
)
#: Kept chats of lapsed stored responses the sweeper took on (upstream_worker/sweeper.py), by `SweepOutcome`:
#: deleted, gone, retry, failed.
CHATS_SWEPT = Counter(
    "kimi_worker_chats_swept", "Kept Kimi chats of lapsed stored responses swept, by outcome.", ["outcome"]
)
DRIFT = Counter(
    "kimi_upstream_drift",
    "Upstream event kinds and fields the decoders did not expect (event:<kind>, field:<path>, malformed).",
    ["protocol", "kind"],
)
#: Distinct drift names per protocol: enough to name what changed upstream, few enough to bound the series.
DRIFT_NAMES_MAX = 32
DRIFT_NAME_MAX_CHARS = 64
_drift_names: dict[str, set[str]] = {}
_UNSAFE = re.compile(r"[^A-Za-z0-9_.:\-]")


def count_drift(protocol: str, counts: Mapping[str, int]) -> None:
    """Count what one upstream stream did not expect (`upstream_worker.drift.Drift.drain()`)."""
    if not counts:
        return
    names = _drift_names.setdefault(protocol, set())
    for name, count in counts.items():
        label = _UNSAFE.sub("_", name)[:DRIFT_NAME_MAX_CHARS]
        if label not in names:
            if len(names) >= DRIFT_NAMES_MAX:
                label = "other"
            else:
                names.add(label)
        DRIFT.labels(protocol, label).inc(count)


#: Uploads run from a second (an image) to about a minute (a long PDF read by Kimi).
_UPLOAD_BUCKETS = (0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120)
ATTACHMENTS = Counter(
    "kimi_worker_attachments",
    "Attachments referenced by turns, by kind (image / file) and lane.",
    ["kind", "lane"],
)
ATTACHMENT_UPLOADS = Counter(
    "kimi_worker_attachment_uploads", "Attachments uploaded to Kimi, by kind and lane.", ["kind", "lane"]
)
ATTACHMENT_UPLOAD_BYTES = Counter(
    "kimi_worker_attachment_upload_bytes", "Attachment bytes uploaded to Kimi, by lane.", ["lane"]
)
ATTACHMENT_CACHE_HITS = Counter(
    "kimi_worker_attachment_cache_hits",
    "Uploads saved: attachments the account already held (upload cache hits), by lane.",
    ["lane"],
)
ATTACHMENT_UPLOAD_ERRORS = Counter(
    "kimi_worker_attachment_upload_errors", "Failed uploads, by lane and error kind.", ["lane", "kind"]
)
ATTACHMENT_UPLOAD_DURATION = Histogram(
    "kimi_worker_attachment_upload_duration_seconds",
    "One attachment's upload until Kimi has read it, by lane.",
    ["lane"],
    buckets=_UPLOAD_BUCKETS,
)


async def sample_queue(redis: aioredis.Redis) -> None:
    """Refresh the queue gauges from XINFO GROUPS / XLEN (one pipeline, plus a range count on Redis < 7)."""
    pipe = redis.pipeline(transaction=False)
    pipe.xlen(keys.JOBS_STREAM)
    pipe.xlen(keys.DEAD_LETTER_STREAM)
    pipe.xinfo_groups(keys.JOBS_STREAM)
    length, dead, groups = await pipe.execute(raise_on_error=False)
    if isinstance(length, int):
        QUEUE_LENGTH.set(length)
    if isinstance(dead, int):
        DEAD_LETTER_LENGTH.set(dead)
    group = _our_group(groups)
    if group is None:
        return
    QUEUE_PENDING.set(int(group.get("pending") or 0))
    lag = group.get("lag")
    if lag is None:
        lag = await _count_after(redis, group.get("last-delivered-id"))
    QUEUE_LAG.set(int(lag))


def _our_group(groups: Any) -> dict[str, Any] | None:
    if not isinstance(groups, list):
        return None
    for group in groups:
        name = group.get("name")
        if name in (keys.JOBS_GROUP, keys.JOBS_GROUP.encode()):
            return dict(group)
    return None


async def _count_after(redis: aioredis.Redis, last_id: bytes | str | None) -> int:
    """Entries after `last_id`: what the group has not delivered yet (XINFO `lag` before Redis 7)."""
    start = last_id.decode() if isinstance(last_id, bytes) else (last_id or "0-0")
    entries = await redis.xrange(keys.JOBS_STREAM, min=f"({start}", max="+", count=LAG_SCAN_LIMIT)
    return len(entries or ())
