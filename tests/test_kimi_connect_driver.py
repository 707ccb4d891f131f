"""The Connect driver against the real Kimi simulator: text, thinking, search, continuation, faults."""

from __future__ import annotations

import aiohttp
import pytest

from kimi_sim.answers import answer_for, reasoning_for, search_results_for
from kimi_sim.server import SimServer
from shared.errors import (
    UpstreamAuthError,
    UpstreamOverloaded,
    UpstreamPlanRequired,
    UpstreamProtocolError,
    UpstreamQuotaExhausted,
    UpstreamRateLimited,
    UpstreamStreamBusy,
    UpstreamTimeout,
)
from shared.schema import (
    Citation,
    Done,
    Event,
    Keepalive,
    Message,
    ReasoningDelta,
    Start,
)
from shared.settings import UpstreamTimeouts
from tests.driver_helpers import FAST, collect, text_of
from tests.driver_helpers import call_for as shared_call_for
from tests.driver_helpers import session as session  # the pytest fixture these tests use
from upstream_worker.kimi import ConnectDriver, Creds, UpstreamCall

CHAT = "/apiv2/kimi.gateway.chat.v1.ChatService/Chat"


def creds_for(sim: SimServer, plan: str = "free") -> Creds:
    account = sim.state.add_account("kimi_auth", plan=plan)
    return Creds(
        account_id=account.sub[:12],
        kind="kimi_auth",
        access_token=account.token,
        user_id=account.sub,
        device_id=account.device_id,
        session_id=account.ssid,
    )


def call_for(
    creds: Creds, model: str = "kimi-k2.5-instant", text: str = "hello", **options: object
) -> UpstreamCall:
    return shared_call_for(creds, model, text, **options)


def chat_bodies(sim: SimServer) -> list[dict[str, object]]:
    return [r.body for r in sim.state.requests if r.path == CHAT]


async def test_new_chat(kimi_sim: SimServer, session: aiohttp.ClientSession) -> None:
    """A new chat yields Start(chat id), the exact answer and Done(stop); the call learns both ids."""
    creds = creds_for(kimi_sim)
    call = call_for(creds)
    events = [
        e
        for e in await collect(ConnectDriver(session, kimi_sim.url, FAST), call)
        if not isinstance(e, Keepalive)
    ]
    assert call.chat_id is not None and call.parent_id is not None and call.created_chat
    assert events[0] == Start(conversation_id=call.chat_id)
    assert events[-1] == Done(finish_reason="stop", conversation_id=call.chat_id)
    assert text_of(events) == answer_for("hello")
    request = kimi_sim.state.requests[-1]
    assert request.headers["Connect-Protocol-Version"] == "1"
    assert request.headers["Content-Type"] == "application/connect+json"
    assert request.headers["X-Msh-Device-Id"] == creds.device_id
    assert request.headers["Cookie"] == f"kimi-auth={creds.access_token}"


async def test_thinking(kimi_sim: SimServer, session: aiohttp.ClientSession) -> None:
    """The thinking lane streams the simulator's reasoning as ReasoningDelta, then the answer."""
    events = await collect(
        ConnectDriver(session, kimi_sim.url, FAST), call_for(creds_for(kimi_sim), "kimi-k2.5-thinking")
    )
    assert "".join(e.text for e in events if isinstance(e, ReasoningDelta)) == reasoning_for("hello")
    assert text_of(events) == answer_for("hello")
    assert chat_bodies(kimi_sim)[0]["options"] == {"thinking": True}


async def test_search_citations_and_silent(kimi_sim: SimServer, session: aiohttp.ClientSession) -> None:
    """The search option yields one Citation per web page; a -silent model yields none."""
    creds = creds_for(kimi_sim)
    driver = ConnectDriver(session, kimi_sim.url, FAST)
    events = await collect(driver, call_for(creds, search=True))
    expected = [Citation(i, r["title"], r["url"]) for i, r in enumerate(search_results_for("hello"), 1)]
    assert [e for e in events if isinstance(e, Citation)] == expected
    silent = await collect(driver, call_for(creds, "kimi-search-silent"))
    assert not [e for e in silent if isinstance(e, Citation)]
    assert text_of(silent) == answer_for("hello")


async def test_agent_lane(kimi_sim: SimServer, session: aiohttp.ClientSession) -> None:
    """The agent lane's tool blocks are ignored and the answer is exact."""
    events = await collect(
        ConnectDriver(session, kimi_sim.url, FAST), call_for(creds_for(kimi_sim), "kimi-k2.5-agent")
    )
    assert text_of(events) == answer_for("hello")
    body = chat_bodies(kimi_sim)[0]
    assert (body["kimiplusId"], body["agentMode"]) == ("ok-computer", "TYPE_NORMAL")


@pytest.mark.parametrize(
    ("model", "scenario", "options", "agent_mode"),
    [
        ("kimi-k3", "SCENARIO_OK_COMPUTER", ("k3-agent", "REASONING_EFFORT_HIGH"), "TYPE_NORMAL"),
        ("kimi-k3-max", "SCENARIO_OK_COMPUTER", ("k3-agent", "REASONING_EFFORT_MAX"), "TYPE_NORMAL"),
        (
            "kimi-k3-swarm",
            "SCENARIO_OK_COMPUTER_SWARM",
            ("k3-agent-swarm", "REASONING_EFFORT_HIGH"),
            "TYPE_ULTRA",
        ),
        (
            "kimi-k2.8-low",
            "SCENARIO_OK_COMPUTER",
            ("k28-agent-preview", "REASONING_EFFORT_LOW"),
            "TYPE_NORMAL",
        ),
        ("kimi-k2.6-instant", "SCENARIO_CHAT", ("k2d6-chat", "REASONING_EFFORT_NONE"), None),
    ],
)
async def test_2026_models_reach_kimi_with_their_entry(
    kimi_sim: SimServer,
    session: aiohttp.ClientSession,
    model: str,
    scenario: str,
    options: tuple[str, str],
    agent_mode: str | None,
) -> None:
    """A 2026 model id sends its scenario, catalogue entry (options.model), effort and agent mode; the answer is exact."""
    creds = creds_for(kimi_sim, plan="paid")
    events = await collect(ConnectDriver(session, kimi_sim.url, FAST), call_for(creds, model))
    assert text_of(events) == answer_for("hello")
    body = chat_bodies(kimi_sim)[0]
    assert body["scenario"] == scenario and body["message"]["scenario"] == scenario  # type: ignore[index]
    sent = body["options"]
    assert (sent["model"], sent["reasoning_effort"]) == options  # type: ignore[index]
    assert body.get("agentMode") == agent_mode
    assert body.get("kimiplusId") == ("ok-computer" if agent_mode else None)


async def test_free_account_refused_k3_and_peak_hours(
    kimi_sim: SimServer, session: aiohttp.ClientSession
) -> None:
    """A free account refused K3 raises UpstreamPlanRequired; at peak hours Instant's refusal is UpstreamOverloaded."""
    driver = ConnectDriver(session, kimi_sim.url, FAST)
    free = creds_for(kimi_sim)
    with pytest.raises(UpstreamPlanRequired, match="kimi-k3-swarm needs a paid Kimi plan"):
        await collect(driver, call_for(free, "kimi-k3-swarm"))
    assert text_of(await collect(driver, call_for(free, "kimi-k2.8"))) == answer_for("hello")
    kimi_sim.state.config = kimi_sim.state.config.replace({"peak_hours": True})
    with pytest.raises(UpstreamOverloaded):
        await collect(driver, call_for(free, "kimi-k2.6-instant"))
    paid = creds_for(kimi_sim, plan="paid")
    assert text_of(await collect(driver, call_for(paid, "kimi-k3"))) == answer_for("hello")


async def test_continuation(kimi_sim: SimServer, session: aiohttp.ClientSession) -> None:
    """The second turn sends chat_id and the first turn's assistant id as parent_id, and only the new text."""
    creds = creds_for(kimi_sim)
    driver = ConnectDriver(session, kimi_sim.url, FAST)
    first = call_for(creds)
    await collect(driver, first)
    second = call_for(creds, text="more")
    second.request.messages.insert(0, Message(role="user", content="hello"))
    second.chat_id, second.parent_id = first.chat_id, first.parent_id
    events = await collect(driver, second)
    assert events[0] == Start(conversation_id=first.chat_id)
    assert text_of(events) == answer_for("more")
    body = chat_bodies(kimi_sim)[1]
    assert body["chat_id"] == first.chat_id
    assert body["message"]["parent_id"] == first.parent_id  # type: ignore[index]
    assert body["message"]["blocks"] == [{"message_id": "", "text": {"content": "more"}}]  # type: ignore[index]
    assert second.parent_id != first.parent_id and not second.should_delete


async def test_delete_chat(kimi_sim: SimServer, session: aiohttp.ClientSession) -> None:
    """cleanup() calls DeleteChat for a created chat; the simulator shows it deleted."""
    creds = creds_for(kimi_sim)
    driver = ConnectDriver(session, kimi_sim.url, FAST)
    call = call_for(creds)
    await collect(driver, call)
    assert await driver.cleanup(call) is True
    assert kimi_sim.state.deleted_chats == [call.chat_id]


@pytest.mark.parametrize(
    ("fault", "params", "error", "retry_after_s"),
    [
        ("http_401", {}, UpstreamAuthError, None),
        ("http_429", {"retry_after": 9}, UpstreamRateLimited, 9.0),
        ("resource_exhausted", {"heartbeats": 2}, UpstreamOverloaded, None),
        ("done_then_error", {}, UpstreamOverloaded, None),
        ("done_then_error", {"code": "resource_exhausted"}, UpstreamOverloaded, None),
        ("unauthenticated_trailer", {}, UpstreamAuthError, None),
        ("cut_mid_stream", {"after_chunks": 2}, UpstreamProtocolError, None),
        ("paywall", {}, UpstreamPlanRequired, None),
        ("user_stream_pushing", {}, UpstreamStreamBusy, 2.0),
        ("quota_exhausted", {}, UpstreamQuotaExhausted, None),
    ],
)
async def test_faults(
    kimi_sim: SimServer,
    session: aiohttp.ClientSession,
    fault: str,
    params: dict[str, object],
    error: type[Exception],
    retry_after_s: float | None,
) -> None:
    """Each simulator fault on the Chat call raises its shared.errors exception (after done, too)."""
    kimi_sim.state.faults.arm(fault, path=CHAT, **params)
    with pytest.raises(error) as info:
        await collect(ConnectDriver(session, kimi_sim.url, FAST), call_for(creds_for(kimi_sim)))
    assert type(info.value) is error
    assert getattr(info.value, "retry_after_s", None) == retry_after_s


async def test_done_then_error_still_streams_text_first(
    kimi_sim: SimServer, session: aiohttp.ClientSession
) -> None:
    """With an error trailer after done, the text arrives first and then the error is raised."""
    kimi_sim.state.faults.arm("done_then_error", path=CHAT)
    seen: list[Event] = []
    with pytest.raises(UpstreamOverloaded):
        async for event in ConnectDriver(session, kimi_sim.url, FAST).chat(call_for(creds_for(kimi_sim))):
            seen.append(event)
    assert text_of(seen) == answer_for("hello")
    assert not [e for e in seen if isinstance(e, Done)]


@pytest.mark.parametrize(
    "fault", ["split_utf8", "split_utf8_events", "split_frames", "coalesce_frames", "malformed_event"]
)
async def test_transport_faults_keep_exact_text(
    kimi_sim: SimServer, session: aiohttp.ClientSession, fault: str
) -> None:
    """Characters cut across writes or events, split or coalesced frames, a malformed event: the exact answer."""
    kimi_sim.state.faults.arm(fault, path=CHAT)
    events = await collect(ConnectDriver(session, kimi_sim.url, FAST), call_for(creds_for(kimi_sim)))
    assert text_of(events) == answer_for("hello")
    assert isinstance(events[-1], Done)


async def test_stall_first_byte_times_out(kimi_sim: SimServer, session: aiohttp.ClientSession) -> None:
    """A stalled first byte beyond the first-byte deadline raises UpstreamTimeout."""
    kimi_sim.state.faults.arm("stall_first_byte", path=CHAT, seconds=2.0)
    driver = ConnectDriver(
        session, kimi_sim.url, UpstreamTimeouts(connect_s=2.0, first_byte_s=0.3, idle_s=0.3)
    )
    with pytest.raises(UpstreamTimeout):
        await collect(driver, call_for(creds_for(kimi_sim)))


async def test_stall_mid_stream_idle_timeout(
    kimi_sim_factory: object, session: aiohttp.ClientSession
) -> None:
    """Silence between chunks longer than the idle deadline raises UpstreamTimeout."""
    sim: SimServer = await kimi_sim_factory(heartbeat_interval_s=5.0)  # type: ignore[operator]
    sim.state.faults.arm("stall_mid_stream", path=CHAT, seconds=2.0)
    driver = ConnectDriver(session, sim.url, UpstreamTimeouts(connect_s=2.0, first_byte_s=2.0, idle_s=0.3))
    with pytest.raises(UpstreamTimeout):
        await collect(driver, call_for(creds_for(sim)))


async def test_heartbeats_become_throttled_keepalives(
    kimi_sim_factory: object, session: aiohttp.ClientSession
) -> None:
    """Heartbeats during a silent phase yield Keepalive events, at most one per second."""
    sim: SimServer = await kimi_sim_factory(heartbeat_interval_s=0.1)  # type: ignore[operator]
    sim.state.faults.arm("stall_mid_stream", path=CHAT, seconds=1.5)
    events = await collect(ConnectDriver(session, sim.url, FAST), call_for(creds_for(sim)))
    assert 1 <= sum(isinstance(e, Keepalive) for e in events) <= 2
    assert text_of(events) == answer_for("hello")
