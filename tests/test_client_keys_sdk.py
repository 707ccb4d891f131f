"""Managed client keys end to end through the official SDKs: real Redis, the simulator, a token service, gateways."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import anthropic
import openai
import pytest
from aiohttp.test_utils import TestServer
from google import genai
from google.genai import errors, types

from gateway.app import create_app
from kimi_sim.connect import CHAT_PATH
from kimi_sim.server import SimServer
from shared.client_keys import redact
from shared.models import listed_models, resolve_model
from shared.secret import Secret
from shared.settings import CommonSettings
from tests.stack import Stack, StackFactory, stack_factory

__all__ = ["stack_factory"]

pytestmark = pytest.mark.filterwarnings("ignore:Inheritance class AiohttpClientSession:DeprecationWarning")

MODEL = "kimi-k2.5-instant"
#: The keys' short "minute" (KeyCreateBody.window_s), so a test sees a reset without waiting a whole minute.
WINDOW_S = 3


async def admin(stack: Stack, method: str, path: str, status: int = 200, **kw: Any) -> Any:
    """One call of the token service's admin API (loopback, no admin key): its JSON body."""
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, stack.token_service_url + path, **kw) as resp,
    ):
        body = await resp.json()
        assert resp.status == status, body
        return body


async def new_key(stack: Stack, **fields: Any) -> tuple[str, str]:
    """A managed key with these fields; its id and secret."""
    body = await admin(stack, "POST", "/admin/keys", 201, json={"name": "team-a", **fields})
    return body["key"]["id"], body["secret"]


async def _started(stack_factory: StackFactory) -> Stack:
    stack = await stack_factory()
    await stack.add("kimi_auth")
    return stack


async def _wait_for_window() -> None:
    """Sleep until just after a window boundary, so a test's requests fall in one window."""
    await asyncio.sleep(WINDOW_S - time.time() % WINDOW_S + 0.05)


def _rate_headers(headers: Any) -> tuple[str, str, str]:
    lower = {name.lower(): value for name, value in headers.items()}
    return (lower["x-ratelimit-limit"], lower["x-ratelimit-remaining"], lower["x-ratelimit-reset"])


async def test_openai_fourth_request_is_429_then_passes_after_reset(stack_factory: StackFactory) -> None:
    """OpenAI SDK: 3 per window pass with falling Remaining; the 4th is 429 with Retry-After; after the reset
    the key passes again."""
    stack = await _started(stack_factory)
    _, secret = await new_key(stack, requests_per_minute=3, window_s=WINDOW_S)
    client = openai.AsyncOpenAI(base_url=stack.url + "/v1", api_key=secret, max_retries=0)
    messages: list[Any] = [{"role": "user", "content": "hi"}]
    await _wait_for_window()
    remaining = []
    for _ in range(3):
        raw = await client.chat.completions.with_raw_response.create(model=MODEL, messages=messages)
        limit, left, reset = _rate_headers(raw.headers)
        assert (limit, 1 <= int(reset) <= WINDOW_S) == ("3", True)
        remaining.append(left)
    assert remaining == ["2", "1", "0"]
    with pytest.raises(openai.RateLimitError) as refused:
        await client.chat.completions.create(model=MODEL, messages=messages)
    headers = refused.value.response.headers
    assert (headers["x-ratelimit-limit"], headers["x-ratelimit-remaining"]) == ("3", "0")
    assert 1 <= int(headers["retry-after"]) <= WINDOW_S
    assert refused.value.body["message"].startswith("Rate limit reached for requests per minute: limit 3")  # type: ignore[index]
    await asyncio.sleep(int(headers["retry-after"]) + 0.1)
    again = await client.chat.completions.with_raw_response.create(model=MODEL, messages=messages)
    assert _rate_headers(again.headers)[:2] == ("3", "2")
    await client.close()


async def test_anthropic_stream_and_429(stack_factory: StackFactory) -> None:
    """Anthropic SDK: a stream carries the X-RateLimit-* headers; the 4th request is a 429 rate_limit_error."""
    stack = await _started(stack_factory)
    _, secret = await new_key(stack, requests_per_minute=3, window_s=WINDOW_S)
    client = anthropic.AsyncAnthropic(base_url=stack.url, api_key=secret, max_retries=0)
    messages: list[Any] = [{"role": "user", "content": "hi"}]
    await _wait_for_window()
    for expected in ("2", "1"):
        raw = await client.messages.with_raw_response.create(model=MODEL, max_tokens=64, messages=messages)
        assert _rate_headers(raw.headers)[:2] == ("3", expected)
    async with client.messages.stream(model=MODEL, max_tokens=64, messages=messages) as stream:
        assert _rate_headers(stream.response.headers)[:2] == ("3", "0")
        await stream.get_final_message()
    with pytest.raises(anthropic.RateLimitError) as refused:
        await client.messages.create(model=MODEL, max_tokens=64, messages=messages)
    assert refused.value.body["error"]["type"] == "rate_limit_error"  # type: ignore[index]
    assert 1 <= int(refused.value.response.headers["retry-after"]) <= WINDOW_S
    await client.close()


async def test_gemini_429_and_headers(stack_factory: StackFactory) -> None:
    """google-genai: the headers ride on generate_content's response; the 4th is 429 RESOURCE_EXHAUSTED."""
    stack = await _started(stack_factory)
    _, secret = await new_key(stack, requests_per_minute=3, window_s=WINDOW_S)
    client = genai.Client(api_key=secret, http_options=types.HttpOptions(base_url=stack.url, timeout=30_000))
    await _wait_for_window()
    for expected in ("2", "1", "0"):
        answer = await client.aio.models.generate_content(model=MODEL, contents="hi")
        assert answer.sdk_http_response is not None and answer.sdk_http_response.headers is not None
        assert _rate_headers(answer.sdk_http_response.headers)[:2] == ("3", expected)
    with pytest.raises(errors.ClientError) as refused:
        await client.aio.models.generate_content(model=MODEL, contents="hi")
    assert (refused.value.code, refused.value.status) == (429, "RESOURCE_EXHAUSTED")
    await client.aio.aclose()
    client.close()


async def test_two_gateways_share_counters_and_revocation(stack_factory: StackFactory) -> None:
    """Two gateway apps on one Redis count one key together, and a revocation refuses it at once on both."""
    stack = await _started(stack_factory)
    second = TestServer(create_app(stack.settings), host="127.0.0.1")
    await second.start_server()
    key_id, secret = await new_key(stack, requests_per_minute=3, window_s=WINDOW_S)
    clients = [
        openai.AsyncOpenAI(base_url=url + "/v1", api_key=secret, max_retries=0)
        for url in (stack.url, f"http://127.0.0.1:{second.port}")
    ]
    messages: list[Any] = [{"role": "user", "content": "hi"}]
    await _wait_for_window()
    lefts = []
    for client in (clients[0], clients[1], clients[0]):
        raw = await client.chat.completions.with_raw_response.create(model=MODEL, messages=messages)
        lefts.append(raw.headers["x-ratelimit-remaining"])
    assert lefts == ["2", "1", "0"]
    with pytest.raises(openai.RateLimitError):
        await clients[1].chat.completions.create(model=MODEL, messages=messages)
    await admin(stack, "POST", f"/admin/keys/{key_id}/revoke")
    for client in clients:
        with pytest.raises(openai.AuthenticationError) as refused:
            await client.chat.completions.create(model=MODEL, messages=messages)
        assert refused.value.body["message"] == "This API key has been revoked."  # type: ignore[index]
        await client.close()
    await second.close()


async def test_unknown_key_and_disallowed_model(stack_factory: StackFactory) -> None:
    """An unknown kgw- secret is 401 and a model outside the key's list is 403, neither reaching Kimi; an
    allowed model then does."""
    stack = await _started(stack_factory)
    _, secret = await new_key(stack, models=["kimi-k2.5-thinking"])
    messages: list[Any] = [{"role": "user", "content": "hi"}]
    unknown = openai.AsyncOpenAI(base_url=stack.url + "/v1", api_key="kgw-nope", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        await unknown.chat.completions.create(model=MODEL, messages=messages)
    client = anthropic.AsyncAnthropic(base_url=stack.url, api_key=secret, max_retries=0)
    with pytest.raises(anthropic.PermissionDeniedError) as refused:
        await client.messages.create(model=MODEL, max_tokens=64, messages=messages)
    assert refused.value.body["error"]["message"] == (  # type: ignore[index]
        f"This API key may not use the model {MODEL!r}."
    )
    assert await stack.sim_requests(CHAT_PATH) == []
    await client.messages.create(model="kimi-k2.5-thinking", max_tokens=64, messages=messages)
    assert len(await stack.sim_requests(CHAT_PATH)) == 1
    await unknown.close()
    await client.close()


async def test_model_lists_show_only_the_keys_models(stack_factory: StackFactory) -> None:
    """A key limited to some models sees only those in the OpenAI and Gemini model lists, and another model
    is not found there (as it is refused on the chat routes); a key without a list sees every model."""
    stack = await _started(stack_factory)
    _, limited = await new_key(stack, models=["kimi-k2.5-thinking", "kimi"])
    _, unlimited = await new_key(stack, name="team-b")
    client = openai.AsyncOpenAI(base_url=stack.url + "/v1", api_key=limited, max_retries=0)
    assert sorted(m.id for m in (await client.models.list()).data) == ["kimi", "kimi-k2.5-thinking"]
    assert (await client.models.retrieve("kimi")).id == "kimi"
    with pytest.raises(openai.NotFoundError):
        await client.models.retrieve(MODEL)
    everyone = openai.AsyncOpenAI(base_url=stack.url + "/v1", api_key=unlimited, max_retries=0)
    assert len((await everyone.models.list()).data) == len(listed_models())
    gemini_client = genai.Client(
        api_key=limited, http_options=types.HttpOptions(base_url=stack.url, api_version="v1beta")
    )
    names = sorted([m.name or "" async for m in await gemini_client.aio.models.list()])
    assert names == ["models/kimi", "models/kimi-k2.5-thinking"]
    with pytest.raises(errors.ClientError) as missing:
        await gemini_client.aio.models.get(model=MODEL)
    assert missing.value.code == 404
    await client.close()
    await everyone.close()


async def test_open_gateway_closes_once_a_key_exists(stack_factory: StackFactory) -> None:
    """Without GATEWAY_API_KEYS, once a managed key exists: a caller with no key is refused, on the chat and
    the model-list routes alike, and so is a caller's own Kimi token (`auto` pass-through turns off)."""
    stack = await _started(stack_factory)
    own_token = stack.sim.state.add_account("kimi_auth").token
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}
    bearer = {"Authorization": f"Bearer {own_token}"}
    async with aiohttp.ClientSession() as session:
        async with session.post(stack.url + "/v1/chat/completions", json=body, headers=bearer) as resp:
            assert resp.status == 200  # no key yet: the caller's own token is served
        await new_key(stack)
        async with session.post(stack.url + "/v1/chat/completions", json=body) as resp:
            assert resp.status == 401
            assert (await resp.json())["error"]["message"].startswith("You didn't provide an API key")
        async with session.post(stack.url + "/v1/chat/completions", json=body, headers=bearer) as resp:
            assert resp.status == 401
            assert (await resp.json())["error"]["message"] == "Incorrect API key provided."
        async with session.get(stack.url + "/v1/models") as resp:
            assert resp.status == 401
        async with session.get(stack.url + "/v1/models", headers=bearer) as resp:
            assert resp.status == 401


async def test_usage_and_request_log_match_what_was_sent(stack_factory: StackFactory) -> None:
    """Two answers and one refused model: usage counts 2 requests + 1 error with the tokens the SDK saw, and the
    request log lists all three, newest first, with no prompt or answer text."""
    stack = await _started(stack_factory)
    key_id, secret = await new_key(stack, models=[MODEL])
    client = openai.AsyncOpenAI(base_url=stack.url + "/v1", api_key=secret, max_retries=0)
    prompt = "purple elephants sing quietly"
    messages: list[Any] = [{"role": "user", "content": prompt}]
    answers = [await client.chat.completions.create(model=MODEL, messages=messages) for _ in range(2)]
    with pytest.raises(openai.PermissionDeniedError):
        await client.chat.completions.create(model="kimi-k2.5-thinking", messages=messages)
    await client.close()
    label = resolve_model(MODEL)
    refused_label = resolve_model("kimi-k2.5-thinking")
    assert label is not None and refused_label is not None
    usage = await admin(stack, "GET", f"/admin/keys/{key_id}/usage")
    (day,) = usage["days"].values()
    served = day[label.label]
    prompt_tokens = sum(a.usage.prompt_tokens for a in answers if a.usage)
    completion_tokens = sum(a.usage.completion_tokens for a in answers if a.usage)
    assert {k: served[k] for k in ("requests", "errors", "prompt_tokens", "completion_tokens")} == {
        "requests": 2,
        "errors": 0,
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
    }
    assert (served["estimated_prompt_tokens"], served["ttft_count"]) == (prompt_tokens, 2)
    assert {k: day[refused_label.label][k] for k in ("requests", "errors", "prompt_tokens")} == {
        "requests": 1,
        "errors": 1,
        "prompt_tokens": 0,
    }
    async with (
        aiohttp.ClientSession() as session,
        session.get(stack.token_service_url + "/admin/requests", params={"key": "team-a"}) as resp,
    ):
        text = await resp.text()
        log = await resp.json()
    assert prompt not in text and answers[0].choices[0].message.content not in text
    assert [(r["status"], r["error"], r["dialect"]) for r in log["requests"]] == [
        (403, "permission", "openai"),
        (200, "", "openai"),
        (200, "", "openai"),
    ]
    assert log["next"] is None
    page = await admin(stack, "GET", "/admin/requests?key=team-a&status=200&limit=1")
    assert (len(page["requests"]), page["requests"][0]["completion_tokens"]) == (
        1,
        answers[1].usage.completion_tokens if answers[1].usage else -1,
    )
    older = await admin(stack, "GET", f"/admin/requests?key=team-a&status=200&limit=1&before={page['next']}")
    assert older["requests"][0]["id"] == log["requests"][2]["id"]
    async with aiohttp.ClientSession() as session, session.get(stack.url + "/metrics") as resp:
        exposition = await resp.text()
    assert f'kimi_gateway_key_requests_total{{key="team-a",model="{label.label}",outcome="ok"}}' in exposition
    assert secret not in exposition and key_id not in exposition


async def test_key_admin_through_the_gateway_with_the_admin_key(
    stack_factory: StackFactory, redis_url: str, kimi_sim: SimServer
) -> None:
    """The README's curl calls: POST, PATCH and revoke on the gateway's port with ADMIN_API_KEY, forwarded."""
    common = CommonSettings(redis_url=redis_url, kimi_base_url=kimi_sim.url, admin_api_key=Secret("adm"))
    stack = await stack_factory(common=common)
    auth = {"Authorization": "Bearer adm"}
    async with aiohttp.ClientSession(base_url=stack.url, headers=auth) as session:
        async with session.post("/admin/keys", json={"name": "team-a", "requests_per_minute": 60}) as resp:
            created = await resp.json()
            assert resp.status == 201
        key_id = created["key"]["id"]
        async with session.patch(f"/admin/keys/{key_id}", json={"requests_per_minute": 10}) as resp:
            assert (resp.status, (await resp.json())["key"]["requests_per_minute"]) == (200, 10)
        async with session.post(f"/admin/keys/{key_id}/revoke") as resp:
            assert (resp.status, (await resp.json())["key"]["revoked"]) == (200, True)
        async with session.get("/admin/keys", headers={"Authorization": "Bearer nope"}) as resp:
            assert resp.status == 401


async def test_expired_and_disabled_keys_are_401_in_the_dialect(stack_factory: StackFactory) -> None:
    """An expired key and a key PATCHed to disabled get 401 UNAUTHENTICATED in Gemini's shape, naming why."""
    stack = await _started(stack_factory)
    _, expired = await new_key(stack, expires_s=time.time() - 1)
    key_id, disabled = await new_key(stack)
    await admin(stack, "PATCH", f"/admin/keys/{key_id}", json={"enabled": False})
    body = {"contents": [{"parts": [{"text": "hi"}]}]}
    async with aiohttp.ClientSession() as session:
        for secret, message in (
            (expired, "This API key has expired."),
            (disabled, "This API key is disabled."),
        ):
            async with session.post(
                f"{stack.url}/v1beta/models/{MODEL}:generateContent",
                json=body,
                headers={"x-goog-api-key": secret},
            ) as resp:
                assert (resp.status, await resp.json()) == (
                    401,
                    {"error": {"code": 401, "message": message, "status": "UNAUTHENTICATED"}},
                )


async def test_body_capture_is_redacted_and_capped(stack_factory: StackFactory) -> None:
    """With REQUEST_LOG_BODY_CHARS=60 the log keeps the last user message with secrets redacted, cut to 60."""
    stack = await stack_factory(request_log_body_chars=60)
    await stack.add("kimi_auth")
    _, secret = await new_key(stack)
    client = openai.AsyncOpenAI(base_url=stack.url + "/v1", api_key=secret, max_retries=0)
    prompt = f"use sk-abcdefghijkl and {secret} for ops@example.com " + "x" * 80
    answer = await client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": prompt}])
    await client.close()
    log = await admin(stack, "GET", "/admin/requests?key=team-a")
    (line,) = log["requests"]
    redacted = "use [redacted] and [redacted] for [redacted] " + "x" * 80
    assert line["prompt"] == redacted[:60] + "…"
    text = answer.choices[0].message.content or ""
    assert line["answer"] == redact(text, 60) and line["answer"].endswith("[redacted] xx…")
    assert secret not in str(line) and "sk-abcdefghijkl" not in str(line)
