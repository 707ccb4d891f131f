"""The Kimi simulator's control API (`/__sim/`), its request log, its Python API and its command line."""

from __future__ import annotations

import asyncio
import base64
import json
import socket
import struct
import sys
from collections.abc import AsyncIterator

import aiohttp
import pytest

from kimi_sim.answers import answer_for, last_line, split_chunks
from kimi_sim.server import SimServer
from kimi_sim.tokens import decode_claims, mint_jwt, new_xid


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def test_tokens_round_trip_and_ids_are_xid_shaped() -> None:
    """mint_jwt/decode_claims round-trip claims with an HS512 header; new_xid gives 20 chars of [0-9a-v]."""
    token = mint_jwt({"sub": "abc", "exp": 1})
    assert decode_claims(token) == {"sub": "abc", "exp": 1}
    assert json.loads(base64.urlsafe_b64decode(token.split(".")[0] + "==")) == {
        "alg": "HS512",
        "typ": "JWT",
    }
    with pytest.raises(ValueError):
        decode_claims("a.b")
    ids = {new_xid() for _ in range(50)}
    assert len(ids) == 50 and all(
        len(i) == 20 and set(i) <= set("0123456789abcdefghijklmnopqrstuv") for i in ids
    )


def test_answers_are_deterministic_and_chunked_on_characters() -> None:
    """answer_for quotes the last line; split_chunks cuts into n near-equal non-empty pieces."""
    assert answer_for("a\n  b c \n\n") == "你好！You said: b c. 这是模拟回答。"
    assert last_line("") == ""
    assert split_chunks("你好世界!", 2) == ["你好世", "界!"]
    assert split_chunks("ab", 5) == ["a", "b"]
    assert split_chunks("", 3) == []


async def test_accounts_route_mints_tokens(http: aiohttp.ClientSession, kimi_sim: SimServer) -> None:
    """POST /__sim/accounts mints a refresh or kimi-auth account with the requested expiry."""
    async with http.post(
        f"{kimi_sim.url}/__sim/accounts", json={"kind": "kimi_auth", "exp_in_s": 60}
    ) as resp:
        account = await resp.json()
    claims = decode_claims(account["token"])
    assert (
        account["kind"] == "kimi_auth" and claims["sub"] == account["sub"] and claims["exp"] == account["exp"]
    )
    assert claims["typ"] == "access" and claims["app_id"] == "kimi" and claims["exp"] - claims["iat"] == 60
    assert (
        len(claims["device_id"]) == 19 and len(claims["ssid"]) == 19 and claims["membership"] == {"level": 10}
    )
    async with http.post(f"{kimi_sim.url}/__sim/accounts", json={"kind": "refresh_token"}) as resp:
        assert decode_claims((await resp.json())["token"])["typ"] == "refresh"
    async with http.post(f"{kimi_sim.url}/__sim/accounts", json={"kind": "nope"}) as resp:
        assert resp.status == 400


async def test_revoke_makes_every_token_invalid(http: aiohttp.ClientSession, kimi_sim: SimServer) -> None:
    """After POST /__sim/accounts/{sub}/revoke the account's tokens get 401."""
    account = kimi_sim.state.add_account("kimi_auth")
    async with http.post(f"{kimi_sim.url}/__sim/accounts/{account.sub}/revoke") as resp:
        assert resp.status == 200
    async with http.get(
        f"{kimi_sim.url}/api/user", headers={"Authorization": f"Bearer {account.token}"}
    ) as resp:
        assert resp.status == 401


async def test_agents_route_registers_kimiplus_ids(http: aiohttp.ClientSession, kimi_sim: SimServer) -> None:
    """A Kimi+ id registered through /__sim/agents can create chats."""
    account = kimi_sim.state.add_account("kimi_auth")
    agent = new_xid()
    async with http.post(f"{kimi_sim.url}/__sim/agents", json={"id": agent}) as resp:
        assert resp.status == 200
    headers = {"Authorization": f"Bearer {account.token}"}
    async with http.post(f"{kimi_sim.url}/api/chat", json={"kimiplus_id": agent}, headers=headers) as resp:
        assert resp.status == 200


async def test_faults_arm_list_consume_and_disarm(http: aiohttp.ClientSession, kimi_sim: SimServer) -> None:
    """Faults armed over HTTP are listed, consumed per matching call, cleared by DELETE; unknown names 400."""
    url = f"{kimi_sim.url}/__sim/faults"
    async with http.post(url, json={"name": "http_500", "count": 2, "path": "/api/user"}) as resp:
        assert await resp.json() == {"armed": "http_500"}
    async with http.get(url) as resp:
        assert await resp.json() == [{"name": "http_500", "remaining": 2, "path": "/api/user"}]
    async with http.get(f"{kimi_sim.url}/api/chat_1m/user/status") as resp:
        assert resp.status == 401
    async with http.get(f"{kimi_sim.url}/api/user") as resp:
        assert resp.status == 500
    async with http.get(url) as resp:
        assert (await resp.json())[0]["remaining"] == 1
    async with http.delete(url) as resp:
        assert resp.status == 200
    async with http.get(url) as resp:
        assert await resp.json() == []
    async with http.post(url, json={"name": "no_such_fault"}) as resp:
        assert resp.status == 400


async def test_request_log_records_calls_with_decoded_bodies(
    http: aiohttp.ClientSession, kimi_sim: SimServer
) -> None:
    """The log keeps method, path, query, headers and the parsed body (Connect envelopes decoded)."""
    account = kimi_sim.state.add_account("kimi_auth")
    request = {"message": {"blocks": [{"text": {"content": "hi"}}]}}
    payload = json.dumps(request).encode()
    headers = {"Authorization": f"Bearer {account.token}", "Content-Type": "application/connect+json"}
    async with http.post(
        f"{kimi_sim.url}/apiv2/kimi.gateway.chat.v1.ChatService/Chat?x=1",
        data=struct.pack(">BI", 0, len(payload)) + payload,
        headers=headers,
    ) as resp:
        await resp.read()
    async with http.post(f"{kimi_sim.url}/api/chat", json={"kimiplus_id": "kimi"}, headers=headers) as resp:
        await resp.read()
    async with http.get(f"{kimi_sim.url}/__sim/requests", params={"path": "ChatService"}) as resp:
        logged = await resp.json()
    assert len(logged) == 1
    assert logged[0]["method"] == "POST" and logged[0]["query"] == {"x": "1"} and logged[0]["body"] == request
    assert logged[0]["headers"]["Authorization"] == f"Bearer {account.token}"
    async with http.get(f"{kimi_sim.url}/__sim/requests") as resp:
        assert [r["path"] for r in await resp.json()] == [
            "/apiv2/kimi.gateway.chat.v1.ChatService/Chat",
            "/api/chat",
        ]
    async with http.delete(f"{kimi_sim.url}/__sim/requests") as resp:
        assert resp.status == 200
    assert list(kimi_sim.state.requests) == []


async def test_config_route_changes_behaviour(http: aiohttp.ClientSession, kimi_sim: SimServer) -> None:
    """POST /__sim/config changes fields at run time (chunk_count here); bad fields or types are 400."""
    async with http.post(f"{kimi_sim.url}/__sim/config", json={"chunk_count": 2, "chunk_delay_s": 0}) as resp:
        assert (await resp.json())["chunk_count"] == 2
    assert kimi_sim.config.chunk_count == 2 and kimi_sim.config.chunk_delay_s == 0.0
    account = kimi_sim.state.add_account("kimi_auth")
    headers = {"Authorization": f"Bearer {account.token}"}
    chat_id = kimi_sim.state.new_chat(account.sub, "rest").id
    body = {"messages": [{"role": "user", "content": "hey"}]}
    async with http.post(
        f"{kimi_sim.url}/api/chat/{chat_id}/completion/stream", json=body, headers=headers
    ) as resp:
        raw = await resp.read()
    assert raw.count(b'"event":"cmpl"') == 2
    for bad in ({"nope": 1}, {"chunk_count": "3"}, {"rotate_refresh_tokens": 1}):
        async with http.post(f"{kimi_sim.url}/__sim/config", json=bad) as resp:
            assert resp.status == 400
    async with http.get(f"{kimi_sim.url}/__sim/config") as resp:
        assert (await resp.json())["chunk_count"] == 2


async def test_state_and_reset(http: aiohttp.ClientSession, kimi_sim: SimServer) -> None:
    """/__sim/state shows chats, deleted chats and streams; /__sim/reset forgets everything."""
    account = kimi_sim.state.add_account("kimi_auth")
    headers = {"Authorization": f"Bearer {account.token}"}
    kept = kimi_sim.state.new_chat(account.sub, "rest").id
    gone = kimi_sim.state.new_chat(account.sub, "rest").id
    async with http.delete(f"{kimi_sim.url}/api/chat/{gone}", headers=headers):
        pass
    body = {"messages": [{"role": "user", "content": "hey"}]}
    async with http.post(
        f"{kimi_sim.url}/api/chat/{kept}/completion/stream", json=body, headers=headers
    ) as resp:
        await resp.read()
    async with http.get(f"{kimi_sim.url}/__sim/state") as resp:
        state = await resp.json()
    assert list(state["chats"]) == [kept] and state["deleted_chats"] == [gone]
    assert [m["role"] for m in state["chats"][kept]["messages"]] == ["user", "assistant"]
    assert state["streams"] == [
        {
            "id": state["streams"][0]["id"],
            "protocol": "rest",
            "chat_id": kept,
            "path": f"/api/chat/{kept}/completion/stream",
            "user": account.sub,
            "status": "completed",
        }
    ]
    kimi_sim.state.faults.arm("http_500")
    async with http.post(f"{kimi_sim.url}/__sim/reset") as resp:
        assert resp.status == 200
    async with http.get(f"{kimi_sim.url}/api/user", headers=headers) as resp:
        assert resp.status == 401
    assert kimi_sim.state.faults.armed() == [] and kimi_sim.state.chats == {}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_command_line_prints_demo_accounts_and_serves(http: aiohttp.ClientSession) -> None:
    """`python -m kimi_sim --demo-account` prints two account JSON lines and serves them."""
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "kimi_sim",
        "--port",
        str(port),
        "--demo-account",
        "--chunks",
        "1",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None and proc.stderr is not None
        lines = [json.loads(await asyncio.wait_for(proc.stdout.readline(), 10)) for _ in range(2)]
        assert [a["kind"] for a in lines] == ["refresh_token", "kimi_auth"]
        await asyncio.wait_for(proc.stderr.readline(), 10)
        for _ in range(100):
            try:
                async with http.get(
                    f"http://127.0.0.1:{port}/api/user",
                    headers={"Authorization": f"Bearer {lines[1]['token']}"},
                ) as resp:
                    assert (await resp.json())["id"] == lines[1]["sub"]
                    break
            except aiohttp.ClientConnectionError:
                await asyncio.sleep(0.05)
        else:
            raise AssertionError("the simulator never answered")
        async with http.get(f"http://127.0.0.1:{port}/__sim/config") as resp:
            assert (await resp.json())["chunk_count"] == 1
    finally:
        proc.terminate()
        await proc.wait()
