"""Kimi's failure signals, both protocols, translated into `shared.errors` exceptions.

REST answers errors as `{"error_type", "message"}` (kimi-web-rest.md §6.1); Connect as `{"code",
"message", "details":[{"debug":{"reason", "localizedMessage", "paywall"?}}]}`, either as an HTTP body or
inside the flag-2 trailer as `{"error": {...}}` (kimi-web-connect.md §3.7). One Struct decodes all of these
shapes. Messages shown to clients come from Kimi's own text, never from a request (so never a token).

A free account refused a model (kimi-web-2026.md §4.4) is `UpstreamPlanRequired`, not a failure of the account:
a `paywall` detail always; `REASON_SERVER_OVERLOADED_FOR_FREE_USER` only on a lane Kimi gates by plan (the 2026
agent lanes K2.8, K3, K3 Swarm: `plan_gated`), since on Instant the same reason means peak-hour load.
"""

from __future__ import annotations

import msgspec

from shared.errors import (
    BadRequest,
    ContentFiltered,
    GatewayError,
    NotFound,
    UpstreamAuthError,
    UpstreamError,
    UpstreamOverloaded,
    UpstreamPlanRequired,
    UpstreamProtocolError,
    UpstreamQuotaExhausted,
    UpstreamRateLimited,
    UpstreamStreamBusy,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from shared.models import ModelSpec
from upstream_worker.kimi.files import FileForgotten

#: Kimi allows one running stream per user; the other one ends within seconds, so retry soon.
STREAM_PUSHING_RETRY_AFTER_S = 2.0
OVERLOAD_REASON = "REASON_SERVER_OVERLOADED_FOR_FREE_USER"
STREAM_PUSHING_REASON = "REASON_USER_STREAM_PUSHING"
#: A `resource_exhausted` reason naming a quota (e.g. REASON_LONG_TEXT_QUOTA_EXCEEDED) means a used-up quota.
QUOTA_REASON_PART = "QUOTA"
#: A Connect `not_found` with this reason names a file id, not a chat.
FILE_NOT_FOUND_REASON = "REASON_FILE_NOT_FOUND"


class _Localized(msgspec.Struct):
    message: str = ""


class _Debug(msgspec.Struct):
    reason: str = ""
    localizedMessage: _Localized | None = None
    #: Raw, not `Raw | None` (msgspec decodes that as null-only); empty when absent.
    paywall: msgspec.Raw = msgspec.Raw()


class _Detail(msgspec.Struct):
    debug: _Debug | None = None
    reason: str = ""


class ConnectErrorBody(msgspec.Struct):
    """A Connect `Error`; `reason` and `debug` at the root are variants some clients have seen."""

    code: str = ""
    message: str = ""
    details: list[_Detail] = msgspec.field(default_factory=list)
    reason: str = ""
    debug: _Debug | None = None

    def reasons(self) -> list[str]:
        found = [self.reason, self.debug.reason if self.debug else ""]
        for detail in self.details:
            found.append(detail.reason)
            if detail.debug is not None:
                found.append(detail.debug.reason)
        return [r for r in found if r]

    def paywalled(self) -> bool:
        debugs = [d.debug for d in self.details if d.debug is not None]
        if self.debug is not None:
            debugs.append(self.debug)
        return any(len(d.paywall) > 0 for d in debugs)

    def text(self) -> str:
        for debug in [self.debug, *(d.debug for d in self.details)]:
            if debug is not None and debug.localizedMessage is not None and debug.localizedMessage.message:
                return debug.localizedMessage.message
        return self.message or self.code or "unknown error"


class ErrorBody(msgspec.Struct):
    """Any JSON error body Kimi answers with: REST fields, Connect fields, or a Connect trailer's `error`."""

    error_type: str = ""
    message: str = ""
    code: str = ""
    details: list[_Detail] = msgspec.field(default_factory=list)
    reason: str = ""
    debug: _Debug | None = None
    error: ConnectErrorBody | None = None

    def connect_error(self) -> ConnectErrorBody | None:
        if self.error is not None:
            return self.error
        if self.code:
            return ConnectErrorBody(self.code, self.message, self.details, self.reason, self.debug)
        return None


_error_body_decoder = msgspec.json.Decoder(ErrorBody)


def decode_error_body(body: bytes) -> ErrorBody | None:
    try:
        return _error_body_decoder.decode(body)
    except msgspec.DecodeError:
        return None


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header; HTTP dates and garbage give None."""
    if not value:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None
    return seconds if seconds >= 0 else None


def connect_error(err: ConnectErrorBody, retry_after_s: float | None = None) -> GatewayError:
    """kimi-web-connect.md §3.7 and client-formats.md §5.2: one Connect error code → one exception."""
    text = f"Kimi: {err.text()}"
    if err.paywalled():
        return UpstreamPlanRequired(f"{text} (this lane needs a paid Kimi plan)")
    code = err.code
    if code in ("unauthenticated", "permission_denied"):
        return UpstreamAuthError(text)
    if code == "resource_exhausted":
        reasons = err.reasons()
        if OVERLOAD_REASON in reasons:
            return UpstreamOverloaded(text, retry_after_s=retry_after_s)
        if STREAM_PUSHING_REASON in reasons:
            return UpstreamStreamBusy(text, retry_after_s=retry_after_s or STREAM_PUSHING_RETRY_AFTER_S)
        if any(QUOTA_REASON_PART in reason for reason in reasons):
            return UpstreamQuotaExhausted(text, retry_after_s=retry_after_s)
        return UpstreamRateLimited(text, retry_after_s=retry_after_s)
    if code == "unavailable":
        return UpstreamUnavailable(text, retry_after_s=retry_after_s)
    if code == "deadline_exceeded":
        return UpstreamTimeout(text)
    if code in ("invalid_argument", "failed_precondition", "out_of_range"):
        return BadRequest(text)
    if code == "not_found":
        return FileForgotten(text) if FILE_NOT_FOUND_REASON in err.reasons() else NotFound(text)
    return UpstreamError(text)


def plan_gated(spec: ModelSpec) -> bool:
    """A lane Kimi refuses free accounts (the 2026 catalogue's agent entries: K2.8, K3, K3 Swarm)."""
    return spec.is_agent and spec.web_model is not None


def plan_required(spec: ModelSpec, refusal: GatewayError) -> UpstreamPlanRequired:
    """A free-user refusal on a plan-gated lane: the account's plan, not Kimi's load."""
    return UpstreamPlanRequired(
        f"{spec.id} needs a paid Kimi plan; this account's plan was refused it ({refusal.message})"
    )


def rest_error(error_type: str, message: str, retry_after_s: float | None = None) -> GatewayError | None:
    """The exception for a known REST `error_type` (kimi-web-rest.md §6.1), or None for any other."""
    text = f"Kimi: {message or error_type}"
    if error_type == "auth.token.invalid":
        return UpstreamAuthError(text)
    if error_type == "chat.user_stream_pushing":
        return UpstreamStreamBusy(text, retry_after_s=retry_after_s or STREAM_PUSHING_RETRY_AFTER_S)
    if "quota" in error_type:
        return UpstreamQuotaExhausted(text, retry_after_s=retry_after_s)
    if "limit" in error_type:
        return UpstreamRateLimited(text, retry_after_s=retry_after_s)
    if error_type == "chat.not_found":
        return NotFound(text)
    if error_type == "file.not_found":
        return FileForgotten(text)
    if error_type == "validation.error":
        return BadRequest(text)
    return None


def stream_error_event(error_type: str, message: str) -> GatewayError:
    """A REST `error` event mid-stream: a known condition, else Kimi stopped the answer (content policy)."""
    known = rest_error(error_type, message)
    if known is not None:
        return known
    return ContentFiltered(f"Kimi stopped the answer: {message or error_type}")


def http_error(status: int, body: bytes, retry_after: str | None) -> GatewayError:
    """A non-2xx HTTP answer, from its JSON body when Kimi explains itself, else from the status alone."""
    retry_after_s = parse_retry_after(retry_after)
    parsed = decode_error_body(body)
    if parsed is not None:
        connect = parsed.connect_error()
        if connect is not None and status != 429:
            return connect_error(connect, retry_after_s)
        if parsed.error_type:
            known = rest_error(parsed.error_type, parsed.message, retry_after_s)
            if known is not None:
                return known
    return status_error(status, retry_after_s)


def status_error(status: int, retry_after_s: float | None = None) -> GatewayError:
    if status in (401, 403):
        return UpstreamAuthError(f"Kimi rejected the account's token (HTTP {status})")
    if status == 429:
        return UpstreamRateLimited(
            "Kimi is rate limiting this account (HTTP 429)", retry_after_s=retry_after_s
        )
    if status >= 500:
        return UpstreamUnavailable(f"Kimi answered HTTP {status}", retry_after_s=retry_after_s)
    if status == 404:
        return NotFound("Kimi does not know this chat (HTTP 404)")
    return UpstreamError(f"Kimi answered HTTP {status}")


def truncated(what: str) -> UpstreamProtocolError:
    return UpstreamProtocolError(f"Kimi's stream ended without {what}")
