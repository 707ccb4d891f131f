"""The Kimi simulator's REST surface (`/api/...`), exercised over real HTTP with a plain aiohttp client."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from kimi_sim.answers import answer_for, reasoning_for, search_results_for, split_chunks, title_for
from kimi_sim.server import SimServer
from kimi_sim.tokens import decode_claims
from tests.sim_fixtures import SimFactory

K1 = "crm40ee9e5jvhsn7ptcg"
AUTH_INVALID = {"error_type": "auth.token.invalid", "message": "您的授权已过期，请重新登录"}


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def sse_events(raw: bytes) -> list[dict[str, Any]]:
    """The JSON of every `data:` line (lines that are not JSON are skipped, as a robust client does)."""
    events = []
    for line in raw.decode("utf-8").split("\n"):
        if line.startswith("data: "):
            try:
                events.append(json.loads(line[6:]))
            except json.JSONDecodeError:
                continue
    return events


def cmpl_text(events: list[dict[str, Any]]) -> str:
    return "".join(e["text"] for e in events if e["event"] == "cmpl")


async def login(http: aiohttp.ClientSession, sim: SimServer) -> dict[str, str]:
    """Headers carrying a fresh access token of a new refresh_token account."""
    account = sim.state.add_account("refresh_token")
    async with http.get(f"{sim.url}/api/auth/token/refresh", headers=bearer(account.token)) as resp:
        tokens = await resp.json()
    return bearer(tokens["access_token"])


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def new_chat(http: aiohttp.ClientSession, sim: SimServer, headers: dict[str, str]) -> str:
    async with http.post(f"{sim.url}/api/chat", json={"kimiplus_id": "kimi"}, headers=headers) as resp:
        assert resp.status == 200
        return str((await resp.json())["id"])


async def complete(
    http: aiohttp.ClientSession, sim: SimServer, headers: dict[str, str], chat_id: str, **body: Any
) -> tuple[int, bytes]:
    payload = {"messages": [{"role": "user", "content": "1+1=?"}], "refs": [], "use_search": False} | body
    url = f"{sim.url}/api/chat/{chat_id}/completion/stream"
    async with http.post(url, json=payload, headers=headers) as resp:
        return resp.status, await resp.read()


async def test_refresh_returns_access_and_refresh_tokens_with_documented_claims(
    http: aiohttp.ClientSession, kimi_sim: SimServer
) -> None:
    """The refresh call returns an access JWT (typ=access, app_id=kimi, 900 s) and a typ=refresh JWT."""
    account = kimi_sim.state.add_account("refresh_token")
    async with http.get(f"{kimi_sim.url}/api/auth/token/refresh", headers=bearer(account.token)) as resp:
        assert resp.status == 200
        tokens = await resp.json()
    access, refresh = decode_claims(tokens["access_token"]), decode_claims(tokens["refresh_token"])
    assert access["typ"] == "access" and access["app_id"] == "kimi" and access["sub"] == account.sub
    assert access["exp"] - access["iat"] == 900
    assert set(access) >= {
        "iss",
        "jti",
        "space_id",
        "abstract_user_id",
        "ssid",
        "device_id",
        "membership",
    }
    assert "region" not in access and "aud" not in access  # a China-region account of the older issuer
    assert refresh["typ"] == "refresh" and refresh["exp"] - refresh["iat"] == 90 * 86400
    assert set(refresh) == {"iss", "exp", "iat", "jti", "typ", "sub", "space_id", "abstract_user_id"}
    assert tokens["access_token"].split(".")[0] == "eyJhbGciOiJIUzUxMiIsInR5cCI6IkpXVCJ9"


async def test_refresh_accepts_the_original_token_repeatedly(
    http: aiohttp.ClientSession, kimi_sim: SimServer
) -> None:
    """Without rotation the original refresh token and the returned one both keep working."""
    account = kimi_sim.state.add_account("refresh_token")
    url = f"{kimi_sim.url}/api/auth/token/refresh"
    for _ in range(3):
        async with http.get(url, headers=bearer(account.token)) as resp:
            assert resp.status == 200
            returned = (await resp.json())["refresh_token"]
    async with http.get(url, headers=bearer(returned)) as resp:
        assert resp.status == 200


async def test_rotating_refresh_tokens_kill_the_old_one(
    http: aiohttp.ClientSession, kimi_sim_factory: SimFactory
) -> None:
    """With rotate_refresh_tokens the used refresh token answers 401 and the new one works."""
    sim = await kimi_sim_factory(rotate_refresh_tokens=True)
    account = sim.state.add_account("refresh_token")
    url = f"{sim.url}/api/auth/token/refresh"
    async with http.get(url, headers=bearer(account.token)) as resp:
        new = (await resp.json())["refresh_token"]
    async with http.get(url, headers=bearer(account.token)) as resp:
        assert resp.status == 401
        assert await resp.json() == AUTH_INVALID
    async with http.get(url, headers=bearer(new)) as resp:
        assert resp.status == 200


async def test_refresh_rejects_unknown_expired_and_access_tokens(
    http: aiohttp.ClientSession, kimi_sim: SimServer
) -> None:
    """Unknown, expired, access-typed or missing tokens get 401 auth.token.invalid with the exact message."""
    expired = kimi_sim.state.add_account("refresh_token", exp_in_s=-5)
    kimi_auth = kimi_sim.state.add_account("kimi_auth")
    url = f"{kimi_sim.url}/api/auth/token/refresh"
    for headers in (bearer("garbage"), bearer(expired.token), bearer(kimi_auth.token), {}):
        async with http.get(url, headers=headers) as resp:
            assert resp.status == 401
            assert (
                await resp.read()
                == json.dumps(AUTH_INVALID, ensure_ascii=False, separators=(",", ":")).encode()
            )


async def test_user_returns_sub_and_normal_status(http: aiohttp.ClientSession, kimi_sim: SimServer) -> None:
    """GET /api/user answers the token's sub with status normal, for access tokens and kimi-auth alike."""
    kimi_auth = kimi_sim.state.add_account("kimi_auth")
    async with http.get(f"{kimi_sim.url}/api/user", headers=bearer(kimi_auth.token)) as resp:
        body = await resp.json()
    assert body["id"] == kimi_auth.sub and body["status"] == "normal"


async def test_expired_access_token_is_rejected(
    http: aiohttp.ClientSession, kimi_sim_factory: SimFactory
) -> None:
    """An access token past its exp (access_ttl_s=0) gets 401 auth.token.invalid."""
    sim = await kimi_sim_factory(access_ttl_s=0)
    headers = await login(http, sim)
    async with http.get(f"{sim.url}/api/user", headers=headers) as resp:
        assert resp.status == 401
        assert await resp.json() == AUTH_INVALID


async def test_create_chat_validates_kimiplus_id(http: aiohttp.ClientSession, kimi_sim: SimServer) -> None:
    """kimi, K1 and registered agents create 20-char chats; other kimiplus ids get 找不到对应的KimiPlus."""
    headers = await login(http, kimi_sim)
    for kimiplus_id in ("kimi", K1, "coo6l3pkqq4ri39f36bg"):
        async with http.post(
            f"{kimi_sim.url}/api/chat", json={"kimiplus_id": kimiplus_id}, headers=headers
        ) as resp:
            body = await resp.json()
            assert (
                resp.status == 200
                and len(body["id"]) == 20
                and set(body["id"]) <= set("0123456789abcdefghijklmnopqrstuv")
            )
    async with http.post(f"{kimi_sim.url}/api/chat", json={"kimiplus_id": "None"}, headers=headers) as resp:
        assert resp.status == 400
        assert (await resp.json())["message"] == "找不到对应的KimiPlus"


async def test_completion_streams_the_documented_event_order(
    http: aiohttp.ClientSession, kimi_sim: SimServer
) -> None:
    """Completion streams req, resp, debug, zone_set, cmpl, done, cmpl…, chat_prompt, rename, all_done."""
    headers = await login(http, kimi_sim)
    chat_id = await new_chat(http, kimi_sim, headers)
    status, raw = await complete(http, kimi_sim, headers, chat_id)
    events = sse_events(raw)
    assert status == 200
    names = [e["event"] for e in events]
    assert names == [
        "req",
        "resp",
        "debug",
        "zone_set",
        "cmpl",
        "done",
        "cmpl",
        "cmpl",
        "cmpl",
        "chat_prompt",
        "rename",
        "all_done",
    ]
    assert events[0]["content"] == "1+1=?" and events[0]["refs"] == [] and len(events[0]["id"]) == 20
    assert events[0]["group_id"] == events[1]["group_id"]
    assert [e["text"] for e in events if e["event"] == "cmpl"] == split_chunks(answer_for("1+1=?"), 4)
    assert cmpl_text(events) == "你好！You said: 1+1=?. 这是模拟回答。"
    assert events[-2] == {"event": "rename", "text": title_for("1+1=?")}
    assert raw.endswith(b'data: {"event":"all_done"}\n\n')


async def test_completion_with_search_and_k1_emits_citations_and_reasoning(
    http: aiohttp.ClientSession, kimi_sim: SimServer
) -> None:
    """use_search adds search_plus start/get_res×2/answer and ref_docs; the K1 id adds k1 events first."""
    headers = await login(http, kimi_sim)
    chat_id = await new_chat(http, kimi_sim, headers)
    _, raw = await complete(http, kimi_sim, headers, chat_id, use_search=True, kimiplus_id=K1)
    events = sse_events(raw)
    search = [e["msg"] for e in events if e["event"] == "search_plus"]
    assert [m["type"] for m in search] == ["start", "get_res", "get_res", "answer"]
    results = search_results_for("1+1=?")
    assert [(m["title"], m["url"]) for m in search[1:3]] == [(r["title"], r["url"]) for r in results]
    assert "".join(e["text"] for e in events if e["event"] == "k1") == reasoning_for("1+1=?")
    names = [e["event"] for e in events]
    assert names.index("ref_docs") < names.index("k1") < names.index("cmpl")
    assert cmpl_text(events) == answer_for("1+1=?")


async def test_k1_data_shape_is_a_config_option(
    http: aiohttp.ClientSession, kimi_sim_factory: SimFactory
) -> None:
    """k1_event_shape="data" nests the reasoning text under data.text; model names containing k1 select K1."""
    sim = await kimi_sim_factory(k1_event_shape="data", chunk_count=1)
    headers = await login(http, sim)
    chat_id = await new_chat(http, sim, headers)
    _, raw = await complete(http, sim, headers, chat_id, model="k1")
    assert [e for e in sse_events(raw) if e["event"] == "k1"] == [
        {"event": "k1", "data": {"text": reasoning_for("1+1=?")}}
    ]


async def test_multi_message_prompt_is_joined_and_answer_uses_last_line(
    http: aiohttp.ClientSession, kimi_sim: SimServer
) -> None:
    """The prompt is every message's content joined by newlines; the answer quotes the last non-blank line."""
    headers = await login(http, kimi_sim)
    chat_id = await new_chat(http, kimi_sim, headers)
    messages = [{"role": "user", "content": "user:你好\nassistant:嗨\nuser:第二问\n"}]
    _, raw = await complete(http, kimi_sim, headers, chat_id, messages=messages)
    assert cmpl_text(sse_events(raw)) == "你好！You said: user:第二问. 这是模拟回答。"


async def test_unknown_or_deleted_chat_is_not_found(http: aiohttp.ClientSession, kimi_sim: SimServer) -> None:
    """Completion on an unknown or deleted chat is 404 chat.not_found; DELETE answers {} once, then 404."""
    headers = await login(http, kimi_sim)
    status, raw = await complete(http, kimi_sim, headers, "cnndivilnl96vah411dg")
    assert status == 404 and json.loads(raw) == {
        "error_type": "chat.not_found",
        "message": "找不到指定的会话",
    }
    chat_id = await new_chat(http, kimi_sim, headers)
    async with http.delete(f"{kimi_sim.url}/api/chat/{chat_id}", headers=headers) as resp:
        assert resp.status == 200 and await resp.json() == {}
    async with http.delete(f"{kimi_sim.url}/api/chat/{chat_id}", headers=headers) as resp:
        assert resp.status == 404
    status, _ = await complete(http, kimi_sim, headers, chat_id)
    assert status == 404
    assert chat_id in kimi_sim.state.deleted_chats


async def test_other_users_chat_is_not_found(http: aiohttp.ClientSession, kimi_sim: SimServer) -> None:
    """A chat belongs to its creator: another account gets 404 for it."""
    owner, stranger = await login(http, kimi_sim), await login(http, kimi_sim)
    chat_id = await new_chat(http, kimi_sim, owner)
    status, _ = await complete(http, kimi_sim, stranger, chat_id)
    assert status == 404


async def test_empty_content_is_a_validation_error(http: aiohttp.ClientSession, kimi_sim: SimServer) -> None:
    """Empty content answers 400 validation.error with the spec's detail."""
    headers = await login(http, kimi_sim)
    chat_id = await new_chat(http, kimi_sim, headers)
    status, raw = await complete(http, kimi_sim, headers, chat_id, messages=[{"role": "user", "content": ""}])
    assert status == 400
    assert json.loads(raw) == {
        "error_type": "validation.error",
        "message": "参数验证错误",
        "detail": ["Content is a required field"],
    }


async def test_second_concurrent_stream_of_a_user_is_refused(
    http: aiohttp.ClientSession, kimi_sim_factory: SimFactory
) -> None:
    """While one stream runs, the same user's second completion gets 400 chat.user_stream_pushing."""
    sim = await kimi_sim_factory(chunk_delay_s=0.05, chunk_count=8)
    headers = await login(http, sim)
    first, second = await new_chat(http, sim, headers), await new_chat(http, sim, headers)
    url = f"{sim.url}/api/chat/{first}/completion/stream"
    async with http.post(
        url, json={"messages": [{"role": "user", "content": "a"}]}, headers=headers
    ) as running:
        await running.content.readline()
        status, raw = await complete(http, sim, headers, second)
        assert status == 400 and json.loads(raw)["error_type"] == "chat.user_stream_pushing"
        await running.read()
    status, _ = await complete(http, sim, headers, second)
    assert status == 200


async def test_long_text_quota_answers_429(http: aiohttp.ClientSession, kimi_sim_factory: SimFactory) -> None:
    """Long prompts beyond quota_rounds in the window get 429 chat.completion.rate_limit; short ones pass."""
    sim = await kimi_sim_factory(quota_rounds=1, long_text_chars=10)
    headers = await login(http, sim)
    chat_id = await new_chat(http, sim, headers)
    long_prompt = [{"role": "user", "content": "x" * 10}]
    assert (await complete(http, sim, headers, chat_id, messages=long_prompt))[0] == 200
    status, raw = await complete(http, sim, headers, chat_id, messages=long_prompt)
    assert status == 429 and json.loads(raw)["error_type"] == "chat.completion.rate_limit"
    assert (await complete(http, sim, headers, chat_id))[0] == 200


async def test_side_calls_and_decoys_answer_empty(http: aiohttp.ClientSession, kimi_sim: SimServer) -> None:
    """pre-n2s, token_size and status decoys answer {}; suggestion and list decoys answer {"items":[]}."""
    headers = await login(http, kimi_sim)
    chat_id = await new_chat(http, kimi_sim, headers)
    empty = [
        ("POST", f"/api/chat/{chat_id}/pre-n2s"),
        ("POST", f"/api/chat/{chat_id}/token_size"),
        ("POST", "/api/user/usage"),
        ("GET", "/api/chat_1m/user/status"),
        ("GET", "/api/kimi_mv/user/status"),
    ]
    lists = [
        "/api/suggestion",
        "/api/kimiplus/history",
        "/api/kimiplus/search",
        "/api/chat/list",
        "/api/show_case/list",
        "/api/prompt-snippet/instance",
    ]
    for method, path in empty:
        async with http.request(method, kimi_sim.url + path, json={}, headers=headers) as resp:
            assert (resp.status, await resp.json()) == (200, {}), path
    for path in lists:
        async with http.post(kimi_sim.url + path, json={"offset": 0}, headers=headers) as resp:
            assert (resp.status, await resp.json()) == (200, {"items": []}), path


async def test_research_usage_counts_research_rounds(
    http: aiohttp.ClientSession, kimi_sim: SimServer
) -> None:
    """research/usage reports total 5 and one more used after each use_research completion."""
    headers = await login(http, kimi_sim)
    url = f"{kimi_sim.url}/api/chat/research/usage"
    async with http.get(url, headers=headers) as resp:
        assert await resp.json() == {"remain": 5, "total": 5, "used": 0}
    chat_id = await new_chat(http, kimi_sim, headers)
    await complete(http, kimi_sim, headers, chat_id, use_research=True)
    async with http.get(url, headers=headers) as resp:
        assert await resp.json() == {"remain": 4, "total": 5, "used": 1}


async def test_upload_flow(http: aiohttp.ClientSession, kimi_sim: SimServer) -> None:
    """pre-sign-url → PUT to the local URL → /api/file initialized then parsed → parse_process SSE."""
    headers = await login(http, kimi_sim)
    async with http.post(
        f"{kimi_sim.url}/api/pre-sign-url", json={"action": "file", "name": "a.txt"}, headers=headers
    ) as resp:
        signed = await resp.json()
    assert signed["url"] == f"{kimi_sim.url}/oss/{signed['object_name']}" and len(signed["file_id"]) == 20
    async with http.put(signed["url"], data=b"hello world") as resp:
        assert resp.status == 200
    register = {
        "type": "file",
        "name": "a.txt",
        "object_name": signed["object_name"],
        "file_id": "",
        "chat_id": "",
    }
    async with http.post(f"{kimi_sim.url}/api/file", json=register, headers=headers) as resp:
        first = await resp.json()
    assert first["status"] == "initialized" and first["size"] == 11 and first["name"] == "a.txt"
    async with http.post(f"{kimi_sim.url}/api/file", json=register, headers=headers) as resp:
        assert (await resp.json())["status"] == "parsed"
    body = {"ids": [first["id"]], "timeout": 120000}
    async with http.post(f"{kimi_sim.url}/api/file/parse_process", json=body, headers=headers) as resp:
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        raw = await resp.read()
    assert (
        raw == f'data: {{"event":"resp","file_info":{{"id":"{first["id"]}","status":"parsed"}}}}\n\n'.encode()
    )


async def test_fault_stream_error_ends_with_error_event(
    http: aiohttp.ClientSession, kimi_sim: SimServer
) -> None:
    """stream_error sends an error event after the given chunks, no all_done; the stream is marked error."""
    headers = await login(http, kimi_sim)
    chat_id = await new_chat(http, kimi_sim, headers)
    kimi_sim.state.faults.arm(
        "stream_error", error_type="openai.completion.token_length_too_long", after_chunks=2
    )
    _, raw = await complete(http, kimi_sim, headers, chat_id)
    events = sse_events(raw)
    assert events[-1]["event"] == "error"
    assert events[-1]["error"]["error_type"] == "openai.completion.token_length_too_long"
    assert "20 万字" in events[-1]["error"]["message"]
    assert cmpl_text(events) == "".join(split_chunks(answer_for("1+1=?"), 4)[:2])
    assert kimi_sim.state.streams[-1].status == "error"


async def test_fault_length_then_segment_continuation(
    http: aiohttp.ClientSession, kimi_sim: SimServer
) -> None:
    """length streams half the answer then length; continuing with the req id streams the rest."""
    headers = await login(http, kimi_sim)
    chat_id = await new_chat(http, kimi_sim, headers)
    kimi_sim.state.faults.arm("length")
    _, raw = await complete(http, kimi_sim, headers, chat_id)
    first = sse_events(raw)
    assert [e["event"] for e in first][-3:] == ["length", "rename", "all_done"]
    segment_id = first[0]["id"]
    body = {
        "segment_id": segment_id,
        "action": "continue",
        "messages": [{"role": "user", "content": " "}],
        "kimiplus_id": "kimi",
        "extend": {"sidebar": True},
    }
    _, raw = await complete(http, kimi_sim, headers, chat_id, **body)
    second = sse_events(raw)
    assert second[-1] == {"event": "all_done"} and "rename" not in [e["event"] for e in second]
    assert cmpl_text(first) + cmpl_text(second) == answer_for("1+1=?")
    status, _ = await complete(http, kimi_sim, headers, chat_id, **body)
    assert status == 400


async def test_fault_cut_mid_stream_eof_and_reset(http: aiohttp.ClientSession, kimi_sim: SimServer) -> None:
    """cut_mid_stream ends the body without all_done (mode eof) or aborts the connection (mode reset)."""
    headers = await login(http, kimi_sim)
    chat_id = await new_chat(http, kimi_sim, headers)
    kimi_sim.state.faults.arm("cut_mid_stream", after_chunks=1)
    _, raw = await complete(http, kimi_sim, headers, chat_id)
    events = sse_events(raw)
    assert events[-1]["event"] == "cmpl" and "all_done" not in [e["event"] for e in events]
    assert kimi_sim.state.streams[-1].status == "cut"
    kimi_sim.state.faults.arm("cut_mid_stream", after_chunks=2, mode="reset")
    with pytest.raises(aiohttp.ClientPayloadError):
        await complete(http, kimi_sim, headers, chat_id)
    assert kimi_sim.state.streams[-1].status == "cut"


async def test_fault_malformed_event_keeps_the_text(http: aiohttp.ClientSession, kimi_sim: SimServer) -> None:
    """malformed_event inserts one non-JSON data line; skipping it yields the normal answer."""
    headers = await login(http, kimi_sim)
    chat_id = await new_chat(http, kimi_sim, headers)
    kimi_sim.state.faults.arm("malformed_event")
    _, raw = await complete(http, kimi_sim, headers, chat_id)
    assert b'data: {"event":"cmpl","text":\n\n' in raw
    assert cmpl_text(sse_events(raw)) == answer_for("1+1=?")


async def read_pieces(http: aiohttp.ClientSession, url: str, headers: dict[str, str]) -> list[bytes]:
    body = {"messages": [{"role": "user", "content": "1+1=?"}]}
    async with http.post(url, json=body, headers=headers) as resp:
        return [piece async for piece in resp.content.iter_any()]


async def test_fault_split_utf8_cuts_a_character_across_writes(
    http: aiohttp.ClientSession, kimi_sim: SimServer
) -> None:
    """split_utf8 delivers pieces that end inside a multi-byte character; the joined bytes are unchanged."""
    headers = await login(http, kimi_sim)
    chat_id = await new_chat(http, kimi_sim, headers)
    kimi_sim.state.faults.arm("split_utf8", pause_s=0.02)
    pieces = await read_pieces(http, f"{kimi_sim.url}/api/chat/{chat_id}/completion/stream", headers)
    broken = 0
    for piece in pieces:
        try:
            piece.decode("utf-8")
        except UnicodeDecodeError:
            broken += 1
    assert broken >= 1
    assert cmpl_text(sse_events(b"".join(pieces))) == answer_for("1+1=?")


async def test_fault_split_and_coalesce_frames(http: aiohttp.ClientSession, kimi_sim: SimServer) -> None:
    """split_frames spreads the stream over more reads than events; coalesce_frames uses one read."""
    headers = await login(http, kimi_sim)
    chat_id = await new_chat(http, kimi_sim, headers)
    url = f"{kimi_sim.url}/api/chat/{chat_id}/completion/stream"
    kimi_sim.state.faults.arm("split_frames", parts=2, pause_s=0.01)
    pieces = await read_pieces(http, url, headers)
    assert len(pieces) > len(sse_events(b"".join(pieces)))
    kimi_sim.state.faults.arm("coalesce_frames")
    pieces = await read_pieces(http, url, headers)
    assert len(pieces) == 1 and cmpl_text(sse_events(pieces[0])) == answer_for("1+1=?")


async def test_fault_user_stream_pushing_and_quota(http: aiohttp.ClientSession, kimi_sim: SimServer) -> None:
    """user_stream_pushing and quota_exhausted answer the REST errors for one call each."""
    headers = await login(http, kimi_sim)
    chat_id = await new_chat(http, kimi_sim, headers)
    kimi_sim.state.faults.arm("user_stream_pushing")
    status, raw = await complete(http, kimi_sim, headers, chat_id)
    assert (status, json.loads(raw)["error_type"]) == (400, "chat.user_stream_pushing")
    kimi_sim.state.faults.arm("quota_exhausted")
    status, raw = await complete(http, kimi_sim, headers, chat_id)
    assert (status, json.loads(raw)["error_type"]) == (429, "chat.completion.rate_limit")
    assert (await complete(http, kimi_sim, headers, chat_id))[0] == 200


async def test_http_faults_honour_path_and_count(http: aiohttp.ClientSession, kimi_sim: SimServer) -> None:
    """http_401/429/500 hit only calls whose path contains `path`, `count` times, with REST bodies."""
    headers = await login(http, kimi_sim)
    kimi_sim.state.faults.arm("http_429", count=2, path="/api/user", retry_after=7)
    kimi_sim.state.faults.arm("http_500", path="/api/chat")
    kimi_sim.state.faults.arm("http_401", path="/token/refresh")
    for _ in range(2):
        async with http.get(f"{kimi_sim.url}/api/user", headers=headers) as resp:
            assert resp.status == 429 and resp.headers["Retry-After"] == "7"
            assert (await resp.json())["error_type"] == "chat.completion.rate_limit"
    async with http.get(f"{kimi_sim.url}/api/user", headers=headers) as resp:
        assert resp.status == 200
    async with http.post(f"{kimi_sim.url}/api/chat", json={}, headers=headers) as resp:
        assert resp.status == 500 and await resp.json() == {
            "error_type": "internal",
            "message": "服务内部错误",
        }
    account = kimi_sim.state.add_account("refresh_token")
    async with http.get(f"{kimi_sim.url}/api/auth/token/refresh", headers=bearer(account.token)) as resp:
        assert resp.status == 401 and await resp.json() == AUTH_INVALID


async def test_stall_first_byte_delays_the_answer(http: aiohttp.ClientSession, kimi_sim: SimServer) -> None:
    """stall_first_byte holds the response back for `seconds` (a client timeout shorter than that fires)."""
    headers = await login(http, kimi_sim)
    kimi_sim.state.faults.arm("stall_first_byte", path="/api/user", seconds=0.3)
    with pytest.raises(asyncio.TimeoutError):
        async with http.get(
            f"{kimi_sim.url}/api/user", headers=headers, timeout=aiohttp.ClientTimeout(total=0.1)
        ):
            pass
    kimi_sim.state.faults.arm("stall_first_byte", path="/api/user", seconds=0.2)
    started = time.monotonic()
    async with http.get(f"{kimi_sim.url}/api/user", headers=headers) as resp:
        assert resp.status == 200
    assert time.monotonic() - started >= 0.2


async def test_client_closing_mid_stream_is_detected(
    http: aiohttp.ClientSession, kimi_sim_factory: SimFactory
) -> None:
    """A client that disconnects mid-stream leaves the stream in status client_closed and frees the user."""
    sim = await kimi_sim_factory(chunk_delay_s=0.05, chunk_count=20)
    headers = await login(http, sim)
    chat_id = await new_chat(http, sim, headers)
    resp = await http.post(
        f"{sim.url}/api/chat/{chat_id}/completion/stream",
        json={"messages": [{"role": "user", "content": "hello"}]},
        headers=headers,
    )
    await resp.content.readline()
    resp.close()
    for _ in range(40):
        if sim.state.streams[-1].status != "running":
            break
        await asyncio.sleep(0.025)
    assert sim.state.streams[-1].status == "client_closed"
    assert sim.state.active_streams == {}
