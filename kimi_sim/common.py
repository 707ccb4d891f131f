"""Pieces every handler module shares: the app key of the state, JSON replies, the bearer token, the body."""

from __future__ import annotations

from typing import Any

import msgspec
from aiohttp import web

from .state import REGION_PREFIXES, SimState

SIM_STATE: web.AppKey[SimState] = web.AppKey("sim_state", SimState)
#: Where the logging middleware leaves the parsed request body for the handler.
BODY_KEY: web.RequestKey[Any] = web.RequestKey("sim_body", object)

encoder = msgspec.json.Encoder()


def state_of(request: web.Request) -> SimState:
    return request.app[SIM_STATE]


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        body=encoder.encode(data), status=status, content_type="application/json", headers=headers
    )


def region_of(request: web.Request) -> str:
    """The region whose host the call reached: the `/kimi-ai` prefix is www.kimi.ai, the root www.kimi.com."""
    for region, prefix in REGION_PREFIXES.items():
        if prefix and request.path.startswith(prefix + "/"):
            return region
    return "cn"


def bearer(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


def body_of(request: web.Request) -> dict[str, Any]:
    """The JSON object body parsed by the logging middleware ({} when absent or not an object)."""
    body = request.get(BODY_KEY)
    return body if isinstance(body, dict) else {}


def pick(data: dict[str, Any], snake: str, camel: str, default: Any = None) -> Any:
    """A field in either spelling (protojson accepts both)."""
    if snake in data:
        return data[snake]
    return data.get(camel, default)
