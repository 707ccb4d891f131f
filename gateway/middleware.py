"""One middleware renders every error through the dialect of the matched route's row (OpenAI for the rest)."""

from __future__ import annotations

import uuid
from collections.abc import Mapping

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from adapters.base import Dialect
from gateway.relay import REQUEST_ID
from gateway.routes import Route
from shared.errors import (
    BadRequest,
    GatewayError,
    NotFound,
    PayloadTooLarge,
)
from shared.logging import get_logger

log = get_logger("gateway.errors")


def error_middleware(rows: Mapping[tuple[str, str], Route], default: Dialect) -> Middleware:
    """Render `GatewayError` (and aiohttp's own 404 / 405 / 413) in the dialect the route's row picks for the
    caller (a row's variant may answer some callers in another dialect); `default` for every other route."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except GatewayError as exc:
            return render(request, _dialect(request, rows, default), exc)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            return render(request, _dialect(request, rows, default), _translate(request, exc))
        except Exception:
            log.exception("unhandled_error", path=request.path, request_id=request.get(REQUEST_ID))
            return render(request, _dialect(request, rows, default), GatewayError("Internal server error."))

    return middleware


def render(request: web.Request, dialect: Dialect, exc: GatewayError) -> web.Response:
    request_id = request.get(REQUEST_ID) or uuid.uuid4().hex
    status, extra, body = dialect.error_response(exc, request_id)
    headers = {"Content-Type": "application/json", "x-request-id": request_id, **extra}
    if exc.retry_after_s is not None:
        headers["Retry-After"] = str(max(1, round(exc.retry_after_s)))
    return web.Response(status=status, headers=headers, body=body)


def _dialect(request: web.Request, rows: Mapping[tuple[str, str], Route], default: Dialect) -> Dialect:
    route = request.match_info.route
    resource = route.resource
    row = rows.get((route.method, resource.canonical)) if resource is not None else None
    return default if row is None else row.dialect_for(request.headers, request.query)


def _translate(request: web.Request, exc: web.HTTPException) -> GatewayError:
    if exc.status == 404:
        return NotFound(f"Unknown route: {request.method} {request.path}")
    if exc.status == 413:
        return PayloadTooLarge("The request body is too large.")
    return BadRequest(exc.text or exc.reason, status=exc.status)
