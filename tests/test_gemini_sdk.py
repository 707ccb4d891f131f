"""End to end through the official `google-genai` SDK: real Redis, the Kimi simulator, the gateway, a worker."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import aiohttp
import pytest
import pytest_asyncio
from google import genai
from google.genai import errors, types

from kimi_sim.answers import answer_for, reasoning_for
from shared.secret import Secret
from shared.usage_estimate import estimate_prompt_tokens
from tests.stack import Stack, StackFactory, stack_factory

__all__ = ["stack_factory"]

#: google-genai's async transport (aiohttp, the default when installed) subclasses ClientSession, which
#: aiohttp deprecates: a warning of the SDK's own code, not ours.
pytestmark = pytest.mark.filterwarnings("ignore:Inheritance class AiohttpClientSession:DeprecationWarning")

PROMPT = "hi there"


@pytest_asyncio.fixture
async def stack(stack_factory: StackFactory) -> Stack:
    stack = await stack_factory()
    await stack.add("kimi_auth")
    return stack


def _client(stack: Stack, api_key: str = "local", api_version: str | None = None) -> genai.Client:
    options = types.HttpOptions(base_url=stack.url, api_version=api_version, timeout=30_000)
    return genai.Client(api_key=api_key, http_options=options)


@pytest_asyncio.fixture
async def client(stack: Stack) -> AsyncIterator[genai.Client]:
    client = _client(stack)
    yield client
    await client.aio.aclose()
    client.close()


@pytest.mark.parametrize("api_version", [None, "v1beta"])
async def test_generate_content_exact_text(stack: Stack, api_version: str | None) -> None:
    """generate_content answers the exact text with STOP and usage, on /v1 (SDK default) and /v1beta."""
    client = _client(stack, api_version=api_version)
    try:
        response = await client.aio.models.generate_content(model="kimi-k2.5-instant", contents=PROMPT)
    finally:
        await client.aio.aclose()
        client.close()
    assert response.text == answer_for(PROMPT)
    assert response.candidates is not None
    assert response.candidates[0].finish_reason == types.FinishReason.STOP
    assert response.usage_metadata is not None
    assert response.usage_metadata.prompt_token_count == estimate_prompt_tokens([PROMPT])
    assert (response.usage_metadata.candidates_token_count or 0) > 0


async def test_stream_with_thoughts(client: genai.Client) -> None:
    """generate_content_stream: thought parts first when includeThoughts, then the exact answer, then STOP."""
    config = types.GenerateContentConfig(thinking_config=types.ThinkingConfig(include_thoughts=True))
    thoughts, text, finish = "", "", None
    async for chunk in await client.aio.models.generate_content_stream(
        model="kimi-k2.5-thinking", contents=PROMPT, config=config
    ):
        assert chunk.candidates is not None
        candidate = chunk.candidates[0]
        for part in (candidate.content.parts if candidate.content else None) or []:
            if part.thought:
                assert text == ""
                thoughts += part.text or ""
            else:
                text += part.text or ""
        finish = candidate.finish_reason or finish
    assert (thoughts, text, finish) == (reasoning_for(PROMPT), answer_for(PROMPT), types.FinishReason.STOP)


async def test_stop_sequences_and_max_output_tokens(client: genai.Client) -> None:
    """stopSequences and maxOutputTokens cut the answer at the gateway: STOP and MAX_TOKENS."""
    answer = answer_for(PROMPT)
    stopped = await client.aio.models.generate_content(
        model="kimi-k2.5-instant",
        contents=PROMPT,
        config=types.GenerateContentConfig(stop_sequences=["said"]),
    )
    assert stopped.text == answer[: answer.index("said")]
    assert stopped.candidates is not None and stopped.candidates[0].finish_reason == types.FinishReason.STOP
    text, finish = "", None
    async for chunk in await client.aio.models.generate_content_stream(
        model="kimi-k2.5-instant", contents=PROMPT, config=types.GenerateContentConfig(max_output_tokens=3)
    ):
        text += chunk.text or ""
        finish = (chunk.candidates[0].finish_reason if chunk.candidates else None) or finish
    assert finish == types.FinishReason.MAX_TOKENS
    assert answer.startswith(text) and len(text) < len(answer)


async def test_count_tokens_and_models(client: genai.Client) -> None:
    """count_tokens answers the estimate; models.get resolves a model through the table."""
    count = await client.aio.models.count_tokens(model="kimi-k2.5-instant", contents=PROMPT)
    assert count.total_tokens == estimate_prompt_tokens([PROMPT])
    model = await client.aio.models.get(model="kimi-k2.5-thinking")  # GET /v1/models/…, x-goog-api-key
    assert (model.name, model.display_name) == ("models/kimi-k2.5-thinking", "kimi-k2.5-thinking")


async def test_v1_models_list_depends_on_how_the_caller_authenticates(stack: Stack) -> None:
    """GET /v1/models is OpenAI's list, unless the caller authenticates the Gemini way (header or ?key=)."""
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{stack.url}/v1/models", headers={"Authorization": "Bearer k"}) as resp:
            assert (await resp.json())["object"] == "list"
        async with session.get(f"{stack.url}/v1/models", headers={"x-goog-api-key": "k"}) as resp:
            assert (await resp.json())["models"][0]["name"] == "models/kimi-k2.5-instant"
        async with session.get(f"{stack.url}/v1/models?key=k") as resp:
            assert "models" in await resp.json()


async def test_error_types(client: genai.Client) -> None:
    """An unknown model is a 404 NOT_FOUND ClientError; audio inline_data is a 400 INVALID_ARGUMENT."""
    with pytest.raises(errors.ClientError) as missing:
        await client.aio.models.generate_content(model="gemini-2.5-pro", contents=PROMPT)
    assert (missing.value.code, missing.value.status) == (404, "NOT_FOUND")
    audio = types.Part.from_bytes(data=b"RIFF", mime_type="audio/wav")
    with pytest.raises(errors.ClientError) as media:
        await client.aio.models.generate_content(model="kimi", contents=[audio, "?"])
    assert (media.value.code, media.value.status) == (400, "INVALID_ARGUMENT")
    assert (
        media.value.message
        == "contents[0].parts[0]: audio/wav is not supported; Kimi reads images and documents only"
    )


async def test_authentication_error(stack_factory: StackFactory) -> None:
    """With GATEWAY_API_KEYS set, a wrong x-goog-api-key is a 401 UNAUTHENTICATED; ?key= works too."""
    stack = await stack_factory(api_keys=(Secret("right"),))
    client = _client(stack, api_key="wrong")
    try:
        with pytest.raises(errors.ClientError) as info:
            await client.aio.models.generate_content(model="kimi", contents=PROMPT)
    finally:
        await client.aio.aclose()
        client.close()
    assert (info.value.code, info.value.status) == (401, "UNAUTHENTICATED")
    url = f"{stack.url}/v1beta/models/kimi:countTokens?key=right"
    async with aiohttp.ClientSession() as session, session.post(url, json={"contents": []}) as resp:
        assert resp.status == 400  # authenticated, then refused for its empty contents


async def test_upstream_failure_mid_stream_is_an_in_band_error(stack: Stack, client: genai.Client) -> None:
    """An upstream cut after the first token raises in the SDK's stream, never a made-up STOP."""
    await stack.arm("cut_mid_stream", after_chunks=1)
    with pytest.raises(errors.APIError):
        async for _ in await client.aio.models.generate_content_stream(
            model="kimi-k2.5-instant", contents=PROMPT
        ):
            pass


async def test_json_array_stream_without_alt(stack: Stack) -> None:
    """streamGenerateContent without alt=sse answers one JSON array of responses."""
    url = f"{stack.url}/v1beta/models/kimi-k2.5-instant:streamGenerateContent"
    body = {"contents": [{"role": "user", "parts": [{"text": PROMPT}]}]}
    async with aiohttp.ClientSession() as session, session.post(url, json=body) as resp:
        assert resp.headers["Content-Type"].startswith("application/json")
        chunks = json.loads(await resp.read())
    text = "".join(c["candidates"][0]["content"]["parts"][0]["text"] for c in chunks)
    assert text == answer_for(PROMPT)
    assert chunks[-1]["candidates"][0]["finishReason"] == "STOP"


@pytest.mark.slow
async def test_sdk_stream_survives_a_delayed_first_token(stack_factory: StackFactory) -> None:
    """SLOW (3 s): newline keep-alives reach the SDK while Kimi stalls, and its stream still parses."""
    stack = await stack_factory(keepalive_interval_s=0.5)
    await stack.add("kimi_auth")
    await stack.arm("stall_first_byte", seconds=3.0, path="Chat")
    url = f"{stack.url}/v1beta/models/kimi-k2.5-instant:streamGenerateContent?alt=sse"
    body = {"contents": [{"role": "user", "parts": [{"text": PROMPT}]}]}
    async with aiohttp.ClientSession() as session, session.post(url, json=body) as resp:
        raw = await resp.read()
    assert raw.startswith(b"\n\n\n")  # at least three keep-alives before the first frame
    await stack.arm("stall_first_byte", seconds=3.0, path="Chat")
    # The SDK's timeout is a total one (aiohttp ClientTimeout(total=…)), which no keep-alive can extend.
    client = genai.Client(api_key="k", http_options=types.HttpOptions(base_url=stack.url, timeout=30_000))
    try:
        text = "".join(
            [
                c.text or ""
                async for c in await client.aio.models.generate_content_stream(model="kimi", contents=PROMPT)
            ]
        )
    finally:
        await client.aio.aclose()
        client.close()
    assert text == answer_for(PROMPT)


async def test_upstream_overload_is_503_unavailable(stack: Stack, client: genai.Client) -> None:
    """Kimi's "server overloaded" before the first token is a ServerError 503 UNAVAILABLE."""
    await stack.arm("resource_exhausted", count=5)
    with pytest.raises(errors.ServerError) as info:
        await client.aio.models.generate_content(model="kimi-k2.5-instant", contents=PROMPT)
    assert (info.value.code, info.value.status) == (503, "UNAVAILABLE")
