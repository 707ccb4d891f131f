"""Unary Connect calls (kimi-web-connect.md §4.5, §5): plain JSON in and out, errors as non-200 `Error`."""

from __future__ import annotations

import base64
from typing import Any

from aiohttp import web

from .common import body_of, json_response, pick, region_of, state_of
from .connect import authed, unary_error
from .state import Chat, InvalidToken, SimAccount, iso_time

AVAILABLE_MODELS: list[dict[str, Any]] = [
    {
        "key": "k2d5",
        "scenario": "SCENARIO_K2D5",
        "displayName": "K2.5 Instant",
        "description": "Fast answers",
        "inputPlaceholder": "Ask anything",
    },
    {
        "key": "k2d5-thinking",
        "scenario": "SCENARIO_K2D5",
        "displayName": "K2.5 Thinking",
        "description": "Deep thinking",
        "inputPlaceholder": "Ask anything",
        "thinking": True,
    },
    {
        "key": "k2d5-agent",
        "scenario": "SCENARIO_OK_COMPUTER",
        "displayName": "K2.5 Agent",
        "description": "Agent",
        "inputPlaceholder": "Give Kimi a task",
        "kimiPlusId": "ok-computer",
        "agentMode": "TYPE_NORMAL",
    },
    {
        "key": "k2d5-agent-ultra",
        "scenario": "SCENARIO_OK_COMPUTER",
        "displayName": "K2.5 Agent Swarm",
        "description": "Agent swarm",
        "inputPlaceholder": "Give Kimi a task",
        "kimiPlusId": "ok-computer",
        "agentMode": "TYPE_ULTRA",
    },
]


@authed
async def delete_chat(request: web.Request, account: SimAccount) -> web.StreamResponse:
    chat_id = str(pick(body_of(request), "chat_id", "chatId") or "")
    if not state_of(request).delete_chat(account.sub, chat_id):
        return unary_error(404, "not_found", "chat not found", "REASON_CHAT_NOT_FOUND")
    return json_response({})


def _page_offset(token: Any) -> int | None:
    if not token:
        return 0
    try:
        return int(base64.b64decode(str(token), validate=True).decode("ascii").removeprefix("offset:"))
    except ValueError:
        return None


def _chat_summary(chat: Chat) -> dict[str, Any]:
    last = chat.messages[-1]["content"] if chat.messages else ""
    return {
        "id": chat.id,
        "name": chat.name,
        "messageContent": last,
        "createTime": iso_time(chat.create_time),
        "updateTime": iso_time(chat.update_time),
    }


@authed
async def list_chats(request: web.Request, account: SimAccount) -> web.StreamResponse:
    """Newest first; `nextPageToken` is base64 of `offset:<n>`, empty on the last page."""
    body = body_of(request)
    size = int(pick(body, "page_size", "pageSize") or 50)
    offset = _page_offset(pick(body, "page_token", "pageToken"))
    if offset is None or size < 1:
        return unary_error(400, "invalid_argument", "invalid page token or size")
    chats = state_of(request).user_chats(account.sub)
    page = chats[offset : offset + size]
    more = offset + size < len(chats)
    next_token = base64.b64encode(f"offset:{offset + size}".encode()).decode() if more else ""
    return json_response({"chats": [_chat_summary(c) for c in page], "nextPageToken": next_token})


@authed
async def get_available_models(request: web.Request, account: SimAccount) -> web.StreamResponse:
    return json_response(
        {
            "availableModels": AVAILABLE_MODELS,
            "defaultScenario": {"scenario": "SCENARIO_K2D5"},
            "defaultAgentModel": "k2d5-agent",
            "defaultChatModel": "k2d5",
        }
    )


@authed
async def get_current_user(request: web.Request, account: SimAccount) -> web.StreamResponse:
    region = "REGION_OVERSEA" if account.region == "global" else "REGION_CN"
    user = {"id": account.sub, "nickname": "模拟用户", "region": region, "membership": {"level": 10}}
    return json_response({"user": user})


@authed
async def get_subscription(request: web.Request, account: SimAccount) -> web.StreamResponse:
    subscription = {
        "userId": account.sub,
        "userName": "模拟用户",
        "email": f"{account.sub}@sim.invalid",
        "membershipLevel": 10,
    }
    return json_response({"subscription": subscription})


async def refresh_token(request: web.Request) -> web.StreamResponse:
    """No Authorization header: the refresh token travels in the body, either spelling."""
    token = str(pick(body_of(request), "refresh_token", "refreshToken") or "")
    try:
        access, refresh = state_of(request).refresh(token, region_of(request))
    except InvalidToken:
        return unary_error(401, "unauthenticated", "invalid claims", "REASON_INVALID_AUTH_TOKEN")
    return json_response({"accessToken": access, "refreshToken": refresh})


def routes() -> list[web.RouteDef]:
    from .connect import CHAT_PATH, chat

    return [
        web.post(CHAT_PATH, chat),
        web.post("/apiv2/kimi.chat.v1.ChatService/DeleteChat", delete_chat),
        web.post("/apiv2/kimi.gateway.chat.v1.ChatService/DeleteChat", delete_chat),
        web.post("/apiv2/kimi.chat.v1.ChatService/ListChats", list_chats),
        web.post("/apiv2/kimi.gateway.chat.v1.ChatService/ListChats", list_chats),
        web.post("/apiv2/kimi.gateway.config.v1.ConfigService/GetAvailableModels", get_available_models),
        web.post("/apiv2/kimi.gateway.account.v1.UserService/GetCurrentUser", get_current_user),
        web.post("/apiv2/kimi.gateway.order.v1.SubscriptionService/GetSubscription", get_subscription),
        web.post("/api/account.gateway.v1.AuthService/RefreshToken", refresh_token),
    ]
