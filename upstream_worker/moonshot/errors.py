"""The official API's errors (moonshot-official-api.md §10) → `shared.errors` exceptions.

An error is `{"error": {"type", "message"}}` (an older shape also has `code`), as an HTTP answer or as an
in-band `data:` chunk of a stream. It is classified by `type` first, because the statuses are not consistent
(§10.2: "insufficient balance" is 429 on one page and 403 on another), then by status. The platform names the
organisation and key in its messages (`org-…<ak-…>`); those ids, and anything shaped like a key, are masked
before a message goes anywhere. The wait of a 429 is `Retry-After` when sent, else the message's
"please try again after N seconds" (§10.3).
"""

from __future__ import annotations

import re

import msgspec

from shared.errors import (
    BadRequest,
    ContentFiltered,
    GatewayError,
    ModelNotFound,
    UpstreamAuthError,
    UpstreamError,
    UpstreamOverloaded,
    UpstreamQuotaExhausted,
    UpstreamRateLimited,
    UpstreamUnavailable,
)
from upstream_worker.kimi.failures import parse_retry_after

_AUTH_TYPES = frozenset({"invalid_authentication_error", "incorrect_api_key_error"})
_RETRY_IN_MESSAGE = re.compile(r"try again after (\d+(?:\.\d+)?) seconds?")
_IDS = re.compile(r"\b(org|ak|sk)-[A-Za-z0-9_-]+")


class ApiErrorBody(msgspec.Struct):
    type: str = ""
    message: str = ""
    code: str | None = None


class _Envelope(msgspec.Struct):
    error: ApiErrorBody | None = None


_envelope_decoder = msgspec.json.Decoder(_Envelope)


def redact(message: str) -> str:
    """The message with organisation, access-key and API-key ids masked (`org-…`, `ak-…`, `sk-…`)."""
    return _IDS.sub(lambda m: f"{m.group(1)}-…", message)


def retry_after_of(message: str, header: str | None = None) -> float | None:
    """The wait a 429 asks for: the Retry-After header, else the seconds its message names."""
    from_header = parse_retry_after(header)
    if from_header is not None:
        return from_header
    match = _RETRY_IN_MESSAGE.search(message)
    return float(match.group(1)) if match else None


def api_error(body: ApiErrorBody, status: int | None = None, retry_after: str | None = None) -> GatewayError:
    """One platform error → the exception the worker acts on (release outcome, failover, client status)."""
    kind = body.type or body.code or ""
    bad_key = kind in _AUTH_TYPES or body.code == "invalid_api_key" or status == 401
    text = f"Moonshot API: {redact(body.message) or kind or f'HTTP {status}'}"
    wait_s = retry_after_of(body.message, retry_after)
    if kind == "content_filter":
        return ContentFiltered(text)
    if kind == "exceeded_current_quota_error":
        return UpstreamQuotaExhausted(f"{text} (the key's quota or balance is used up)", retry_after_s=wait_s)
    if kind == "rate_limit_reached_error":
        return UpstreamRateLimited(text, retry_after_s=wait_s)
    if kind == "engine_overloaded_error":
        return UpstreamOverloaded(text, retry_after_s=wait_s)
    if bad_key:  # also the older `invalid_request_error` + `code: invalid_api_key` shape (§10.1)
        return UpstreamAuthError(text)
    if kind == "resource_not_found_error":
        return ModelNotFound(text)
    if kind == "permission_denied_error":
        return UpstreamError(text, status=403)
    if kind == "invalid_request_error":
        return BadRequest(text)
    if kind in ("server_error", "unexpected_output"):
        return UpstreamUnavailable(text, retry_after_s=wait_s)
    return _by_status(text, status, wait_s)


def _by_status(text: str, status: int | None, wait_s: float | None) -> GatewayError:
    if status == 429:
        return UpstreamRateLimited(text, retry_after_s=wait_s)
    if status is not None and status >= 500:
        return UpstreamUnavailable(text, retry_after_s=wait_s)
    if status == 400:
        return BadRequest(text)
    return UpstreamError(text, status=status)


def http_error(status: int, body: bytes, retry_after: str | None) -> GatewayError:
    """A non-2xx answer of the platform, from its JSON error when it has one, else from the status."""
    try:
        envelope = _envelope_decoder.decode(body)
    except msgspec.DecodeError:
        envelope = _Envelope()
    return api_error(envelope.error or ApiErrorBody(), status, retry_after)
