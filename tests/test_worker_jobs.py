"""One job in the worker: failover, no retry after the first token, deadlines, cancel, conversations."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from kimi_sim.answers import answer_for
from kimi_sim.server import SimServer
from shared import keys
from shared.schema import Done, ErrorEvent, Keepalive, Start, TextDelta
from shared.settings import PoolSettings
from tests.sim_fixtures import SimFactory
from tests.test_worker_support import (
    add_accounts,
    chat_request,
    enqueue,
    pending_count,
    reply_events,
    run_burst,
    text_of,
    wait_until,
    worker_settings,
)
from token_service.accounts import Accounts
from upstream_worker import metrics
from upstream_worker.resources import open_worker

CHAT_PATH = "/apiv2/kimi.gateway.chat.v1.ChatService/Chat"


async def _burst(redis_url: str, sim: SimServer, **overrides: object) -> None:
    await run_burst(redis_url, sim.url, **overrides)


async def _states(redis, sim: SimServer, ids: list[str]) -> dict[str, str]:
    async with aiohttp.ClientSession() as session:
        pool = Accounts(redis, PoolSettings(), session, sim.url)
        return {i: (await pool.get(i)).state for i in ids}


async def test_trace_cleanup_deletes_the_upstream_chat(redis, redis_url: str, kimi_sim: SimServer) -> None:
    """A request that does not keep its chat gets it deleted upstream after Done."""
    await add_accounts(redis, kimi_sim, 1)
    job_id = await enqueue(redis, chat_request("delete me"))
    await _burst(redis_url, kimi_sim)
    done = (await reply_events(redis, job_id))[-1]
    assert isinstance(done, Done) and done.conversation_id
    assert kimi_sim.state.deleted_chats == [done.conversation_id]
    assert await redis.exists(keys.conversation_key(done.conversation_id)) == 0


async def test_conversation_is_kept_and_continued_on_its_account(
    redis, redis_url: str, kimi_sim: SimServer
) -> None:
    """keep_chat writes a conversation record; later turns with that id continue the chat on its account."""
    ids = await add_accounts(redis, kimi_sim, 3)
    first = await enqueue(redis, chat_request("first turn", keep_chat=True))
    await _burst(redis_url, kimi_sim)
    events = await reply_events(redis, first)
    start, done = events[0], events[-1]
    assert isinstance(start, Start) and isinstance(done, Done)
    chat_id = done.conversation_id
    assert chat_id and kimi_sim.state.deleted_chats == []
    record = await redis.hgetall(keys.conversation_key(chat_id))
    assert record[b"account_id"].decode() == start.account_id
    assert record[b"chat_id"].decode() == chat_id
    assert record[b"protocol"] == b"connect"
    assert 0 < await redis.ttl(keys.conversation_key(chat_id)) <= keys.CONVERSATION_TTL_S

    for _ in range(3):  # every turn lands on the conversation's account, never on the two others
        second = await enqueue(redis, chat_request("second turn", conversation_id=chat_id))
        await _burst(redis_url, kimi_sim)
        events = await reply_events(redis, second)
        assert isinstance(events[0], Start) and events[0].account_id == start.account_id
        assert isinstance(events[-1], Done) and events[-1].conversation_id == chat_id
        assert text_of(events) == answer_for("second turn")
    assert start.account_id in ids
    assert kimi_sim.state.deleted_chats == []


async def test_failover_to_another_account_before_the_first_token(
    redis, redis_url: str, kimi_sim: SimServer
) -> None:
    """A 429 before the first token cools that account and the job finishes on another one, invisibly."""
    ids = await add_accounts(redis, kimi_sim, 2)
    kimi_sim.state.faults.arm("http_429", count=1, path=CHAT_PATH)
    before = metrics.FAILOVERS._value.get()
    job_id = await enqueue(redis, chat_request("fail over"))
    await _burst(redis_url, kimi_sim)
    events = await reply_events(redis, job_id)
    assert not any(isinstance(e, ErrorEvent) for e in events)
    assert isinstance(events[-1], Done) and text_of(events) == answer_for("fail over")
    states = await _states(redis, kimi_sim, ids)
    assert isinstance(events[0], Start)
    assert states[events[0].account_id] == "active"
    assert sorted(states.values()) == ["active", "cooling"]
    assert metrics.FAILOVERS._value.get() == before + 1


async def test_failover_is_bounded_and_reports_the_last_error(
    redis, redis_url: str, kimi_sim: SimServer
) -> None:
    """When every account answers 429, the job ends with one rate_limited ErrorEvent after max_attempts."""
    await add_accounts(redis, kimi_sim, 3)
    kimi_sim.state.faults.arm("http_429", count=10, path=CHAT_PATH)
    job_id = await enqueue(redis, chat_request("always limited"))
    await _burst(redis_url, kimi_sim, max_attempts=2)
    events = await reply_events(redis, job_id)
    assert len(events) == 1 and isinstance(events[0], ErrorEvent)
    assert events[0].kind == "rate_limited"
    assert len([r for r in kimi_sim.state.requests if r.path == CHAT_PATH]) == 2
    assert await pending_count(redis) == 0


async def test_no_retry_after_the_first_token(redis, redis_url: str, kimi_sim_factory: SimFactory) -> None:
    """A stream cut after the first token ends with an in-band protocol error, never a second attempt."""
    sim = await kimi_sim_factory(chunk_count=4)
    await add_accounts(redis, sim, 2)
    sim.state.faults.arm("cut_mid_stream", count=1, path=CHAT_PATH, after_chunks=2)
    job_id = await enqueue(redis, chat_request("cut me"))
    await _burst(redis_url, sim)
    events = await reply_events(redis, job_id)
    assert any(isinstance(e, TextDelta) for e in events)
    assert isinstance(events[-1], ErrorEvent) and events[-1].kind == "protocol"
    assert not any(isinstance(e, Done) for e in events)
    assert len([r for r in sim.state.requests if r.path == CHAT_PATH]) == 1


async def test_deadline_passed_in_the_queue(redis, redis_url: str, kimi_sim: SimServer) -> None:
    """A job whose deadline passed in the queue ends with ErrorEvent(timeout), is acked and never sent."""
    await add_accounts(redis, kimi_sim, 1)
    job_id = await enqueue(redis, chat_request("too late", deadline_in_s=-1))
    await _burst(redis_url, kimi_sim)
    events = await reply_events(redis, job_id)
    assert len(events) == 1 and isinstance(events[0], ErrorEvent) and events[0].kind == "timeout"
    assert not [r for r in kimi_sim.state.requests if r.path == CHAT_PATH]
    assert await pending_count(redis) == 0


async def test_deadline_passing_mid_call_stops_it(redis, redis_url: str, kimi_sim: SimServer) -> None:
    """A job whose deadline passes while Kimi stalls ends with ErrorEvent(timeout) and frees its account (a
    keep-alive may go out first: the first is due 0.5 s after the lease, as close as the deadline on a busy
    machine)."""
    ids = await add_accounts(redis, kimi_sim, 1)
    kimi_sim.state.faults.arm("stall_first_byte", count=1, path=CHAT_PATH, seconds=3)
    job_id = await enqueue(redis, chat_request("stalled", deadline_in_s=0.5))
    await _burst(redis_url, kimi_sim)
    events = [e for e in await reply_events(redis, job_id) if not isinstance(e, Keepalive)]
    assert len(events) == 1 and isinstance(events[0], ErrorEvent) and events[0].kind == "timeout"
    async with aiohttp.ClientSession() as session:
        pool = Accounts(redis, PoolSettings(), session, kimi_sim.url)
        assert await pool.in_flight(ids[0]) == 0
    assert await pending_count(redis) == 0


async def test_cancel_key_stops_the_upstream_call(
    redis, redis_url: str, kimi_sim_factory: SimFactory
) -> None:
    """The cancel key set mid-stream closes the upstream stream, frees the lease, ends with cancelled."""
    sim = await kimi_sim_factory(chunk_count=40, chunk_delay_s=0.1)
    ids = await add_accounts(redis, sim, 1)
    job_id = await enqueue(redis, chat_request("cancel me"))
    async with open_worker(worker_settings(redis_url, sim.url)) as worker:
        task = asyncio.create_task(worker.run())

        async def streaming() -> bool:
            return any(isinstance(e, TextDelta) for e in await reply_events(redis, job_id))

        await wait_until(streaming)
        await redis.set(keys.cancel_key(job_id), 1, ex=keys.CANCEL_TTL_S)

        async def ended() -> bool:
            events = await reply_events(redis, job_id)
            return isinstance(events[-1], ErrorEvent | Done)

        await wait_until(ended, timeout_s=2.0)
        await worker.aclose()
        await task
    events = await reply_events(redis, job_id)
    assert isinstance(events[-1], ErrorEvent) and events[-1].kind == "cancelled"
    assert len(text_of(events)) < len(answer_for("cancel me"))
    async with aiohttp.ClientSession() as session:
        pool = Accounts(redis, PoolSettings(), session, sim.url)
        assert await pool.in_flight(ids[0]) == 0
    await wait_until(lambda: _closed(sim), timeout_s=2.0)
    assert await pending_count(redis) == 0


async def _closed(sim: SimServer) -> bool:
    return [s.status for s in sim.state.streams] == ["client_closed"]


@pytest.mark.parametrize("model", ["moonshot-v1-8k", "kimi-k2.5-instant"])
async def test_refresh_token_account_speaks_the_models_protocol(
    redis, redis_url: str, kimi_sim: SimServer, model: str
) -> None:
    """A refresh_token account answers through REST or Connect, as its model says."""
    await add_accounts(redis, kimi_sim, 1, kind="refresh_token")
    job_id = await enqueue(redis, chat_request("which protocol", model=model))
    await _burst(redis_url, kimi_sim)
    events = await reply_events(redis, job_id)
    assert isinstance(events[-1], Done), events[-1]
    assert text_of(events) == answer_for("which protocol")
