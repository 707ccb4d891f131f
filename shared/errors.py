"""The error tree of the whole system, one class per failure a caller can act on.

    GatewayError                      status, kind, retryable, message (never a secret)
    ├── ClientError                   the caller's request is wrong
    │   ├── BadRequest                400 invalid_request (param names the field)
    │   ├── AuthenticationFailed      401 authentication
    │   ├── PermissionDenied          403 permission
    │   ├── NotFound                  404 not_found (ModelNotFound: 404 model_not_found)
    │   └── PayloadTooLarge           413 too_large
    ├── RateLimited                   429 rate_limited (retry_after_s)
    ├── UpstreamError                 502 upstream: Kimi failed us
    │   ├── UpstreamAuthError         503: Kimi said 401, the account's token is bad
    │   ├── UpstreamRateLimited       429 / resource_exhausted (retry_after_s): cool the account a while
    │   │   ├── UpstreamQuotaExhausted    a quota of the account is used up: cool it for the quota window
    │   │   └── UpstreamStreamBusy        another stream of the user still runs: retry soon, cool nothing
    │   ├── UpstreamOverloaded        Kimi says it is overloaded (529 for Anthropic, 503 elsewhere)
    │   ├── UpstreamPlanRequired      403 permission: the account's plan may not use this model; try another
    │   ├── UpstreamUnavailable       503 connection refused, 5xx
    │   ├── UpstreamTimeout           504 first byte or idle deadline passed
    │   └── UpstreamProtocolError     502 stream ended without its terminal event, bad frame
    ├── ServiceUnavailable            503 Redis down, no worker, no account
    └── Cancelled                     499 the client went away

Each class declares its `kind` and `http_status` once; everything else is derived from the classes: the set of
kinds, the status of a kind, and the class a kind is rebuilt as. Every error travels as a canonical `ErrorEvent`
(see schema.py) from worker to gateway with its `kind`; `error_event` and `error_from_event` are the one mapping
between the two. Each adapter renders a kind into its dialect's status and JSON. Handlers just raise.
"""

from __future__ import annotations

from typing import ClassVar

from shared.schema import ErrorEvent

#: kind → the class an `ErrorEvent` of that kind is rebuilt as: the first class that declares the kind, unless
#: a later one says `rebuilds_kind = True` (the worker's view of a kind is the one the gateway must re-raise).
_CLASS_OF_KIND: dict[str, type[GatewayError]] = {}


class GatewayError(Exception):
    """Base of every error the system raises on purpose."""

    kind: ClassVar[str] = "internal"
    #: The HTTP status of the kind, before the first byte of a response.
    http_status: ClassVar[int] = 500
    retryable: ClassVar[bool] = False
    rebuilds_kind: ClassVar[bool] = False

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        retry_after_s: float | None = None,
        status: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.retry_after_s = retry_after_s
        self._status = status

    def __init_subclass__(cls) -> None:
        super().__init_subclass__()
        declares = "kind" in cls.__dict__ and cls.kind not in _CLASS_OF_KIND
        if declares or cls.__dict__.get("rebuilds_kind", False):
            _CLASS_OF_KIND[cls.kind] = cls

    @property
    def status(self) -> int:
        return self._status if self._status is not None else self.http_status


_CLASS_OF_KIND["internal"] = GatewayError


class ClientError(GatewayError):
    kind: ClassVar[str] = "invalid_request"
    http_status: ClassVar[int] = 400


class BadRequest(ClientError):
    rebuilds_kind = True


class AuthenticationFailed(ClientError):
    kind: ClassVar[str] = "authentication"
    http_status: ClassVar[int] = 401


class PermissionDenied(ClientError):
    kind: ClassVar[str] = "permission"
    http_status: ClassVar[int] = 403


class NotFound(ClientError):
    kind: ClassVar[str] = "not_found"
    http_status: ClassVar[int] = 404


class ModelNotFound(NotFound):
    kind: ClassVar[str] = "model_not_found"


class PayloadTooLarge(ClientError):
    kind: ClassVar[str] = "too_large"
    http_status: ClassVar[int] = 413


class RateLimited(GatewayError):
    kind: ClassVar[str] = "rate_limited"
    http_status: ClassVar[int] = 429
    retryable = True


class UpstreamError(GatewayError):
    kind: ClassVar[str] = "upstream"
    http_status: ClassVar[int] = 502
    retryable = True


class UpstreamAuthError(UpstreamError):
    kind: ClassVar[str] = "upstream_auth"
    http_status: ClassVar[int] = 503  # our account was refused; a 401 would blame the client key


class UpstreamRateLimited(UpstreamError):
    kind: ClassVar[str] = "rate_limited"
    http_status: ClassVar[int] = 429
    rebuilds_kind = True


class UpstreamQuotaExhausted(UpstreamRateLimited):
    """A quota of the account is used up (Kimi's long-text rounds, research uses; an official API key's balance
    or token quota, `exceeded_current_quota_error`): the account cools for the quota's window, not for a 429's
    moment. The client sees the 429 of any rate limit."""


class UpstreamStreamBusy(UpstreamRateLimited):
    """Another stream of this user is still running on the upstream's side (Kimi REST
    `chat.user_stream_pushing`, Connect `resource_exhausted` / `REASON_USER_STREAM_PUSHING`): a moment's
    condition of this one request, typically right after the previous turn was cut short. The worker retries
    it and never cools the account for it; a client that still gets it sees a 429 with a short Retry-After."""


class UpstreamOverloaded(UpstreamError):
    kind: ClassVar[str] = "overloaded"
    http_status: ClassVar[int] = 503


class UpstreamPlanRequired(UpstreamError):
    """Kimi refused this model to the account's plan (a free account on K3: `resource_exhausted` with
    `REASON_SERVER_OVERLOADED_FOR_FREE_USER` on a plan-gated lane, or any `paywall` detail; kimi-web-2026.md
    §4.4). The account is not broken and not cooled: another account may serve the model. A client that still
    gets it (no account could) sees a 403 `permission` saying the model needs a paid Kimi plan: retrying the
    same request does not help, so it is not a 429 that SDKs would retry on their own."""

    kind: ClassVar[str] = "permission"
    http_status: ClassVar[int] = 403
    retryable = False


class UpstreamUnavailable(UpstreamError):
    kind: ClassVar[str] = "unavailable"
    http_status: ClassVar[int] = 503


class UpstreamTimeout(UpstreamError):
    kind: ClassVar[str] = "timeout"
    http_status: ClassVar[int] = 504


class UpstreamProtocolError(UpstreamError):
    kind: ClassVar[str] = "protocol"
    http_status: ClassVar[int] = 502


class ContentFiltered(UpstreamError):
    kind: ClassVar[str] = "content_filter"
    http_status: ClassVar[int] = 400
    retryable = False


class ServiceUnavailable(GatewayError):
    kind: ClassVar[str] = "unavailable"
    http_status: ClassVar[int] = 503
    retryable = True


class Cancelled(GatewayError):
    kind: ClassVar[str] = "cancelled"
    http_status: ClassVar[int] = 499


#: Every kind an error can have, each with its HTTP status.
STATUS_OF_KIND: dict[str, int] = {kind: cls.http_status for kind, cls in _CLASS_OF_KIND.items()}


def error_event(exc: BaseException) -> ErrorEvent:
    """The reply-stream event of a failure; anything but a GatewayError is an `internal` error."""
    if isinstance(exc, GatewayError):
        return ErrorEvent(
            kind=exc.kind,
            message=exc.message,
            retryable=exc.retryable,
            status=exc.status,
            retry_after_s=exc.retry_after_s,
        )
    return ErrorEvent(kind="internal", message="the worker failed while running this request")


def error_from_event(event: ErrorEvent) -> GatewayError:
    """The exception of a reply-stream error (worker → gateway): its kind's class, its status."""
    cls = _CLASS_OF_KIND.get(event.kind, GatewayError)
    return cls(event.message, status=event.status, retry_after_s=event.retry_after_s)
