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
    │   ├── UpstreamRateLimited       429 / resource_exhausted / quota (retry_after_s)
    │   ├── UpstreamOverloaded        Kimi says it is overloaded (529 for Anthropic, 503 elsewhere)
    │   ├── UpstreamUnavailable       503 connection refused, 5xx
    │   ├── UpstreamTimeout           504 first byte or idle deadline passed
    │   └── UpstreamProtocolError     502 stream ended without its terminal event, bad frame
    ├── ServiceUnavailable            503 Redis down, no worker, no account
    └── Cancelled                     499 the client went away

Every error travels as a canonical `ErrorEvent` (see schema.py) from worker to gateway with its `kind`; each
adapter renders a kind into its dialect's status and JSON. Handlers just raise.
"""

from __future__ import annotations

from typing import ClassVar, Literal

ErrorKind = Literal[
    "invalid_request",
    "authentication",
    "permission",
    "not_found",
    "model_not_found",
    "too_large",
    "rate_limited",
    "overloaded",
    "upstream",
    "upstream_auth",
    "unavailable",
    "timeout",
    "protocol",
    "content_filter",
    "cancelled",
    "internal",
]

#: The HTTP status each kind answers with, before the first byte of a response.
STATUS_OF_KIND: dict[str, int] = {
    "invalid_request": 400,
    "authentication": 401,
    "permission": 403,
    "not_found": 404,
    "model_not_found": 404,
    "too_large": 413,
    "rate_limited": 429,
    "overloaded": 503,
    "upstream": 502,
    "upstream_auth": 503,  # our account was refused; a 401 would blame the client key
    "unavailable": 503,
    "timeout": 504,
    "protocol": 502,
    "content_filter": 400,
    "cancelled": 499,
    "internal": 500,
}


class GatewayError(Exception):
    """Base of every error the system raises on purpose."""

    kind: ClassVar[ErrorKind] = "internal"
    retryable: ClassVar[bool] = False

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

    @property
    def status(self) -> int:
        return self._status if self._status is not None else STATUS_OF_KIND[self.kind]


class ClientError(GatewayError):
    kind: ClassVar[ErrorKind] = "invalid_request"


class BadRequest(ClientError):
    kind: ClassVar[ErrorKind] = "invalid_request"


class AuthenticationFailed(ClientError):
    kind: ClassVar[ErrorKind] = "authentication"


class PermissionDenied(ClientError):
    kind: ClassVar[ErrorKind] = "permission"


class NotFound(ClientError):
    kind: ClassVar[ErrorKind] = "not_found"


class ModelNotFound(NotFound):
    kind: ClassVar[ErrorKind] = "model_not_found"


class PayloadTooLarge(ClientError):
    kind: ClassVar[ErrorKind] = "too_large"


class RateLimited(GatewayError):
    kind: ClassVar[ErrorKind] = "rate_limited"
    retryable = True


class UpstreamError(GatewayError):
    kind: ClassVar[ErrorKind] = "upstream"
    retryable = True


class UpstreamAuthError(UpstreamError):
    kind: ClassVar[ErrorKind] = "upstream_auth"


class UpstreamRateLimited(UpstreamError):
    kind: ClassVar[ErrorKind] = "rate_limited"


class UpstreamOverloaded(UpstreamError):
    kind: ClassVar[ErrorKind] = "overloaded"


class UpstreamUnavailable(UpstreamError):
    kind: ClassVar[ErrorKind] = "unavailable"


class UpstreamTimeout(UpstreamError):
    kind: ClassVar[ErrorKind] = "timeout"


class UpstreamProtocolError(UpstreamError):
    kind: ClassVar[ErrorKind] = "protocol"


class ContentFiltered(UpstreamError):
    kind: ClassVar[ErrorKind] = "content_filter"
    retryable = False


class ServiceUnavailable(GatewayError):
    kind: ClassVar[ErrorKind] = "unavailable"
    retryable = True


class Cancelled(GatewayError):
    kind: ClassVar[ErrorKind] = "cancelled"


_CLASS_OF_KIND: dict[str, type[GatewayError]] = {
    "invalid_request": BadRequest,
    "authentication": AuthenticationFailed,
    "permission": PermissionDenied,
    "not_found": NotFound,
    "model_not_found": ModelNotFound,
    "too_large": PayloadTooLarge,
    "rate_limited": UpstreamRateLimited,
    "overloaded": UpstreamOverloaded,
    "upstream": UpstreamError,
    "upstream_auth": UpstreamAuthError,
    "unavailable": UpstreamUnavailable,
    "timeout": UpstreamTimeout,
    "protocol": UpstreamProtocolError,
    "content_filter": ContentFiltered,
    "cancelled": Cancelled,
    "internal": GatewayError,
}


def error_from_kind(
    kind: str, message: str, *, status: int | None = None, retry_after_s: float | None = None
) -> GatewayError:
    """Rebuild an exception from a canonical error event (worker → gateway)."""
    cls = _CLASS_OF_KIND.get(kind, GatewayError)
    return cls(message, status=status, retry_after_s=retry_after_s)
