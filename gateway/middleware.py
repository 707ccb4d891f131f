"""One middleware renders every error through the dialect of the matched route (OpenAI for the rest)."""

from __future__ import annotations

import uuid
from collections.abc import Mapping

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from adapters.base import Dialect
from gateway.relay import REQUEST_ID
from shared.errors import (
    BadRequest,
    GatewayError,
    NotFound,
    PayloadTooLarge,
)
from shared.logging import get_logger

log = get_logger("gateway.errors")
#: Set by a handler whose errors take another dialect than its route's (Gemini callers of `/v1/models`).
ERROR_DIALECT: web.RequestKey[Dialect] = web.RequestKey("error_dialect")


def error_middleware(dialect_of: Mapping[tuple[str, str], Dialect], default: Dialect) -> Middleware:
    """Render `GatewayError` (and aiohttp's own 404 / 405 / 413) in the route's dialect."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except GatewayError as exc:
            return render(request, _dialect(request, dialect_of, default), exc)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            return render(request, _dialect(request, dialect_of, default), _translate(request, exc))
        except Exception:
            log.exception("unhandled_error", path=request.path, request_id=request.get(REQUEST_ID))
            return render(
                request, _dialect(request, dialect_of, default), GatewayError("Internal server error.")
            )

    return middleware


def render(request: web.Request, dialect: Dialect, exc: GatewayError) -> web.Response:
    request_id = request.get(REQUEST_ID) or uuid.uuid4().hex
    status, extra, body = dialect.error_response(exc, request_id)
    headers = {"Content-Type": "application/json", "x-request-id": request_id, **extra}
    if exc.retry_after_s is not None:
        headers["Retry-After"] = str(max(1, round(exc.retry_after_s)))
    return web.Response(status=status, headers=headers, body=body)


def _dialect(
    request: web.Request, dialect_of: Mapping[tuple[str, str], Dialect], default: Dialect
) -> Dialect:
    if ERROR_DIALECT in request:
        return request[ERROR_DIALECT]
    route = request.match_info.route
    resource = route.resource
    if resource is None:
        return default
    return dialect_of.get((route.method, resource.canonical), default)


def _translate(request: web.Request, exc: web.HTTPException) -> GatewayError:
    if exc.status == 404:
        return NotFound(f"Unknown route: {request.method} {request.path}")
    if exc.status == 413:
        return PayloadTooLarge("The request body is too large.")
    return BadRequest(exc.text or exc.reason, status=exc.status)
