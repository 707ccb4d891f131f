"""The REST driver against the real Kimi simulator: text, reasoning, citations, continuation, faults."""

from __future__ import annotations

import aiohttp
import pytest

from kimi_sim.answers import answer_for, reasoning_for, search_results_for
from kimi_sim.server import SimServer
from shared.errors import (
    ContentFiltered,
    UpstreamAuthError,
    UpstreamProtocolError,
    UpstreamQuotaExhausted,
    UpstreamRateLimited,
    UpstreamStreamBusy,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from shared.schema import (
    Citation,
    Done,
    ReasoningDelta,
    Start,
)
from shared.settings import UpstreamTimeouts
from tests.driver_helpers import FAST, collect, text_of
from tests.driver_helpers import call_for as shared_call_for
from tests.driver_helpers import session as session  # the pytest fixture these tests use
from upstream_worker.kimi import Creds, RestDriver, UpstreamCall


async def creds_for(sim: SimServer, session: aiohttp.ClientSession, with_user_id: bool = True) -> Creds:
    account = sim.state.add_account("refresh_token")
    async with session.get(
        f"{sim.url}/api/auth/token/refresh", headers={"Authorization": f"Bearer {account.token}"}
    ) as resp:
        access = (await resp.json())["access_token"]
    return Creds(
        account_id=account.sub[:12],
        kind="refresh_token",
        access_token=access,
        user_id=account.sub if with_user_id else None,
        device_id=account.device_id,
        session_id=account.ssid,
    )


def call_for(creds: Creds, model: str = "kimi", text: str = "1+1=?", **options: object) -> UpstreamCall:
    return shared_call_for(creds, model, text, **options)


def completion_bodies(sim: SimServer) -> list[dict[str, object]]:
    return [r.body for r in sim.state.requests if r.path.endswith("/completion/stream")]


async def test_plain_answer(kimi_sim: SimServer, session: aiohttp.ClientSession) -> None:
    """A new chat streams the simulator's exact answer between Start and Done(stop) with the chat id."""
    creds = await creds_for(kimi_sim, session)
    driver = RestDriver(session, kimi_sim.url, FAST)
    call = call_for(creds)
    events = await collect(driver, call)
    assert call.chat_id is not None and call.created_chat
    assert events[0] == Start(conversation_id=call.chat_id)
    assert events[-1] == Done(finish_reason="stop", conversation_id=call.chat_id)
    assert text_of(events) == answer_for("1+1=?\n")
    (body,) = completion_bodies(kimi_sim)
    assert body == {
        "kimiplus_id": "kimi",
        "messages": [{"role": "user", "content": "1+1=?\n"}],
        "refs": [],
        "refs_file": [],
        "use_math": False,
        "use_research": False,
        "use_search": False,
        "extend": {"sidebar": True},
    }
    headers = kimi_sim.state.requests[-1].headers
    assert headers["X-Traffic-Id"] == creds.user_id
    assert headers["X-Msh-Device-Id"] == creds.device_id
    assert headers["X-Msh-Platform"] == "web"


async def test_user_id_fetched_once_when_missing(kimi_sim: SimServer, session: aiohttp.ClientSession) -> None:
    """Without user_id in the credentials, GET /api/user runs once per account and feeds X-Traffic-Id."""
    creds = await creds_for(kimi_sim, session, with_user_id=False)
    driver = RestDriver(session, kimi_sim.url, FAST)
    await collect(driver, call_for(creds))
    await collect(driver, call_for(creds))
    assert sum(r.path == "/api/user" for r in kimi_sim.state.requests) == 1
    assert kimi_sim.state.requests[-1].headers["X-Traffic-Id"] != ""


async def test_k1_reasoning(kimi_sim: SimServer, session: aiohttp.ClientSession) -> None:
    """kimi-thinking sends the K1 kimiplus id and streams k1 text as reasoning before the answer."""
    creds = await creds_for(kimi_sim, session)
    events = await collect(RestDriver(session, kimi_sim.url, FAST), call_for(creds, "kimi-thinking"))
    reasoning = "".join(e.text for e in events if isinstance(e, ReasoningDelta))
    assert reasoning == reasoning_for("1+1=?\n")
    assert text_of(events) == answer_for("1+1=?\n")
    assert completion_bodies(kimi_sim)[0]["kimiplus_id"] == "crm40ee9e5jvhsn7ptcg"


async def test_search_citations_and_silent(kimi_sim: SimServer, session: aiohttp.ClientSession) -> None:
    """kimi-search yields one Citation per search result; kimi-search-silent yields none."""
    creds = await creds_for(kimi_sim, session)
    driver = RestDriver(session, kimi_sim.url, FAST)
    events = await collect(driver, call_for(creds, "kimi-search"))
    expected = [Citation(i, r["title"], r["url"]) for i, r in enumerate(search_results_for("1+1=?\n"), 1)]
    assert [e for e in events if isinstance(e, Citation)] == expected
    silent = await collect(driver, call_for(creds, "kimi-search-silent"))
    assert not [e for e in silent if isinstance(e, Citation)]
    assert text_of(silent) == answer_for("1+1=?\n")
    assert all(b["use_search"] for b in completion_bodies(kimi_sim))


async def test_continuation_sends_no_create_and_passthrough(
    kimi_sim: SimServer, session: aiohttp.ClientSession
) -> None:
    """Continuing a chat skips POST /api/chat and sends the messages in pass-through mode."""
    creds = await creds_for(kimi_sim, session)
    driver = RestDriver(session, kimi_sim.url, FAST)
    first = call_for(creds)
    await collect(driver, first)
    second = call_for(creds, text="and 2+2?")
    second.chat_id = first.chat_id
    events = await collect(driver, second)
    assert not second.created_chat and not second.should_delete
    assert text_of(events) == answer_for("and 2+2?\n")
    assert sum(r.path == "/api/chat" for r in kimi_sim.state.requests) == 1
    assert kimi_sim.state.requests[-1].path == f"/api/chat/{first.chat_id}/completion/stream"


async def test_cleanup_deletes_unless_kept(kimi_sim: SimServer, session: aiohttp.ClientSession) -> None:
    """cleanup() deletes a created chat, but not a kept one."""
    creds = await creds_for(kimi_sim, session)
    driver = RestDriver(session, kimi_sim.url, FAST)
    call = call_for(creds)
    await collect(driver, call)
    kept = call_for(creds)
    kept.keep_chat = True
    await collect(driver, kept)
    assert await driver.cleanup(call) is True
    assert await driver.cleanup(kept) is False
    assert kimi_sim.state.deleted_chats == [call.chat_id]
    assert await driver.delete_chat(creds, "nonexistentchatid000") is False


async def test_length_continuation(kimi_sim: SimServer, session: aiohttp.ClientSession) -> None:
    """A length stop is continued with segment_id on the same chat; the whole answer arrives, ending stop."""
    creds = await creds_for(kimi_sim, session)
    kimi_sim.state.faults.arm("length")
    call = call_for(creds)
    events = await collect(RestDriver(session, kimi_sim.url, FAST), call)
    assert text_of(events) == answer_for("1+1=?\n")
    assert events[-1] == Done(finish_reason="stop", conversation_id=call.chat_id)
    assert sum(isinstance(e, Start) for e in events) == 1
    _first, second = completion_bodies(kimi_sim)
    assert second["action"] == "continue"
    assert isinstance(second["segment_id"], str) and second["segment_id"]


async def test_research_quota_precheck(kimi_sim_factory: object, session: aiohttp.ClientSession) -> None:
    """kimi-research checks research usage first and fails with UpstreamQuotaExhausted once used up."""
    sim: SimServer = await kimi_sim_factory(research_total=1)  # type: ignore[operator]
    creds = await creds_for(sim, session)
    driver = RestDriver(session, sim.url, FAST)
    await collect(driver, call_for(creds, "kimi-research"))
    assert completion_bodies(sim)[0]["use_research"] is True
    with pytest.raises(UpstreamQuotaExhausted, match="research") as info:
        await collect(driver, call_for(creds, "kimi-research"))
    assert type(info.value) is UpstreamQuotaExhausted


@pytest.mark.parametrize(
    ("fault", "params", "error", "retry_after_s"),
    [
        ("http_401", {}, UpstreamAuthError, None),
        ("http_429", {"retry_after": 12}, UpstreamRateLimited, 12.0),
        ("http_500", {}, UpstreamUnavailable, None),
        ("quota_exhausted", {}, UpstreamRateLimited, None),
        ("user_stream_pushing", {}, UpstreamStreamBusy, 2.0),
        ("stream_error", {}, ContentFiltered, None),
        ("cut_mid_stream", {"after_chunks": 2}, UpstreamProtocolError, None),
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
    """Each simulator fault on the completion call raises its shared.errors exception."""
    creds = await creds_for(kimi_sim, session)
    kimi_sim.state.faults.arm(fault, path="/completion/stream", **params)
    with pytest.raises(error) as info:
        await collect(RestDriver(session, kimi_sim.url, FAST), call_for(creds))
    assert type(info.value) is error
    assert getattr(info.value, "retry_after_s", None) == retry_after_s


@pytest.mark.parametrize(
    "fault", ["split_utf8", "split_utf8_events", "split_frames", "coalesce_frames", "malformed_event"]
)
async def test_transport_faults_keep_exact_text(
    kimi_sim: SimServer, session: aiohttp.ClientSession, fault: str
) -> None:
    """Characters cut across writes or events, split or coalesced writes, a malformed event: the exact answer."""
    creds = await creds_for(kimi_sim, session)
    kimi_sim.state.faults.arm(fault)
    events = await collect(RestDriver(session, kimi_sim.url, FAST), call_for(creds))
    assert text_of(events) == answer_for("1+1=?\n")
    assert "\ufffd" not in text_of(events)


async def test_stall_first_byte_times_out(kimi_sim: SimServer, session: aiohttp.ClientSession) -> None:
    """A stalled first byte beyond the first-byte deadline raises UpstreamTimeout."""
    creds = await creds_for(kimi_sim, session)
    kimi_sim.state.faults.arm("stall_first_byte", path="/completion/stream", seconds=2.0)
    driver = RestDriver(session, kimi_sim.url, UpstreamTimeouts(connect_s=2.0, first_byte_s=0.3, idle_s=0.3))
    with pytest.raises(UpstreamTimeout):
        await collect(driver, call_for(creds))


async def test_connection_refused_is_unavailable(session: aiohttp.ClientSession) -> None:
    """Nothing listening on the base URL raises UpstreamUnavailable."""
    creds = Creds(account_id="a", kind="refresh_token", access_token="t", user_id="u")
    with pytest.raises(UpstreamUnavailable):
        await collect(RestDriver(session, "http://127.0.0.1:9", FAST), call_for(creds))
