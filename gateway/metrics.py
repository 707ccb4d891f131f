"""The gateway's Prometheus metrics, defined once (names: docs/INTERNALS.md); served by shared.metrics."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

#: Chat answers take seconds to minutes; the low buckets catch fast errors.
_DURATION_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600)
#: The gateway's own work (auth, parse, enqueue) is meant to stay within a few milliseconds.
_OVERHEAD_BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25)

REQUESTS = Counter(
    "kimi_gateway_requests_total",
    "Chat requests by dialect, model and HTTP status.",
    ["dialect", "model", "status"],
)
REQUEST_DURATION = Histogram(
    "kimi_gateway_request_duration_seconds",
    "Chat request duration, first byte of the request to the last of the answer.",
    ["dialect"],
    buckets=_DURATION_BUCKETS,
)
TIME_TO_FIRST_TOKEN = Histogram(
    "kimi_gateway_time_to_first_token_seconds",
    "From the request to the first content byte sent to the client.",
    ["dialect"],
    buckets=_DURATION_BUCKETS,
)
#: kind ∈ kimi_web, api_key (the `x-upstream-kind` header); model is `ModelSpec.label`.
REQUESTS_BY_KIND = Counter(
    "kimi_gateway_requests_by_kind_total",
    "Chat requests answered, by the upstream kind of the account that served them.",
    ["kind", "model"],
)
IN_FLIGHT = Gauge("kimi_gateway_in_flight_requests", "Chat requests being answered.")
OPEN_STREAMS = Gauge("kimi_gateway_open_streams", "SSE responses whose headers are sent and not yet closed.")
CLIENT_DISCONNECTS = Counter(
    "kimi_gateway_client_disconnects_total", "Clients that left before their answer ended.", ["dialect"]
)
OVERHEAD = Histogram(
    "kimi_gateway_overhead_seconds",
    "Gateway work before the job is enqueued: authentication, body read, parse, XADD.",
    ["dialect"],
    buckets=_OVERHEAD_BUCKETS,
)
ATTACHMENT_FETCH_REFUSALS = Counter(
    "kimi_gateway_attachment_fetch_refusals_total",
    "Attachment URLs not fetched, by reason (address class, port, scheme, timeout, too_large, type …).",
    ["reason"],
)
#: Per managed client key (shared/client_keys.py); `key` is the key's name (never its secret), at most
#: `KEY_LABELS_MAX` distinct names per process (the rest share "other").
KEY_REQUESTS = Counter(
    "kimi_gateway_key_requests_total",
    "Chat requests of managed client keys, by key name, model and outcome (ok, error).",
    ["key", "model", "outcome"],
)
#: kind ∈ prompt, completion; estimated ∈ true (the gateway's estimate), false (the upstream's count).
KEY_TOKENS = Counter(
    "kimi_gateway_key_tokens_total",
    "Tokens of managed client keys' requests, by key name, model, kind and whether they are estimates.",
    ["key", "model", "kind", "estimated"],
)
KEY_LABELS_MAX = 100
_key_labels: set[str] = set()


def key_label(name: str) -> str:
    """A key's name as a label: the first KEY_LABELS_MAX distinct names, then "other"."""
    if name in _key_labels:
        return name
    if len(_key_labels) < KEY_LABELS_MAX:
        _key_labels.add(name)
        return name
    return "other"
