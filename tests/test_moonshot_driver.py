"""The official API driver against the simulator's official API: answers, usage, tools, vision, errors."""

from __future__ import annotations

import hashlib
from typing import Any

import aiohttp
import pytest
from prometheus_client import REGISTRY

from kimi_sim.answers import answer_for, reasoning_for
from kimi_sim.official_state import ApiKey
from kimi_sim.server import SimServer
from shared.errors import (
    BadRequest,
    ContentFiltered,
    GatewayError,
    ModelNotFound,
    UpstreamAuthError,
    UpstreamError,
    UpstreamOverloaded,
    UpstreamProtocolError,
    UpstreamQuotaExhausted,
    UpstreamRateLimited,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from shared.models import resolve_model
from shared.schema import (
    AttachmentPart,
    ChatRequest,
    Done,
    Event,
    Keepalive,
    Message,
    ReasoningDelta,
    Start,
    TextPart,
    ToolCall,
    ToolCallEvent,
    ToolSpec,
    Usage,
)
from shared.settings import UpstreamTimeouts
from tests.driver_helpers import FAST, text_of
from tests.driver_helpers import session as session  # the pytest fixture these tests use
from upstream_worker.moonshot import KeyCall, KeyCreds, MoonshotDriver

CHAT = "/moonshot/v1/chat/completions"
WEATHER = ToolSpec(name="get_weather", parameters='{"type":"object","properties":{"city":{"type":"string"}}}')
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(64))


def creds_for(sim: SimServer, key: ApiKey, suffix: str = "") -> KeyCreds:
    return KeyCreds(account_id=key.key_id, api_key=key.key, base_url=f"{sim.url}/moonshot{suffix}")


def call_for(creds: KeyCreds, model: str, messages: list[Message] | str, **fields: Any) -> KeyCall:
    spec = resolve_model(model)
    assert spec is not None
    history = [Message(role="user", content=messages)] if isinstance(messages, str) else messages
    return KeyCall(ChatRequest(request_id="r1", model=model, messages=history, **fields), spec, creds)


async def collect(driver: MoonshotDriver, call: KeyCall) -> list[Event]:
    return [e async for e in driver.chat(call) if not isinstance(e, Keepalive)]


def reasoning_of(events: list[Event]) -> str:
    return "".join(e.text for e in events if isinstance(e, ReasoningDelta))


def bodies(sim: SimServer) -> list[Any]:
    return [r.body for r in sim.state.requests if r.path == CHAT]


@pytest.fixture
def key(kimi_sim: SimServer) -> ApiKey:
    return kimi_sim.state.official.mint()


@pytest.fixture
def driver(session: aiohttp.ClientSession) -> MoonshotDriver:
    return MoonshotDriver(session, FAST)


# ---------------------------------------------------------------- answers and usage


@pytest.mark.parametrize("stream", [True, False])
async def test_answer_with_the_exact_usage(
    kimi_sim: SimServer, key: ApiKey, driver: MoonshotDriver, stream: bool
) -> None:
    """K3 streams or returns reasoning and text, then the simulator's exact usage (real, not estimated) and Done."""
    messages = [Message(role="system", content="be brief"), Message(role="user", content="hello")]
    events = await collect(driver, call_for(creds_for(kimi_sim, key), "kimi-k3", messages, stream=stream))
    reasoning, answer = reasoning_for("hello"), answer_for("hello")
    assert events[0] == Start()
    assert (reasoning_of(events), text_of(events)) == (reasoning, answer)
    assert events[-2:] == [
        Usage(
            prompt_tokens=len("be brief") + len("hello"),
            completion_tokens=len(reasoning + answer),
            estimated=False,
        ),
        Done("stop"),
    ]
    (body,) = bodies(kimi_sim)
    expected: dict[str, Any] = {
        "model": "kimi-k3",
        "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello"}],
        "reasoning_effort": "high",
    }
    if stream:
        expected |= {"stream": True, "stream_options": {"include_usage": True}}
    assert body == expected
    assert kimi_sim.state.requests[-1].headers["Authorization"] == f"Bearer {key.key}"


async def test_thinking_off_and_text_models(kimi_sim: SimServer, key: ApiKey, driver: MoonshotDriver) -> None:
    """K2.6 Instant sends thinking disabled and gets no reasoning; moonshot-v1 neither sends nor gets any."""
    creds = creds_for(kimi_sim, key)
    for model, thinking in (("kimi-k2.6-instant", {"type": "disabled"}), ("moonshot-v1-8k", None)):
        events = await collect(driver, call_for(creds, model, "hi"))
        assert reasoning_of(events) == "" and text_of(events) == answer_for("hi")
        assert bodies(kimi_sim)[-1].get("thinking") == thinking


async def test_stream_options_refused_then_usage_in_the_choice(
    kimi_sim: SimServer, key: ApiKey, driver: MoonshotDriver
) -> None:
    """When the platform refuses stream_options the call is sent once more without it; the usage is still exact."""
    kimi_sim.state.faults.arm("stream_options_rejected")
    events = await collect(driver, call_for(creds_for(kimi_sim, key), "moonshot-v1-8k", "hey"))
    assert text_of(events) == answer_for("hey")
    assert events[-2:] == [Usage(len("hey"), len(answer_for("hey")), estimated=False), Done("stop")]
    assert ["stream_options" in b for b in bodies(kimi_sim)] == [True, False]


async def test_base_url_with_v1_and_the_china_region(kimi_sim: SimServer, driver: MoonshotDriver) -> None:
    """A China key on its own base URL, spelled with /v1, reaches the China prefix."""
    key = kimi_sim.state.official.mint("cn")
    creds = KeyCreds(key.key_id, key.key, f"{kimi_sim.url}/moonshot-cn/v1/")
    events = await collect(driver, call_for(creds, "kimi-k2.6", "你好"))
    assert text_of(events) == answer_for("你好")
    assert kimi_sim.state.requests[-1].path == "/moonshot-cn/v1/chat/completions"


# ---------------------------------------------------------------- native tool calls


@pytest.mark.parametrize("stream", [True, False])
async def test_native_tool_call_and_its_result(
    kimi_sim: SimServer, key: ApiKey, driver: MoonshotDriver, stream: bool
) -> None:
    """A native call comes whole as ToolCallEvent with Done(tool_calls); the follow-up with its result is answered."""
    creds = creds_for(kimi_sim, key)
    ask = Message(role="user", content='call get_weather {"city": "巴黎"}')
    first = await collect(driver, call_for(creds, "kimi-k3", [ask], tools=[WEATHER], stream=stream))
    call = ToolCall(id="get_weather:0", name="get_weather", arguments='{"city":"巴黎"}')
    assert [e for e in first if isinstance(e, ToolCallEvent)] == [ToolCallEvent(0, call)]
    assert first[-1] == Done("tool_calls") and text_of(first) == ""
    history = [
        ask,
        Message(role="assistant", content="", tool_calls=[call]),
        Message(role="tool", content='{"temp_c":18}', tool_call_id="get_weather:0", name="get_weather"),
    ]
    second = await collect(driver, call_for(creds, "kimi-k3", history, tools=[WEATHER], stream=stream))
    assert text_of(second) == 'Tool get_weather returned: {"temp_c":18}'
    assert second[-1] == Done("stop")
    assistant = bodies(kimi_sim)[-1]["messages"][1]
    assert assistant["reasoning_content"] == " " and assistant["tool_calls"][0]["id"] == "get_weather:0"


async def test_parallel_calls_and_their_limit(
    kimi_sim: SimServer, key: ApiKey, driver: MoonshotDriver
) -> None:
    """Two call lines give two calls; with parallel_tool_calls off only the first is published."""
    creds = creds_for(kimi_sim, key)
    text = 'call get_weather {"city": "a"}\ncall get_weather {"city": "b"}'
    both = await collect(driver, call_for(creds, "moonshot-v1-8k", text, tools=[WEATHER]))
    assert [e.call.arguments for e in both if isinstance(e, ToolCallEvent)] == [
        '{"city":"a"}',
        '{"city":"b"}',
    ]
    one = await collect(
        driver, call_for(creds, "moonshot-v1-8k", text, tools=[WEATHER], parallel_tool_calls=False)
    )
    assert [(e.index, e.call.id) for e in one if isinstance(e, ToolCallEvent)] == [(0, "get_weather:0")]


# ---------------------------------------------------------------- vision


async def test_vision_image_reaches_the_model(
    kimi_sim: SimServer, key: ApiKey, driver: MoonshotDriver
) -> None:
    """An image attachment reaches a vision model inline: answered by its size and sha256 prefix, 256 tokens."""
    sha256 = hashlib.sha256(PNG).hexdigest()
    image = AttachmentPart(sha256, "image/png", "a.png", len(PNG), "image", "inline")
    message = Message(role="user", content=[TextPart("what is this?"), image])
    call = call_for(creds_for(kimi_sim, key), "moonshot-v1-8k-vision-preview", [message])
    events = await collect(driver, KeyCall(call.request, call.spec, call.creds, {sha256: PNG}))
    note = f"[image 1: {len(PNG)} bytes, sha256:{hashlib.sha256(PNG).hexdigest()[:16]}] "
    assert text_of(events) == note + answer_for("what is this?")
    usage = next(e for e in events if isinstance(e, Usage))
    assert usage.prompt_tokens == len("what is this?") + 256


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("fault", "params", "error", "retry_after_s"),
    [
        ("official_error", {"type": "invalid_request_error"}, BadRequest, None),
        ("official_error", {"type": "content_filter"}, ContentFiltered, None),
        ("official_error", {"type": "permission_denied_error"}, UpstreamError, None),
        ("official_error", {"type": "resource_not_found_error"}, ModelNotFound, None),
        ("official_error", {"type": "engine_overloaded_error"}, UpstreamOverloaded, None),
        ("official_error", {"type": "exceeded_current_quota_error"}, UpstreamQuotaExhausted, None),
        ("official_error", {"type": "rate_limit_reached_error", "retry_after": 7}, UpstreamRateLimited, 7.0),
        ("official_error", {"type": "rate_limit_reached_error"}, UpstreamRateLimited, 1.0),
        ("official_error", {"type": "server_error"}, UpstreamUnavailable, None),
        ("official_error", {"type": "unexpected_output"}, UpstreamUnavailable, None),
        ("http_401", {}, UpstreamAuthError, None),
        ("http_429", {"retry_after": 3}, UpstreamRateLimited, 3.0),
        ("http_500", {}, UpstreamUnavailable, None),
    ],
)
async def test_errors_mapped(
    kimi_sim: SimServer,
    key: ApiKey,
    driver: MoonshotDriver,
    fault: str,
    params: dict[str, object],
    error: type[GatewayError],
    retry_after_s: float | None,
) -> None:
    """Each platform error raises its shared.errors class with the wait it names; no id or key in the message."""
    kimi_sim.state.faults.arm(fault, path=CHAT, **params)
    with pytest.raises(error) as info:
        await collect(driver, call_for(creds_for(kimi_sim, key), "kimi-k2.6", "x"))
    assert type(info.value) is error and info.value.retry_after_s == retry_after_s
    message = info.value.message
    assert key.key not in message and key.org_id not in message and key.key_id not in message


async def test_key_problems(kimi_sim: SimServer, key: ApiKey, driver: MoonshotDriver) -> None:
    """A key of the other region or a revoked key is UpstreamAuthError; a key without balance is quota exhausted."""
    other = kimi_sim.state.official.mint("cn")
    with pytest.raises(UpstreamAuthError):
        await collect(driver, call_for(creds_for(kimi_sim, other), "kimi-k2.6", "x"))
    key.cash_balance = 0.0
    with pytest.raises(UpstreamQuotaExhausted, match="quota"):
        await collect(driver, call_for(creds_for(kimi_sim, key), "kimi-k2.6", "x"))
    key.revoked = True
    with pytest.raises(UpstreamAuthError):
        await collect(driver, call_for(creds_for(kimi_sim, key), "kimi-k2.6", "x"))


async def test_in_band_error_after_text(kimi_sim: SimServer, key: ApiKey, driver: MoonshotDriver) -> None:
    """An error chunk mid-stream raises after the text that came before it was yielded."""
    kimi_sim.state.faults.arm("official_error", type="content_filter", after_chunks=2)
    events: list[Event] = []
    with pytest.raises(ContentFiltered):
        async for event in driver.chat(call_for(creds_for(kimi_sim, key), "moonshot-v1-8k", "x")):
            events.append(event)
    sent = text_of(events)
    assert sent and answer_for("x").startswith(sent) and sent != answer_for("x")


async def test_content_filter_finish(kimi_sim: SimServer, key: ApiKey, driver: MoonshotDriver) -> None:
    """A stream the platform finishes with content_filter ends Done(content_filter), with its usage."""
    kimi_sim.state.faults.arm("official_finish", reason="content_filter", after_chunks=1)
    events = await collect(driver, call_for(creds_for(kimi_sim, key), "moonshot-v1-8k", "x"))
    sent = text_of(events)
    assert events[-2:] == [Usage(len("x"), len(sent), estimated=False), Done("content_filter")]


@pytest.mark.parametrize("mode", ["eof", "reset"])
async def test_cut_stream_is_a_protocol_error(
    kimi_sim: SimServer, key: ApiKey, driver: MoonshotDriver, mode: str
) -> None:
    """A stream that stops without [DONE] raises UpstreamProtocolError, never a made-up Done."""
    kimi_sim.state.faults.arm("cut_mid_stream", after_chunks=2, mode=mode)
    events: list[Event] = []
    with pytest.raises(UpstreamProtocolError):
        async for event in driver.chat(call_for(creds_for(kimi_sim, key), "moonshot-v1-8k", "x")):
            events.append(event)
    assert not any(isinstance(e, Done) for e in events)


@pytest.mark.parametrize("fault", ["split_utf8", "split_frames", "coalesce_frames", "malformed_event"])
async def test_transport_faults_keep_exact_text(
    kimi_sim: SimServer, key: ApiKey, driver: MoonshotDriver, fault: str
) -> None:
    """Characters cut across writes, split or coalesced writes, a malformed chunk: the exact answer, no U+FFFD."""
    before = REGISTRY.get_sample_value(
        "kimi_upstream_drift_total", {"protocol": "moonshot", "kind": "malformed"}
    )
    kimi_sim.state.faults.arm(fault, path=CHAT)
    events = await collect(driver, call_for(creds_for(kimi_sim, key), "kimi-k2.6", "切分"))
    assert text_of(events) == answer_for("切分") and reasoning_of(events) == reasoning_for("切分")
    after = REGISTRY.get_sample_value(
        "kimi_upstream_drift_total", {"protocol": "moonshot", "kind": "malformed"}
    )
    assert (after or 0) - (before or 0) == (1 if fault == "malformed_event" else 0)


async def test_stall_first_byte_times_out(
    kimi_sim: SimServer, key: ApiKey, session: aiohttp.ClientSession
) -> None:
    """A platform that sends nothing before the first-byte deadline raises UpstreamTimeout."""
    kimi_sim.state.faults.arm("stall_first_byte", path=CHAT, seconds=2.0)
    driver = MoonshotDriver(session, UpstreamTimeouts(connect_s=2.0, first_byte_s=0.3, idle_s=0.3))
    with pytest.raises(UpstreamTimeout):
        await collect(driver, call_for(creds_for(kimi_sim, key), "kimi-k2.6", "x"))


async def test_connection_refused_is_unavailable(driver: MoonshotDriver) -> None:
    """Nothing listening on the key's base URL raises UpstreamUnavailable."""
    creds = KeyCreds("a", "sk-x", "http://127.0.0.1:9")
    with pytest.raises(UpstreamUnavailable):
        await collect(driver, call_for(creds, "kimi-k2.6", "x"))


async def test_cleanup_has_nothing_to_delete(
    kimi_sim: SimServer, key: ApiKey, driver: MoonshotDriver
) -> None:
    """cleanup() deletes nothing and calls nothing: the API keeps no chat."""
    call = call_for(creds_for(kimi_sim, key), "kimi-k2.6", "x")
    count = len(kimi_sim.state.requests)
    assert await driver.cleanup(call) is False
    assert len(kimi_sim.state.requests) == count
