"""Official API keys end to end through the official SDKs: a key-only pool answers with the simulator's exact
usage, a mixed pool falls back from a cooling web account to the key, and `x-upstream-kind` and the metrics
say which kind served (real Redis, the simulator, a TCP gateway and token service, a worker)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import anthropic
import openai
import pytest
import pytest_asyncio
from prometheus_client import REGISTRY

from kimi_sim.answers import answer_for, reasoning_for
from shared.settings import PoolSettings
from tests.stack import Stack, StackFactory, stack_factory
from token_service.accounts import Accounts

__all__ = ["stack_factory"]

PROMPT = "What is a key?"


@pytest_asyncio.fixture
async def stack(stack_factory: StackFactory) -> Stack:
    return await stack_factory(keepalive_interval_s=5.0, idle_timeout_s=10.0, request_timeout_s=20.0)


@pytest_asyncio.fixture
async def client(stack: Stack) -> AsyncIterator[openai.AsyncOpenAI]:
    # A dummy `sk-…` client key, as many clients send to an open gateway: never taken for an upstream key.
    client = openai.AsyncOpenAI(base_url=f"{stack.url}/v1", api_key="sk-local-dummy-key-0000", max_retries=0)
    yield client
    await client.close()


async def add_key(stack: Stack) -> str:
    """A simulator key saved through the gateway's `/auth/save` as `key@<sim>/moonshot`; its account id."""
    key = stack.sim.state.official.mint("global").key
    async with aiohttp.ClientSession() as session:
        body = {"token": f"{key}@{stack.sim.url}/moonshot"}
        async with session.post(f"{stack.url}/auth/save", json=body) as resp:
            assert resp.status == 200, await resp.text()
            account_id: str = (await resp.json())["account_id"]
    return account_id


def served(kind: str, model: str) -> float:
    labels = {"kind": kind, "model": model}
    return REGISTRY.get_sample_value("kimi_gateway_requests_by_kind_total", labels) or 0.0


def completion_of(prompt: str) -> int:
    """The simulator's completion tokens of a thinking model's plain answer: reasoning + content characters."""
    return len(reasoning_for(prompt)) + len(answer_for(prompt))


async def test_a_key_only_pool_answers_non_stream_with_the_apis_usage(
    stack: Stack, client: openai.AsyncOpenAI
) -> None:
    """Non-stream through `openai`: the key's exact text, reasoning and usage, and `x-upstream-kind: api_key`."""
    await add_key(stack)
    raw = await client.chat.completions.with_raw_response.create(
        model="kimi-k3", messages=[{"role": "user", "content": PROMPT}]
    )
    completion = raw.parse()
    assert raw.headers["x-upstream-kind"] == "api_key"
    assert completion.choices[0].message.content == answer_for(PROMPT)
    assert getattr(completion.choices[0].message, "reasoning_content", None) == reasoning_for(PROMPT)
    assert completion.usage is not None
    assert (
        completion.usage.prompt_tokens,
        completion.usage.completion_tokens,
        completion.usage.total_tokens,
    ) == (
        len(PROMPT),
        completion_of(PROMPT),
        len(PROMPT) + completion_of(PROMPT),
    )


async def test_a_key_only_pool_streams_with_the_apis_usage(stack: Stack, client: openai.AsyncOpenAI) -> None:
    """Stream through `openai` with include_usage: the key's exact text, then its exact usage chunk."""
    await add_key(stack)
    raw = await client.chat.completions.with_raw_response.create(
        model="kimi-k2.6",
        messages=[{"role": "user", "content": PROMPT}],
        stream=True,
        stream_options={"include_usage": True},
    )
    assert raw.headers["x-upstream-kind"] == "api_key"
    text, usage = "", None
    async for chunk in raw.parse():
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
        if chunk.usage is not None:
            usage = chunk.usage
    assert text == answer_for(PROMPT)
    assert usage is not None and (usage.prompt_tokens, usage.completion_tokens) == (
        len(PROMPT),
        completion_of(PROMPT),
    )


async def test_a_key_answers_the_anthropic_sdk_with_its_usage(stack: Stack) -> None:
    """Through `anthropic`: the key's text and the API's token counts as input / output tokens."""
    await add_key(stack)
    async with anthropic.AsyncAnthropic(base_url=stack.url, api_key="sk-ant-local", max_retries=0) as claude:
        raw = await claude.messages.with_raw_response.create(
            model="kimi-k2.6", max_tokens=1024, messages=[{"role": "user", "content": PROMPT}]
        )
    message = await raw.parse()
    assert raw.headers["x-upstream-kind"] == "api_key"
    assert [block.text for block in message.content if block.type == "text"] == [answer_for(PROMPT)]
    assert (message.usage.input_tokens, message.usage.output_tokens) == (len(PROMPT), completion_of(PROMPT))


async def test_a_mixed_pool_falls_back_to_the_key_when_the_web_account_cools(
    stack: Stack, client: openai.AsyncOpenAI
) -> None:
    """web_first: the web account serves (kimi_web); once it cools, the key does (api_key); the metric counts both."""
    web = await stack.add("kimi_auth")
    await add_key(stack)
    before = (served("kimi_web", "kimi-k2.6"), served("api_key", "kimi-k2.6"))
    kinds = []
    for _ in range(2):
        raw = await client.chat.completions.with_raw_response.create(
            model="kimi-k2.6", messages=[{"role": "user", "content": PROMPT}]
        )
        assert raw.parse().choices[0].message.content == answer_for(PROMPT)
        kinds.append(raw.headers["x-upstream-kind"])
        async with aiohttp.ClientSession() as session:
            await Accounts(stack.redis, PoolSettings(), session, stack.sim.url).cool(web, "rate_limited", 60)
    assert kinds == ["kimi_web", "api_key"]
    assert (served("kimi_web", "kimi-k2.6"), served("api_key", "kimi-k2.6")) == (before[0] + 1, before[1] + 1)


async def test_an_api_only_model_with_only_web_accounts_is_a_503(
    stack: Stack, client: openai.AsyncOpenAI
) -> None:
    """kimi-k2.7-code with web accounts only: 503 in the OpenAI dialect, saying an API key is needed."""
    await stack.add("refresh_token")
    with pytest.raises(openai.APIStatusError) as caught:
        await client.chat.completions.create(
            model="kimi-k2.7-code", messages=[{"role": "user", "content": PROMPT}]
        )
    assert caught.value.status_code == 503
    assert caught.value.body == {
        "message": "no usable api_key account serves the model 'kimi-k2.7-code': add one with POST /auth/save "
        '{"token": "<kimi-auth, refresh_token or sk-… API key>"}',
        "type": "server_error",
        "param": None,
        "code": "service_unavailable",
    }


WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


@pytest.mark.parametrize("stream", [False, True], ids=["non-stream", "stream"])
async def test_a_key_makes_a_native_tool_call_and_answers_its_result(
    stack: Stack, client: openai.AsyncOpenAI, stream: bool
) -> None:
    """Through a key the API's own tool call reaches the `openai` SDK exactly (id, name, arguments, the API's
    usage, no prompt protocol in what the API received), and the follow-up with the result is answered from it."""
    await add_key(stack)
    ask = 'call get_weather {"city": "Paris"}'
    messages: list[dict[str, object]] = [{"role": "user", "content": ask}]
    if stream:
        async with client.chat.completions.stream(
            model="kimi-k2.6-instant",
            messages=messages,
            tools=[WEATHER_TOOL],  # type: ignore[list-item]
            stream_options={"include_usage": True},
        ) as events:
            completion = await events.get_final_completion()
    else:
        completion = await client.chat.completions.create(
            model="kimi-k2.6-instant",
            messages=messages,
            tools=[WEATHER_TOOL],  # type: ignore[list-item]
        )
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    [call] = choice.message.tool_calls or []
    assert (call.id, call.function.name, call.function.arguments) == (
        "get_weather:0",
        "get_weather",
        '{"city":"Paris"}',
    )
    sent = [r for r in stack.sim.state.requests if r.path == "/moonshot/v1/chat/completions"][-1]
    # Native tools: the user's text unchanged (no prompt protocol), the tool in the API's own `tools`.
    assert sent.body["messages"] == [{"role": "user", "content": ask}]
    assert [t["function"]["name"] for t in sent.body["tools"]] == ["get_weather"]
    assert completion.usage is not None
    assert completion.usage.prompt_tokens == len(ask)
    assert completion.usage.completion_tokens == len("get_weather") + len('{"city":"Paris"}')

    messages += [
        {"role": "assistant", "content": None, "tool_calls": [call.model_dump(exclude_none=True)]},
        {"role": "tool", "tool_call_id": call.id, "content": "Sunny, 21 °C"},
    ]
    follow = await client.chat.completions.create(
        model="kimi-k2.6-instant",
        messages=messages,
        tools=[WEATHER_TOOL],  # type: ignore[arg-type, list-item]
    )
    assert follow.choices[0].message.content == "Tool get_weather returned: Sunny, 21 °C"
    assert follow.choices[0].finish_reason == "stop"
