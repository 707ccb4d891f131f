"""The `/__sim/` control API, the request log and the HTTP-level fault middleware."""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec
from aiohttp import web

from . import official
from .common import BODY_KEY, json_response, state_of
from .connect import unary_error, unauthenticated
from .envelope import split_frames
from .rest import auth_error, rest_error
from .state import REGION_PREFIXES, LoggedRequest

CONTROL_PREFIX = "/__sim/"
_decoder = msgspec.json.Decoder()


def _parse_body(content_type: str, raw: bytes) -> Any:
    """JSON, the decoded Connect envelope(s), text, or `{"bytes": n}` for binary and multipart uploads."""
    if not raw:
        return None
    if content_type.startswith("multipart/"):
        return {"bytes": len(raw)}
    if content_type.startswith("application/connect"):
        try:
            frames = [_decoder.decode(payload) for _, payload in split_frames(raw)]
        except (ValueError, msgspec.DecodeError):
            return {"bytes": len(raw)}
        return frames[0] if len(frames) == 1 else frames
    try:
        return _decoder.decode(raw)
    except msgspec.DecodeError:
        pass
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return {"bytes": len(raw)}


@web.middleware
async def log_requests(request: web.Request, handler: Any) -> web.StreamResponse:
    """Record every non-control call and leave its parsed body for the handler."""
    if request.path.startswith(CONTROL_PREFIX):
        return await handler(request)  # type: ignore[no-any-return]
    raw = await request.read() if request.can_read_body else b""
    body = _parse_body(request.content_type, raw)
    request[BODY_KEY] = body
    state_of(request).requests.append(
        LoggedRequest(request.method, request.path, dict(request.query), dict(request.headers), body)
    )
    return await handler(request)  # type: ignore[no-any-return]


def _is_connect(path: str) -> bool:
    path = path.removeprefix(REGION_PREFIXES["global"])
    return path.startswith("/apiv2/") or ".AuthService/" in path


def _http_fault(name: str, params: dict[str, Any], path: str) -> web.Response:
    if official.is_official(path):
        return official.http_fault(name, params)
    connect = _is_connect(path)
    if name == "http_401":
        return unauthenticated() if connect else auth_error()
    if name == "http_500":
        if connect:
            return unary_error(500, "internal", "internal error")
        return rest_error(500, "internal", "服务内部错误")
    headers = {"Retry-After": str(params["retry_after"])} if "retry_after" in params else None
    if connect:
        response = unary_error(429, "resource_exhausted", "rate limited", "REASON_RATE_LIMITED")
    else:
        response = rest_error(429, "chat.completion.rate_limit", "请求过于频繁，请稍后再试")
    if headers:
        response.headers.update(headers)
    return response


@web.middleware
async def http_faults(request: web.Request, handler: Any) -> web.StreamResponse:
    path = request.path
    if path.startswith(CONTROL_PREFIX):
        return await handler(request)  # type: ignore[no-any-return]
    faults = state_of(request).faults
    if (stall := faults.take("stall_first_byte", path)) is not None:
        await asyncio.sleep(float(stall.get("seconds", 1.0)))
    for name in ("http_401", "http_429", "http_500"):
        if (params := faults.take(name, path)) is not None:
            return _http_fault(name, params, path)
    return await handler(request)  # type: ignore[no-any-return]


async def _json(request: web.Request) -> dict[str, Any]:
    raw = await request.read()
    data = _decoder.decode(raw) if raw else {}
    if not isinstance(data, dict):
        raise web.HTTPBadRequest(text="expected a JSON object")
    return data


def _bad_request(message: str) -> web.Response:
    return json_response({"error": message}, status=400)


async def add_account(request: web.Request) -> web.StreamResponse:
    data = await _json(request)
    try:
        account = state_of(request).add_account(
            data.get("kind", "refresh_token"),
            data.get("exp_in_s"),
            data.get("plan", "free"),
            data.get("region", "cn"),
            data.get("issuer"),
        )
    except ValueError as exc:
        return _bad_request(str(exc))
    return json_response(
        {
            "kind": account.kind,
            "token": account.token,
            "sub": account.sub,
            "exp": account.exp,
            "plan": account.plan,
            "region": account.region,
            "issuer": account.issuer,
        }
    )


async def revoke_account(request: web.Request) -> web.StreamResponse:
    if not state_of(request).revoke(request.match_info["sub"]):
        return _bad_request("unknown account")
    return json_response({"revoked": request.match_info["sub"]})


async def add_agent(request: web.Request) -> web.StreamResponse:
    agent_id = str((await _json(request)).get("id") or "")
    if not agent_id:
        return _bad_request("id is required")
    state_of(request).agents.add(agent_id)
    return json_response({"agent": agent_id})


async def arm_fault(request: web.Request) -> web.StreamResponse:
    data = await _json(request)
    name = str(data.pop("name", ""))
    count = data.pop("count", 1)
    path = data.pop("path", None)
    try:
        state_of(request).faults.arm(name, count, path, **data)
    except (ValueError, TypeError) as exc:
        return _bad_request(str(exc))
    return json_response({"armed": name})


async def list_faults(request: web.Request) -> web.StreamResponse:
    return json_response(state_of(request).faults.armed())


async def disarm_faults(request: web.Request) -> web.StreamResponse:
    state_of(request).faults.disarm_all()
    return json_response({})


async def list_requests(request: web.Request) -> web.StreamResponse:
    needle = request.query.get("path", "")
    logged = [r.as_dict() for r in state_of(request).requests if needle in r.path]
    return json_response(logged)


async def clear_requests(request: web.Request) -> web.StreamResponse:
    state_of(request).requests.clear()
    return json_response({})


async def get_config(request: web.Request) -> web.StreamResponse:
    return json_response(state_of(request).config.as_dict())


async def set_config(request: web.Request) -> web.StreamResponse:
    state = state_of(request)
    try:
        state.config = state.config.replace(await _json(request))
    except ValueError as exc:
        return _bad_request(str(exc))
    return json_response(state.config.as_dict())


async def get_state(request: web.Request) -> web.StreamResponse:
    return json_response(state_of(request).snapshot())


async def reset(request: web.Request) -> web.StreamResponse:
    state_of(request).reset()
    return json_response({})


def routes() -> list[web.RouteDef]:
    return [
        web.post("/__sim/accounts", add_account),
        web.post("/__sim/accounts/{sub}/revoke", revoke_account),
        web.post("/__sim/agents", add_agent),
        web.post("/__sim/faults", arm_fault),
        web.get("/__sim/faults", list_faults),
        web.delete("/__sim/faults", disarm_faults),
        web.get("/__sim/requests", list_requests),
        web.delete("/__sim/requests", clear_requests),
        web.get("/__sim/config", get_config),
        web.post("/__sim/config", set_config),
        web.get("/__sim/state", get_state),
        web.post("/__sim/reset", reset),
    ]
