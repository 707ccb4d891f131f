"""Kimi web 2026 end to end through the official SDKs (issue 13): the K3 lane reaches the simulator as the
catalogue says, a character cut between upstream events arrives whole on both lanes, and the worker's own
`/metrics` counts an event kind no client knows."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import openai
import pytest
import pytest_asyncio
from prometheus_client.parser import text_string_to_metric_families

from kimi_sim.answers import answer_for
from shared.redis_server import free_port
from shared.settings import PoolSettings
from tests.stack import Stack, StackFactory, stack_factory
from token_service.accounts import Accounts

__all__ = ["stack_factory"]

PROMPT = "你好，世界 — naïve café ☕ 🚀"
CHAT_PATH = "ChatService/Chat"
#: One lane of each web protocol: a refresh_token account on the REST family, a kimi-auth on Connect.
LANES = [("refresh_token", "kimi"), ("kimi_auth", "kimi-k2.5-instant")]


@pytest_asyncio.fixture
async def stack(stack_factory: StackFactory) -> Stack:
    return await stack_factory(keepalive_interval_s=0.2, idle_timeout_s=10.0, request_timeout_s=20.0)


@pytest_asyncio.fixture
async def client(stack: Stack) -> AsyncIterator[openai.AsyncOpenAI]:
    client = openai.AsyncOpenAI(base_url=f"{stack.url}/v1", api_key="sk-local", max_retries=0, timeout=15)
    yield client
    await client.close()


async def _add_paid(stack: Stack, kind: str) -> str:
    """A simulator account on a paid plan, saved in the pool; its account id."""
    token = stack.sim.state.add_account(kind, plan="paid").token  # type: ignore[arg-type]
    async with aiohttp.ClientSession() as session:
        account, _ = await Accounts(stack.redis, PoolSettings(), session, stack.sim.url).add(token)
    return account.id


async def _ask(client: openai.AsyncOpenAI, model: str, stream: bool) -> str:
    messages: list[openai.types.chat.ChatCompletionMessageParam] = [{"role": "user", "content": PROMPT}]
    if not stream:
        completion = await client.chat.completions.create(model=model, messages=messages)
        return completion.choices[0].message.content or ""
    text = ""
    async for chunk in await client.chat.completions.create(model=model, messages=messages, stream=True):
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
    return text


@pytest.mark.timeout(30)
async def test_k3_reaches_the_simulator_with_its_scenario(stack: Stack, client: openai.AsyncOpenAI) -> None:
    """`kimi-k3` is sent as the catalogue's K3 entry (OK_COMPUTER lane, `options.model` k3-agent, HIGH effort)."""
    await _add_paid(stack, "kimi_auth")
    assert await _ask(client, "kimi-k3", stream=False) == answer_for(PROMPT)
    [logged] = await stack.sim_requests(CHAT_PATH)
    body = logged["body"]
    assert body["scenario"] == body["message"]["scenario"] == "SCENARIO_OK_COMPUTER"
    assert body["options"]["model"] == "k3-agent"
    assert body["options"]["reasoning_effort"] == "REASONING_EFFORT_HIGH"
    assert body["kimiplusId"] == "ok-computer" and body["agentMode"] == "TYPE_NORMAL"


@pytest.mark.timeout(40)
@pytest.mark.parametrize("stream", [True, False], ids=["stream", "non-stream"])
@pytest.mark.parametrize(("kind", "model"), LANES, ids=["rest", "connect"])
async def test_a_character_cut_between_events_arrives_whole(
    stack: Stack, client: openai.AsyncOpenAI, kind: str, model: str, stream: bool
) -> None:
    """Kimi cutting multi-byte characters between two events changes nothing the client reads, on either lane."""
    await stack.add(kind)
    await stack.arm("split_utf8_events")
    assert await _ask(client, model, stream) == answer_for(PROMPT)
    assert (await stack.sim_state())["streams"][-1]["status"] == "completed"


def _drift(metrics_text: str) -> dict[tuple[str, str], float]:
    return {
        (sample.labels["protocol"], sample.labels["kind"]): sample.value
        for family in text_string_to_metric_families(metrics_text)
        if family.name == "kimi_upstream_drift"
        for sample in family.samples
        if sample.name == "kimi_upstream_drift_total"
    }


async def _metrics(url: str) -> str:
    async with aiohttp.ClientSession() as session, session.get(url) as resp:
        assert resp.status == 200
        return await resp.text()


@pytest.mark.timeout(60)
async def test_worker_metrics_count_an_unknown_event(stack_factory: StackFactory) -> None:
    """An event kind and a field no client knows are skipped, and the worker's /metrics counts each by name."""
    port = free_port()
    stack = await stack_factory(worker_processes=1, worker_env={"WORKER_METRICS_PORT": str(port)})
    await stack.add("kimi_auth")
    await stack.arm("unknown_event")
    client = openai.AsyncOpenAI(base_url=f"{stack.url}/v1", api_key="sk-local", max_retries=0, timeout=15)
    async with client:
        assert await _ask(client, "kimi-k2.5-instant", stream=True) == answer_for(PROMPT)
    url = f"http://127.0.0.1:{port}/metrics"
    for _ in range(50):  # the driver counts drift when the call ends, just after the last event
        drift = _drift(await _metrics(url))
        if drift:
            break
        await asyncio.sleep(0.1)
    assert drift == {
        ("connect", "event:simFutureEvent"): 1.0,
        ("connect", "field:block.text.simFutureField"): 1.0,
    }


async def _states(stack: Stack) -> dict[str, str]:
    async with aiohttp.ClientSession() as session:
        accounts = await Accounts(stack.redis, PoolSettings(), session, stack.sim.url).list()
    return {a.id: a.state for a in accounts}


@pytest.mark.timeout(30)
async def test_a_free_account_refused_k3_hands_it_to_a_paid_one(
    stack: Stack, client: openai.AsyncOpenAI
) -> None:
    """K3 refused to a free account is served by a paid one; the free account is neither cooled nor blamed."""
    paid = await _add_paid(stack, "kimi_auth")
    assert await _ask(client, "kimi-k2.6-instant", stream=False) == answer_for(PROMPT)  # the paid one is used
    free = await stack.add("kimi_auth")  # so the never-used free account is leased first
    assert await _ask(client, "kimi-k3", stream=True) == answer_for(PROMPT)
    k3_calls = [
        r for r in await stack.sim_requests(CHAT_PATH) if r["body"]["options"].get("model") == "k3-agent"
    ]
    assert len(k3_calls) == 2
    assert await _states(stack) == {paid: "active", free: "active"}


@pytest.mark.timeout(30)
async def test_k3_with_only_free_accounts_is_403_paid_plan(stack: Stack, client: openai.AsyncOpenAI) -> None:
    """When no account's plan may use K3 the client gets 403 saying so, and every account stays active."""
    ids = {await stack.add("kimi_auth"), await stack.add("kimi_auth")}
    with pytest.raises(openai.PermissionDeniedError) as info:
        await _ask(client, "kimi-k3", stream=False)
    assert info.value.status_code == 403
    assert "kimi-k3 needs a paid Kimi plan" in info.value.message
    assert len(await stack.sim_requests(CHAT_PATH)) == 2
    assert await _states(stack) == dict.fromkeys(ids, "active")


async def _admin(stack: Stack, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, stack.url + path, **kwargs) as resp,
    ):
        assert resp.status == 200, await resp.text()
        body: dict[str, Any] = await resp.json()
    return body


@pytest.mark.timeout(40)
@pytest.mark.parametrize(("kind", "model"), LANES, ids=["rest", "connect"])
async def test_a_global_account_is_called_on_its_own_host(
    stack: Stack, client: openai.AsyncOpenAI, kind: str, model: str
) -> None:
    """A www.kimi.ai account (its token says so) is refreshed and called on the international host only."""
    account_id = await stack.add(kind, region="global")
    assert await _ask(client, model, stream=True) == answer_for(PROMPT)
    paths = [r["path"] for r in await stack.sim_requests()]
    assert paths and all(p.startswith("/kimi-ai/") for p in paths), paths
    if kind == "refresh_token":
        assert "/kimi-ai/api/account.gateway.v1.AuthService/RefreshToken" in paths
    [shown] = (await _admin(stack, "GET", "/admin/accounts"))["accounts"]
    assert (shown["id"], shown["region"], shown["base_url"], shown["origin"]) == (
        account_id,
        "global",
        "",
        stack.sim.global_url,
    )


@pytest.mark.timeout(40)
async def test_an_account_sent_to_the_other_region_is_refused(
    stack: Stack, client: openai.AsyncOpenAI
) -> None:
    """An operator's base_url wins over the token's region: a www.kimi.ai token sent to www.kimi.com gets 401."""
    token = stack.sim.state.add_account("kimi_auth", region="global").token
    added = await _admin(
        stack, "POST", "/admin/accounts", json={"token": token, "base_url": stack.sim.url + "/"}
    )
    [listed] = (await _admin(stack, "GET", "/admin/accounts"))["accounts"]
    assert (listed["id"], listed["region"], listed["base_url"], listed["origin"]) == (
        added["added"][0]["account_id"],
        "global",
        stack.sim.url,
        stack.sim.url,
    )
    with pytest.raises(openai.APIStatusError) as info:
        await _ask(client, "kimi-k2.5-instant", stream=False)
    assert info.value.status_code == 503
    assert [r["path"] for r in await stack.sim_requests(CHAT_PATH)] == [
        "/apiv2/kimi.gateway.chat.v1.ChatService/Chat"
    ]
    [after] = (await _admin(stack, "GET", "/admin/accounts"))["accounts"]
    assert after["state"] == "invalid"
