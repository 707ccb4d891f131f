"""The Kimi simulator's Connect surface (`/apiv2/...`), checked byte for byte with a tiny envelope decoder."""

from __future__ import annotations

import asyncio
import json
import struct
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from kimi_sim.answers import answer_for, reasoning_for, search_results_for, split_chunks, title_for
from kimi_sim.server import SimServer
from tests.sim_fixtures import SimFactory

CHAT = "/apiv2/kimi.gateway.chat.v1.ChatService/Chat"
CONNECT = {"Content-Type": "application/connect+json", "Connect-Protocol-Version": "1"}
UNAUTHENTICATED = {
    "code": "unauthenticated",
    "message": "Invalid auth token",
    "details": [
        {
            "type": "kimi.gateway.ErrorDetail",
            "debug": {
                "reason": "REASON_INVALID_AUTH_TOKEN",
                "localizedMessage": {"locale": "en-US", "message": "Invalid auth token"},
            },
        }
    ],
}


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def envelope(message: Any, flag: int = 0) -> bytes:
    payload = json.dumps(message).encode()
    return struct.pack(">BI", flag, len(payload)) + payload


def frames(raw: bytes) -> list[tuple[int, bytes]]:
    """(flag, payload) of each envelope; the body must be whole envelopes."""
    out, offset = [], 0
    while offset < len(raw):
        flag, length = struct.unpack_from(">BI", raw, offset)
        out.append((flag, raw[offset + 5 : offset + 5 + length]))
        offset += 5 + length
    assert offset == len(raw)
    return out


def events(raw: bytes) -> list[dict[str, Any]]:
    """The JSON data events, heartbeats included, skipping undecodable ones; the trailer excluded."""
    out = []
    for flag, payload in frames(raw):
        if flag == 0:
            try:
                out.append(json.loads(payload))
            except json.JSONDecodeError:
                continue
    return out


def trailer(raw: bytes) -> dict[str, Any]:
    flag, payload = frames(raw)[-1]
    assert flag == 2
    return dict(json.loads(payload))


def text_of(evs: list[dict[str, Any]], kind: str = "text") -> str:
    return "".join(e["block"][kind]["content"] for e in evs if kind in e.get("block", {}))


def chat_request(prompt: str = "Hello", **extra: Any) -> dict[str, Any]:
    message = {
        "parent_id": "",
        "role": "user",
        "blocks": [{"message_id": "", "text": {"content": prompt}}],
        "scenario": "SCENARIO_K2D5",
    }
    return {
        "scenario": "SCENARIO_K2D5",
        "chat_id": "",
        "tools": [],
        "message": message,
        "options": {"thinking": False},
    } | extra


async def chat(
    http: aiohttp.ClientSession, sim: SimServer, token: str, body: Any, headers: dict[str, str] | None = None
) -> tuple[int, bytes]:
    data = body if isinstance(body, bytes) else envelope(body)
    all_headers = CONNECT | {"Authorization": f"Bearer {token}"} | (headers or {})
    async with http.post(sim.url + CHAT, data=data, headers=all_headers) as resp:
        return resp.status, await resp.read()


async def unary(
    http: aiohttp.ClientSession, sim: SimServer, method: str, token: str | None, body: Any
) -> tuple[int, Any]:
    headers = {"Connect-Protocol-Version": "1"} | ({"Authorization": f"Bearer {token}"} if token else {})
    async with http.post(f"{sim.url}/apiv2/{method}", json=body, headers=headers) as resp:
        return resp.status, await resp.json()


async def test_chat_frames_match_the_byte_vectors(http: aiohttp.ClientSession, kimi_sim: SimServer) -> None:
    """The stream opens with heartbeat frame 00 00 00 00 10 and ends with 02 00 00 00 02 {}."""
    token = kimi_sim.state.add_account("kimi_auth").token
    async with http.post(
        kimi_sim.url + CHAT,
        data=envelope(chat_request()),
        headers=CONNECT | {"Authorization": f"Bearer {token}"},
    ) as resp:
        assert resp.status == 200 and resp.headers["Content-Type"] == "application/connect+json"
        raw = await resp.read()
    assert raw.startswith(b'\x00\x00\x00\x00\x10{"heartbeat":{}}')
    assert raw.endswith(b"\x02\x00\x00\x00\x02{}")


async def test_chat_event_script_for_a_new_chat(http: aiohttp.ClientSession, kimi_sim: SimServer) -> None:
    """A new chat streams chat, user and assistant messages, text set+appends, name, COMPLETED, done, {}."""
    token = kimi_sim.state.add_account("kimi_auth").token
    status, raw = await chat(http, kimi_sim, token, chat_request())
    evs = events(raw)
    assert status == 200
    assert [(e.get("op"), e.get("mask"), e.get("eventOffset")) for e in evs] == [
        (None, None, None),
        ("set", None, 1),
        ("set", "message", 2),
        ("set", "message", 3),
        ("set", "block.text", 4),
        ("append", "block.text.content", 5),
        ("append", "block.text.content", 6),
        ("append", "block.text.content", 7),
        ("set", "chat.name", 8),
        ("set", "message.status", 9),
        (None, None, 10),
    ]
    chat_event, user, assistant = evs[1]["chat"], evs[2]["message"], evs[3]["message"]
    assert chat_event["name"] == "Untitled Chat" and chat_event["id"] in kimi_sim.state.chats
    assert user["role"] == "user" and user["status"] == "MESSAGE_STATUS_COMPLETED"
    assert user["blocks"] == [{"id": "text_0_0", "text": {"content": "Hello"}}]
    assert assistant["parentId"] == user["id"] and assistant["status"] == "MESSAGE_STATUS_GENERATING"
    assert [e["block"]["text"]["content"] for e in evs[4:8]] == split_chunks(answer_for("Hello"), 4)
    assert evs[8]["chat"] == {"id": chat_event["id"], "name": title_for("Hello")}
    assert evs[9]["message"] == {"id": assistant["id"], "status": "MESSAGE_STATUS_COMPLETED"}
    assert evs[10] == {"eventOffset": 10, "done": {}}
    assert trailer(raw) == {}


async def test_chat_with_search_and_thinking(http: aiohttp.ClientSession, kimi_sim: SimServer) -> None:
    """TOOL_TYPE_SEARCH adds keywords and webPages; options.thinking adds block.think before the text."""
    token = kimi_sim.state.add_account("kimi_auth").token
    body = chat_request(tools=[{"type": "TOOL_TYPE_SEARCH", "search": {}}], options={"thinking": True})
    _, raw = await chat(http, kimi_sim, token, body)
    evs = events(raw)
    masks = [e.get("mask") for e in evs]
    assert masks.index("block.search.keywords") < masks.index("block.think") < masks.index("block.text")
    pages = [e["block"]["search"]["webPages"][0] for e in evs if e.get("mask") == "block.search.webPages"]
    assert [(p["title"], p["url"], p["siteName"]) for p in pages] == [
        (r["title"], r["url"], r["site_name"]) for r in search_results_for("Hello")
    ]
    assert text_of(evs, "think") == reasoning_for("Hello")
    assert text_of(evs) == answer_for("Hello")


async def test_chat_continuation_accepts_camel_case(http: aiohttp.ClientSession, kimi_sim: SimServer) -> None:
    """chatId/parentId continue a chat: no chat event, the parent id is echoed, the chat keeps both turns."""
    token = kimi_sim.state.add_account("kimi_auth").token
    _, raw = await chat(http, kimi_sim, token, chat_request())
    first = events(raw)
    chat_id, assistant_id = first[1]["chat"]["id"], first[3]["message"]["id"]
    message = {"parentId": assistant_id, "role": "user", "blocks": [{"text": {"content": "And then?"}}]}
    _, raw = await chat(
        http, kimi_sim, token, {"scenario": "SCENARIO_K2D5", "chatId": chat_id, "message": message}
    )
    second = events(raw)
    assert "chat" not in second[1] and second[1]["eventOffset"] == 1
    assert second[1]["message"]["parentId"] == assistant_id
    assert text_of(second) == answer_for("And then?")
    assert [m["role"] for m in kimi_sim.state.chats[chat_id].messages] == ["user", "assistant"] * 2


async def test_ok_computer_streams_a_tool_lifecycle(http: aiohttp.ClientSession, kimi_sim: SimServer) -> None:
    """SCENARIO_OK_COMPUTER adds block.tool PENDING → args appends → RUNNING → DONE before the text."""
    token = kimi_sim.state.add_account("kimi_auth").token
    body = chat_request(scenario="SCENARIO_OK_COMPUTER", kimiplusId="ok-computer", agentMode="TYPE_NORMAL")
    _, raw = await chat(http, kimi_sim, token, body)
    tools = [e for e in events(raw) if "tool" in e.get("block", {})]
    assert [(e["op"], e.get("mask")) for e in tools] == [
        ("set", None),
        ("append", "block.tool.args"),
        ("append", "block.tool.args"),
        ("set", "block.tool.args,block.tool.status,block.tool.toolCallId"),
        ("set", "block.tool.contents,block.tool.status"),
    ]
    assert tools[0]["block"]["tool"]["status"] == "STATUS_PENDING"
    args = tools[1]["block"]["tool"]["args"] + tools[2]["block"]["tool"]["args"]
    assert json.loads(args) == {"query": "Hello"} and tools[3]["block"]["tool"]["args"] == args
    assert tools[4]["block"]["tool"]["status"] == "STATUS_DONE"
    assert text_of(events(raw)) == answer_for("Hello")


async def test_chat_rejects_bad_tokens_with_http_401(
    http: aiohttp.ClientSession, kimi_sim: SimServer
) -> None:
    """Missing, malformed, expired and refresh-typed tokens get HTTP 401 with the §3.7a body."""
    expired = kimi_sim.state.add_account("kimi_auth", exp_in_s=-1).token
    refresh = kimi_sim.state.add_account("refresh_token").token
    for token in ("", "not-a-jwt", expired, refresh):
        status, raw = await chat(http, kimi_sim, token, chat_request())
        assert status == 401 and json.loads(raw) == UNAUTHENTICATED


async def test_access_token_from_a_refresh_works_on_connect(
    http: aiohttp.ClientSession, kimi_sim: SimServer
) -> None:
    """An access token from the REST refresh call is accepted by Chat like a kimi-auth JWT."""
    account = kimi_sim.state.add_account("refresh_token")
    async with http.get(
        f"{kimi_sim.url}/api/auth/token/refresh", headers={"Authorization": f"Bearer {account.token}"}
    ) as resp:
        access = (await resp.json())["access_token"]
    status, raw = await chat(http, kimi_sim, access, chat_request())
    assert status == 200 and trailer(raw) == {}


async def test_chat_framing_errors_are_invalid_argument(
    http: aiohttp.ClientSession, kimi_sim: SimServer
) -> None:
    """Plain JSON, a wrong content type, two envelopes, no message or no text → flag-2 invalid_argument."""
    token = kimi_sim.state.add_account("kimi_auth").token
    plain = json.dumps(chat_request()).encode()
    cases: list[tuple[Any, dict[str, str]]] = [
        (plain, {}),
        (envelope(chat_request()), {"Content-Type": "application/json"}),
        (envelope(chat_request()) * 2, {}),
        (envelope({"scenario": "SCENARIO_K2D5"}), {}),
        (envelope(chat_request("   ")), {}),
    ]
    for body, headers in cases:
        status, raw = await chat(http, kimi_sim, token, body, headers)
        assert status == 200 and len(frames(raw)) == 1
        assert trailer(raw)["error"]["code"] == "invalid_argument"


async def test_unknown_chat_id_is_not_found(http: aiohttp.ClientSession, kimi_sim: SimServer) -> None:
    """A chat_id the user does not own answers a flag-2 not_found trailer."""
    token = kimi_sim.state.add_account("kimi_auth").token
    _, raw = await chat(http, kimi_sim, token, chat_request(chat_id="d3rglnb12h610c3cc300"))
    assert trailer(raw)["error"]["code"] == "not_found"


async def test_second_concurrent_stream_is_resource_exhausted(
    http: aiohttp.ClientSession, kimi_sim_factory: SimFactory
) -> None:
    """While a user streams, a second Chat gets flag-2 resource_exhausted with REASON_USER_STREAM_PUSHING."""
    sim = await kimi_sim_factory(chunk_delay_s=0.05, chunk_count=8)
    token = sim.state.add_account("kimi_auth").token
    headers = CONNECT | {"Authorization": f"Bearer {token}"}
    async with http.post(sim.url + CHAT, data=envelope(chat_request()), headers=headers) as running:
        await running.content.readexactly(21)
        _, raw = await chat(http, sim, token, chat_request())
        error = trailer(raw)["error"]
        assert error["code"] == "resource_exhausted"
        assert error["details"][0]["debug"]["reason"] == "REASON_USER_STREAM_PUSHING"
        await running.read()


async def test_resource_exhausted_fault_sends_heartbeats_then_trailer(
    http: aiohttp.ClientSession, kimi_sim: SimServer
) -> None:
    """resource_exhausted answers HTTP 200, `heartbeats` heartbeat frames, then the overload trailer."""
    token = kimi_sim.state.add_account("kimi_auth").token
    kimi_sim.state.faults.arm("resource_exhausted", heartbeats=2)
    status, raw = await chat(http, kimi_sim, token, chat_request())
    assert status == 200 and events(raw) == [{"heartbeat": {}}] * 2
    debug = trailer(raw)["error"]["details"][0]["debug"]
    assert debug["reason"] == "REASON_SERVER_OVERLOADED_FOR_FREE_USER"
    assert debug["localizedMessage"]["message"].startswith("Too many people are chatting with Kimi")
    assert kimi_sim.state.streams[-1].status == "error"


async def test_paywall_and_unauthenticated_trailers(http: aiohttp.ClientSession, kimi_sim: SimServer) -> None:
    """paywall sends resource_exhausted with debug.paywall; unauthenticated_trailer sends unauthenticated."""
    token = kimi_sim.state.add_account("kimi_auth").token
    kimi_sim.state.faults.arm("paywall")
    _, raw = await chat(http, kimi_sim, token, chat_request())
    error = trailer(raw)["error"]
    assert error["code"] == "resource_exhausted" and "paywall" in error["details"][0]["debug"]
    kimi_sim.state.faults.arm("unauthenticated_trailer")
    status, raw = await chat(http, kimi_sim, token, chat_request())
    assert status == 200 and trailer(raw)["error"]["code"] == "unauthenticated"


async def test_done_then_error(http: aiohttp.ClientSession, kimi_sim: SimServer) -> None:
    """done_then_error streams the whole reply through done, then an error trailer instead of {}."""
    token = kimi_sim.state.add_account("kimi_auth").token
    kimi_sim.state.faults.arm("done_then_error", code="unavailable")
    _, raw = await chat(http, kimi_sim, token, chat_request())
    evs = events(raw)
    assert "done" in evs[-1] and text_of(evs) == answer_for("Hello")
    assert trailer(raw)["error"]["code"] == "unavailable"


async def test_cut_mid_stream_has_no_end_frame(http: aiohttp.ClientSession, kimi_sim: SimServer) -> None:
    """cut_mid_stream ends the body after `after_chunks` text frames with no flag-2 frame."""
    token = kimi_sim.state.add_account("kimi_auth").token
    kimi_sim.state.faults.arm("cut_mid_stream", after_chunks=2)
    _, raw = await chat(http, kimi_sim, token, chat_request())
    assert all(flag == 0 for flag, _ in frames(raw))
    assert text_of(events(raw)) == "".join(split_chunks(answer_for("Hello"), 4)[:2])
    assert kimi_sim.state.streams[-1].status == "cut"


async def test_malformed_frame_is_skippable(http: aiohttp.ClientSession, kimi_sim: SimServer) -> None:
    """malformed_event inserts one flag-0 frame of truncated JSON; skipping it yields the normal text."""
    token = kimi_sim.state.add_account("kimi_auth").token
    kimi_sim.state.faults.arm("malformed_event")
    _, raw = await chat(http, kimi_sim, token, chat_request())
    assert (0, b'{"op":"append","mask":') in frames(raw)
    assert text_of(events(raw)) == answer_for("Hello") and trailer(raw) == {}


async def test_quota_and_stream_pushing_faults(http: aiohttp.ClientSession, kimi_sim: SimServer) -> None:
    """quota_exhausted and user_stream_pushing answer resource_exhausted trailers with their reasons."""
    token = kimi_sim.state.add_account("kimi_auth").token
    kimi_sim.state.faults.arm("quota_exhausted")
    _, raw = await chat(http, kimi_sim, token, chat_request())
    assert trailer(raw)["error"]["details"][0]["debug"]["reason"] == "REASON_LONG_TEXT_QUOTA_EXCEEDED"
    kimi_sim.state.faults.arm("user_stream_pushing")
    _, raw = await chat(http, kimi_sim, token, chat_request())
    assert trailer(raw)["error"]["details"][0]["debug"]["reason"] == "REASON_USER_STREAM_PUSHING"


async def test_stall_mid_stream_sends_heartbeats(
    http: aiohttp.ClientSession, kimi_sim_factory: SimFactory
) -> None:
    """While stalling, a heartbeat goes out every heartbeat_interval_s and the reply then completes."""
    sim = await kimi_sim_factory(heartbeat_interval_s=0.05)
    token = sim.state.add_account("kimi_auth").token
    sim.state.faults.arm("stall_mid_stream", seconds=0.3)
    _, raw = await chat(http, sim, token, chat_request())
    evs = events(raw)
    beats = [i for i, e in enumerate(evs) if e == {"heartbeat": {}}]
    assert len(beats) >= 4 and beats[1] > 3
    assert text_of(evs) == answer_for("Hello") and trailer(raw) == {}


async def test_split_utf8_on_connect(http: aiohttp.ClientSession, kimi_sim: SimServer) -> None:
    """split_utf8 cuts frames inside a multi-byte character; the reassembled frames are intact."""
    token = kimi_sim.state.add_account("kimi_auth").token
    kimi_sim.state.faults.arm("split_utf8", pause_s=0.02)
    async with http.post(
        kimi_sim.url + CHAT,
        data=envelope(chat_request()),
        headers=CONNECT | {"Authorization": f"Bearer {token}"},
    ) as resp:
        pieces = [piece async for piece in resp.content.iter_any()]
    assert any(p[-1] >= 0x80 and not p.endswith("。".encode()) for p in pieces if p)
    assert text_of(events(b"".join(pieces))) == answer_for("Hello")


async def test_delete_chat_in_both_packages(http: aiohttp.ClientSession, kimi_sim: SimServer) -> None:
    """DeleteChat takes chat_id or chatId, answers {}, then 404 not_found; REST chats can be deleted too."""
    account = kimi_sim.state.add_account("kimi_auth")
    first = kimi_sim.state.new_chat(account.sub, "connect").id
    second = kimi_sim.state.new_chat(account.sub, "rest").id
    assert await unary(
        http, kimi_sim, "kimi.chat.v1.ChatService/DeleteChat", account.token, {"chat_id": first}
    ) == (200, {})
    assert await unary(
        http, kimi_sim, "kimi.gateway.chat.v1.ChatService/DeleteChat", account.token, {"chatId": second}
    ) == (200, {})
    status, body = await unary(
        http, kimi_sim, "kimi.chat.v1.ChatService/DeleteChat", account.token, {"chat_id": first}
    )
    assert status == 404 and body["code"] == "not_found"
    assert kimi_sim.state.deleted_chats == [first, second]


async def test_list_chats_paginates(http: aiohttp.ClientSession, kimi_sim: SimServer) -> None:
    """ListChats pages newest-first with an opaque base64 nextPageToken, empty on the last page."""
    account = kimi_sim.state.add_account("kimi_auth")
    ids = [kimi_sim.state.new_chat(account.sub, "connect").id for _ in range(3)]
    status, page = await unary(
        http, kimi_sim, "kimi.chat.v1.ChatService/ListChats", account.token, {"page_size": 2}
    )
    assert status == 200 and [c["id"] for c in page["chats"]] == ids[::-1][:2] and page["nextPageToken"]
    assert set(page["chats"][0]) == {"id", "name", "messageContent", "createTime", "updateTime"}
    body = {"pageSize": 2, "pageToken": page["nextPageToken"]}
    _, rest = await unary(http, kimi_sim, "kimi.gateway.chat.v1.ChatService/ListChats", account.token, body)
    assert [c["id"] for c in rest["chats"]] == ids[:1] and rest["nextPageToken"] == ""


async def test_account_and_config_calls(http: aiohttp.ClientSession, kimi_sim: SimServer) -> None:
    """GetAvailableModels lists the K2.5 lanes; GetCurrentUser and GetSubscription answer the token's user."""
    account = kimi_sim.state.add_account("kimi_auth")
    _, models = await unary(
        http, kimi_sim, "kimi.gateway.config.v1.ConfigService/GetAvailableModels", account.token, {}
    )
    assert {m["scenario"] for m in models["availableModels"]} == {"SCENARIO_K2D5", "SCENARIO_OK_COMPUTER"}
    _, user = await unary(
        http, kimi_sim, "kimi.gateway.account.v1.UserService/GetCurrentUser", account.token, {}
    )
    assert user["user"]["id"] == account.sub
    _, sub = await unary(
        http, kimi_sim, "kimi.gateway.order.v1.SubscriptionService/GetSubscription", account.token, {}
    )
    assert sub["subscription"]["userId"] == account.sub
    status, body = await unary(http, kimi_sim, "kimi.gateway.account.v1.UserService/GetCurrentUser", None, {})
    assert status == 401 and body == UNAUTHENTICATED


async def test_refresh_token_rpc_accepts_both_spellings(
    http: aiohttp.ClientSession, kimi_sim: SimServer
) -> None:
    """AuthService/RefreshToken takes refresh_token or refreshToken and answers accessToken/refreshToken."""
    account = kimi_sim.state.add_account("refresh_token")
    url = f"{kimi_sim.url}/api/account.gateway.v1.AuthService/RefreshToken"
    for body in ({"refresh_token": account.token}, {"refreshToken": account.token}):
        async with http.post(url, json=body) as resp:
            tokens = await resp.json()
        assert resp.status == 200 and set(tokens) == {"accessToken", "refreshToken"}
    async with http.post(url, json={"refresh_token": "bad"}) as resp:
        assert resp.status == 401 and (await resp.json())["code"] == "unauthenticated"


async def test_connect_http_faults_use_connect_bodies(
    http: aiohttp.ClientSession, kimi_sim: SimServer
) -> None:
    """http_401/429/500 on /apiv2 paths answer Connect error JSON with the matching code."""
    token = kimi_sim.state.add_account("kimi_auth").token
    for name, status, code in (
        ("http_401", 401, "unauthenticated"),
        ("http_429", 429, "resource_exhausted"),
        ("http_500", 500, "internal"),
    ):
        kimi_sim.state.faults.arm(name, path="ChatService/Chat")
        got, raw = await chat(http, kimi_sim, token, chat_request())
        assert got == status and json.loads(raw)["code"] == code


async def test_client_closing_connect_stream_is_detected(
    http: aiohttp.ClientSession, kimi_sim_factory: SimFactory
) -> None:
    """A client that leaves during a stall is noticed (status client_closed) without waiting for the stall."""
    sim = await kimi_sim_factory(heartbeat_interval_s=0.05)
    token = sim.state.add_account("kimi_auth").token
    sim.state.faults.arm("stall_mid_stream", seconds=5)
    resp = await http.post(
        sim.url + CHAT, data=envelope(chat_request()), headers=CONNECT | {"Authorization": f"Bearer {token}"}
    )
    await resp.content.readexactly(21)
    resp.close()
    for _ in range(40):
        if sim.state.streams[-1].status != "running":
            break
        await asyncio.sleep(0.025)
    assert sim.state.streams[-1].status == "client_closed"
