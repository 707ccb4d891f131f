"""The simulator's official Moonshot API, driven by the official OpenAI SDK as a client."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import openai
import pytest
from openai import AsyncOpenAI

from kimi_sim.answers import answer_for, reasoning_for
from kimi_sim.official_state import ApiKey
from kimi_sim.server import SimServer

WEATHER = {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(40))


def client_for(sim: SimServer, key: ApiKey, prefix: str = "/moonshot") -> AsyncOpenAI:
    return AsyncOpenAI(base_url=f"{sim.url}{prefix}/v1", api_key=key.key, max_retries=0)


@pytest.fixture
async def key(kimi_sim: SimServer) -> ApiKey:
    return kimi_sim.state.official.mint()


@pytest.fixture
async def client(kimi_sim: SimServer, key: ApiKey) -> AsyncIterator[AsyncOpenAI]:
    async with client_for(kimi_sim, key) as c:
        yield c


def usage_of(prompt: str, completion: str) -> dict[str, int]:
    p, c = len(prompt), len(completion)
    return {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}


# ---------------------------------------------------------------- answers and usage


async def test_non_stream_answer_reasoning_and_exact_usage(client: AsyncOpenAI) -> None:
    """A thinking model answers the deterministic text and reasoning; usage counts characters exactly."""
    reply = await client.chat.completions.create(
        model="kimi-k2.6",
        messages=[{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello"}],
    )
    message = reply.choices[0].message
    assert message.content == answer_for("hello")
    assert message.model_extra["reasoning_content"] == reasoning_for("hello")  # type: ignore[index]
    assert reply.choices[0].finish_reason == "stop" and reply.id.startswith("chatcmpl-")
    expected = usage_of("be brief" + "hello", reasoning_for("hello") + answer_for("hello"))
    assert reply.usage is not None and reply.usage.model_dump(exclude_none=True) == {
        **expected,
        "cached_tokens": 0,
    }


async def test_thinking_disabled_and_text_models_have_no_reasoning(client: AsyncOpenAI) -> None:
    """`thinking.type: disabled` on K2.6 and a moonshot-v1 model answer without reasoning_content."""
    for model, extra in (("kimi-k2.6", {"thinking": {"type": "disabled"}}), ("moonshot-v1-8k", {})):
        reply = await client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": "hi"}], extra_body=extra
        )
        assert "reasoning_content" not in (reply.choices[0].message.model_extra or {})
        assert reply.usage is not None and reply.usage.completion_tokens == len(answer_for("hi"))


async def test_stream_with_include_usage(client: AsyncOpenAI) -> None:
    """Streaming sends role, reasoning and content deltas, a finish chunk, then one usage chunk with no choices."""
    stream = await client.chat.completions.create(
        model="kimi-k3",
        messages=[{"role": "user", "content": "hello"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [c async for c in stream]
    assert chunks[0].choices[0].delta.role == "assistant"
    reasoning = "".join(
        (c.choices[0].delta.model_extra or {}).get("reasoning_content", "") for c in chunks if c.choices
    )
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert (reasoning, content) == (reasoning_for("hello"), answer_for("hello"))
    assert chunks[-2].choices[0].finish_reason == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.prompt_tokens == len("hello")
    assert chunks[-1].usage.completion_tokens == len(reasoning + content)


async def test_stream_usage_in_choice_without_stream_options(client: AsyncOpenAI) -> None:
    """Without stream_options the usage rides in choices[0].usage of the finish chunk (§3.3)."""
    stream = await client.chat.completions.create(
        model="moonshot-v1-8k", messages=[{"role": "user", "content": "hey"}], stream=True
    )
    chunks = [c async for c in stream]
    last = chunks[-1]
    assert last.choices[0].finish_reason == "stop" and last.usage is None
    assert last.choices[0].model_extra["usage"] == usage_of("hey", answer_for("hey"))  # type: ignore[index]


# ---------------------------------------------------------------- tools


async def test_tool_call_streamed_in_fragments_then_answered(client: AsyncOpenAI) -> None:
    """`call get_weather {json}` streams a native call in fragments; the follow-up with its result is quoted."""
    messages: list[Any] = [{"role": "user", "content": 'call get_weather {"city": "巴黎"}'}]
    stream = await client.chat.completions.create(
        model="kimi-k3",
        messages=messages,
        tools=[WEATHER],
        stream=True,  # type: ignore[list-item]
    )
    fragments = [
        tc for c in [c async for c in stream] if c.choices for tc in c.choices[0].delta.tool_calls or []
    ]
    assert len(fragments) == 4 and fragments[0].id == "get_weather:0"
    assert fragments[0].function is not None and fragments[0].function.name == "get_weather"
    assert "".join(f.function.arguments or "" for f in fragments if f.function) == '{"city":"巴黎"}'
    call = {
        "id": "get_weather:0",
        "type": "function",
        "function": {"name": "get_weather", "arguments": '{"city":"巴黎"}'},
    }
    follow = [
        *messages,
        {"role": "assistant", "content": "", "reasoning_content": "r", "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "get_weather:0", "content": '{"temp_c":18}'},
    ]
    reply = await client.chat.completions.create(model="kimi-k3", messages=follow, tools=[WEATHER])  # type: ignore[list-item]
    assert reply.choices[0].message.content == 'Tool get_weather returned: {"temp_c":18}'


async def test_non_stream_parallel_calls_and_finish_reason(client: AsyncOpenAI) -> None:
    """Two call lines give two calls with consecutive ids, finish_reason tool_calls and no text."""
    text = 'call get_weather {"city": "a"}\ncall get_weather {"city": "b"}'
    reply = await client.chat.completions.create(
        model="moonshot-v1-8k",
        messages=[{"role": "user", "content": text}],
        tools=[WEATHER],  # type: ignore[list-item]
    )
    calls = reply.choices[0].message.tool_calls or []
    assert [(c.id, c.function.arguments) for c in calls] == [  # type: ignore[union-attr]
        ("get_weather:0", '{"city":"a"}'),
        ("get_weather:1", '{"city":"b"}'),
    ]
    assert reply.choices[0].finish_reason == "tool_calls" and reply.choices[0].message.content == ""


@pytest.mark.parametrize(
    ("model", "body", "phrase"),
    [
        ("kimi-k2.6", {"tool_choice": "required", "tools": [WEATHER]}, "tool_choice 'required'"),
        ("kimi-k2.7-code", {"thinking": {"type": "disabled"}}, "thinking type 'disabled'"),
        ("kimi-k3", {"reasoning_effort": "none"}, "reasoning_effort 'none'"),
        ("kimi-k3", {"thinking": {"type": "enabled"}}, "thinking is not supported"),
        ("kimi-k3", {"temperature": 0.3}, "temperature is fixed"),
        ("kimi-k2.5", {"thinking": {"type": "enabled", "keep": "all"}}, "keep 'all'"),
        ("moonshot-v1-8k", {"tools": [{"type": "function", "function": {"name": "a b"}}]}, "function name"),
    ],
)
async def test_parameter_rules_refused_with_400(
    client: AsyncOpenAI, model: str, body: dict[str, Any], phrase: str
) -> None:
    """Parameters a model does not take are refused with 400 invalid_request_error naming them."""
    with pytest.raises(openai.BadRequestError) as info:
        await client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": "x"}], extra_body=body
        )
    assert info.value.type == "invalid_request_error" and phrase in info.value.message


async def test_thinking_tool_history_needs_reasoning_content(client: AsyncOpenAI) -> None:
    """With thinking on, an assistant tool-call message without reasoning_content is refused (§6)."""
    call = {"id": "get_weather:0", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}
    messages: list[Any] = [
        {"role": "user", "content": "x"},
        {"role": "assistant", "content": "", "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "get_weather:0", "content": "1"},
    ]
    with pytest.raises(
        openai.BadRequestError, match="reasoning_content is missing in assistant tool call message at index 1"
    ):
        await client.chat.completions.create(model="kimi-k2.6", messages=messages, tools=[WEATHER])  # type: ignore[list-item]


# ---------------------------------------------------------------- vision


async def test_vision_answer_reflects_the_image(client: AsyncOpenAI) -> None:
    """A data-URL image on a vision model is described by its byte length and sha256 prefix; 256 tokens each."""
    url = "data:image/png;base64," + base64.b64encode(PNG).decode()
    content: list[Any] = [
        {"type": "text", "text": "what is this?"},
        {"type": "image_url", "image_url": {"url": url}},
    ]
    reply = await client.chat.completions.create(
        model="moonshot-v1-8k-vision-preview", messages=[{"role": "user", "content": content}]
    )
    note = f"[image 1: {len(PNG)} bytes, sha256:{hashlib.sha256(PNG).hexdigest()[:16]}] "
    assert reply.choices[0].message.content == note + answer_for("what is this?")
    assert reply.usage is not None and reply.usage.prompt_tokens == len("what is this?") + 256


@pytest.mark.parametrize(
    ("model", "url", "phrase"),
    [
        ("moonshot-v1-8k", "data:image/png;base64,AAAA", "only accepts text content"),
        ("kimi-k3", "https://example.com/a.png", "base64 data URL"),
        ("kimi-k3", "data:image/png;base64,!!!", "not valid base64"),
    ],
)
async def test_images_refused(client: AsyncOpenAI, model: str, url: str, phrase: str) -> None:
    """Array content on a text-only model, public URLs and broken base64 are refused with 400."""
    content: list[Any] = [{"type": "text", "text": "x"}, {"type": "image_url", "image_url": {"url": url}}]
    with pytest.raises(openai.BadRequestError) as info:
        await client.chat.completions.create(model=model, messages=[{"role": "user", "content": content}])
    assert phrase in info.value.message


# ---------------------------------------------------------------- keys, regions, models, balance


async def test_keys_are_regional_and_revocable(kimi_sim: SimServer, key: ApiKey) -> None:
    """A global key answers 401 incorrect_api_key_error on the China prefix; a revoked key invalid_authentication."""
    async with client_for(kimi_sim, key, "/moonshot-cn") as other_region:
        with pytest.raises(openai.AuthenticationError) as info:
            await other_region.models.list()
    assert info.value.body == {"message": "Incorrect API key provided", "type": "incorrect_api_key_error"}
    cn = kimi_sim.state.official.mint("cn")
    async with client_for(kimi_sim, cn, "/moonshot-cn") as china:
        assert (await china.models.list()).data
    key.revoked = True
    async with client_for(kimi_sim, key) as revoked:
        with pytest.raises(openai.AuthenticationError) as info:
            await revoked.models.list()
    assert info.value.type == "invalid_authentication_error"


async def test_models_balance_and_estimate(kimi_sim: SimServer, client: AsyncOpenAI, key: ApiKey) -> None:
    """/v1/models lists the key's models with context length and reasoning flags; balance and estimate answer."""
    models = {m.id: m.model_extra for m in (await client.models.list()).data}
    assert models["kimi-k3"] == {
        "context_length": 1_048_576,
        "supports_reasoning": True,
        "supports_image_in": True,
    }
    assert models["moonshot-v1-8k"]["supports_reasoning"] is False  # type: ignore[index]
    headers = {"Authorization": f"Bearer {key.key}"}
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{kimi_sim.url}/moonshot/v1/users/me/balance", headers=headers) as resp:
            assert await resp.json() == {
                "code": 0,
                "data": {"available_balance": 50.0, "voucher_balance": 0.0, "cash_balance": 50.0},
                "scode": "0x0",
                "status": True,
            }
        body = {"model": "kimi-k3", "messages": [{"role": "user", "content": "12345"}]}
        async with http.post(
            f"{kimi_sim.url}/moonshot/v1/tokenizers/estimate-token-count", headers=headers, json=body
        ) as resp:
            assert await resp.json() == {"data": {"total_tokens": 5}}


async def test_key_limited_to_models_gets_404(kimi_sim: SimServer) -> None:
    """A key without K3 (no top-up) gets 404 resource_not_found_error naming the model, and /v1/models omits it."""
    key = kimi_sim.state.official.mint(models=["kimi-k2.6"])
    async with client_for(kimi_sim, key) as limited:
        assert [m.id for m in (await limited.models.list()).data] == ["kimi-k2.6"]
        with pytest.raises(openai.NotFoundError) as info:
            await limited.chat.completions.create(
                model="kimi-k3", messages=[{"role": "user", "content": "x"}]
            )
    assert info.value.type == "resource_not_found_error"
    assert info.value.body == {
        "message": "Not found the model kimi-k3 or Permission denied",
        "type": "resource_not_found_error",
    }


async def test_request_log_records_official_calls(
    kimi_sim: SimServer, client: AsyncOpenAI, key: ApiKey
) -> None:
    """Official calls land in the request log with their path, bearer header and parsed JSON body."""
    await client.chat.completions.create(
        model="moonshot-v1-8k", messages=[{"role": "user", "content": "log"}]
    )
    logged = [r for r in kimi_sim.state.requests if r.path == "/moonshot/v1/chat/completions"]
    assert len(logged) == 1
    assert logged[0].headers["Authorization"] == f"Bearer {key.key}"
    assert logged[0].body == {"model": "moonshot-v1-8k", "messages": [{"role": "user", "content": "log"}]}


# ---------------------------------------------------------------- errors and faults


@pytest.mark.parametrize(
    ("error_type", "status", "sdk_error"),
    [
        ("invalid_request_error", 400, openai.BadRequestError),
        ("content_filter", 400, openai.BadRequestError),
        ("permission_denied_error", 403, openai.PermissionDeniedError),
        ("engine_overloaded_error", 429, openai.RateLimitError),
        ("exceeded_current_quota_error", 429, openai.RateLimitError),
        ("server_error", 500, openai.InternalServerError),
        ("unexpected_output", 500, openai.InternalServerError),
    ],
)
async def test_official_error_fault(
    kimi_sim: SimServer, client: AsyncOpenAI, error_type: str, status: int, sdk_error: type[Exception]
) -> None:
    """`official_error` answers the platform's status and {"error": {"type", "message"}} body, no code."""
    kimi_sim.state.faults.arm("official_error", type=error_type)
    with pytest.raises(sdk_error) as info:
        await client.chat.completions.create(model="kimi-k2.6", messages=[{"role": "user", "content": "x"}])
    err = info.value
    assert isinstance(err, openai.APIStatusError) and err.status_code == status
    assert (
        isinstance(err.body, dict) and set(err.body) == {"type", "message"} and err.body["type"] == error_type
    )


async def test_rate_limit_with_retry_after(kimi_sim: SimServer, client: AsyncOpenAI, key: ApiKey) -> None:
    """A 429 rate_limit_reached_error carries Retry-After and says the wait and the account in its message."""
    kimi_sim.state.faults.arm("official_error", type="rate_limit_reached_error", retry_after=7)
    with pytest.raises(openai.RateLimitError) as info:
        await client.chat.completions.create(model="kimi-k2.6", messages=[{"role": "user", "content": "x"}])
    assert info.value.response.headers["Retry-After"] == "7"
    assert info.value.body["message"] == (  # type: ignore[index]
        f"Your account {key.org_id}<{key.key_id}> request reached organization max RPM: 3, "
        "please try again after 7 seconds"
    )


async def test_generic_http_faults_speak_the_platform_shape(kimi_sim: SimServer, client: AsyncOpenAI) -> None:
    """The any-call http_401 / http_429 faults answer official paths in the platform's error shape."""
    kimi_sim.state.faults.arm("http_401", path="/moonshot/")
    with pytest.raises(openai.AuthenticationError) as auth:
        await client.models.list()
    assert auth.value.type == "incorrect_api_key_error"
    kimi_sim.state.faults.arm("http_429", path="/moonshot/", retry_after=3)
    with pytest.raises(openai.RateLimitError) as limited:
        await client.models.list()
    assert limited.value.type == "rate_limit_reached_error"
    assert limited.value.response.headers["Retry-After"] == "3"


async def test_no_balance_and_concurrency_cap(kimi_sim: SimServer, key: ApiKey) -> None:
    """A key at zero balance gets 429 exceeded_current_quota_error; past its concurrency, rate_limit_reached_error."""
    kimi_sim.state.official.keys[key.key].cash_balance = 0.0
    async with client_for(kimi_sim, key) as broke:
        with pytest.raises(openai.RateLimitError) as info:
            await broke.chat.completions.create(
                model="kimi-k2.6", messages=[{"role": "user", "content": "x"}]
            )
    assert info.value.type == "exceeded_current_quota_error"
    capped = kimi_sim.state.official.mint(max_concurrency=1)
    capped.active = 1  # one stream of this key is running
    async with client_for(kimi_sim, capped) as busy:
        with pytest.raises(openai.RateLimitError, match="max concurrency: 1"):
            await busy.chat.completions.create(model="kimi-k2.6", messages=[{"role": "user", "content": "x"}])


async def test_in_band_error_cut_and_early_finish(kimi_sim: SimServer, client: AsyncOpenAI) -> None:
    """Mid-stream: an error chunk ends the stream without [DONE]; official_finish ends early with its reason."""
    kimi_sim.state.faults.arm("official_error", type="content_filter", after_chunks=1)
    stream = await client.chat.completions.create(
        model="moonshot-v1-8k", messages=[{"role": "user", "content": "x"}], stream=True
    )
    with pytest.raises(openai.APIError, match="considered high risk"):
        async for _ in stream:
            pass
    kimi_sim.state.faults.arm("official_finish", reason="content_filter", after_chunks=2)
    stream = await client.chat.completions.create(
        model="moonshot-v1-8k", messages=[{"role": "user", "content": "x"}], stream=True
    )
    chunks = [c async for c in stream]
    assert chunks[-1].choices[0].finish_reason == "content_filter"
    sent = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert answer_for("x").startswith(sent) and sent != answer_for("x")
    assert chunks[-1].choices[0].model_extra["usage"]["completion_tokens"] == len(sent)  # type: ignore[index]


async def test_stream_options_rejected_fault(kimi_sim: SimServer, client: AsyncOpenAI) -> None:
    """`stream_options_rejected` refuses a request carrying stream_options with a 400 naming the field."""
    kimi_sim.state.faults.arm("stream_options_rejected")
    with pytest.raises(openai.BadRequestError, match="stream_options"):
        await client.chat.completions.create(
            model="kimi-k2.6",
            messages=[{"role": "user", "content": "x"}],
            stream=True,
            stream_options={"include_usage": True},
        )


async def test_control_api_mints_and_updates_keys(kimi_sim: SimServer) -> None:
    """POST /__sim/api_keys mints a regional key; POST /__sim/api_keys/{key} changes its balance and models."""
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{kimi_sim.url}/__sim/api_keys", json={"region": "cn", "balance": 5}) as resp:
            minted = await resp.json()
        assert minted["region"] == "cn" and minted["base_path"] == "/moonshot-cn"
        assert minted["key"].startswith("sk-") and len(minted["key"]) == 51
        assert minted["available_balance"] == 5.0
        update = {"balance": 0, "models": ["kimi-k3"], "revoked": True}
        async with http.post(f"{kimi_sim.url}/__sim/api_keys/{minted['key']}", json=update) as resp:
            updated = await resp.json()
    assert (updated["available_balance"], updated["models"], updated["revoked"]) == (0.0, ["kimi-k3"], True)
