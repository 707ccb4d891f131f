"""Kimi's "another stream of this user is still running": retried, never held against the account."""

from __future__ import annotations

import asyncio

import aiohttp
from openai import AsyncOpenAI

from kimi_sim.answers import answer_for
from kimi_sim.envelope import json_frame
from kimi_sim.server import SimServer
from shared import keys
from shared.schema import Done, ErrorEvent, Keepalive, Start
from shared.settings import PoolSettings
from tests.stack import StackFactory, stack_factory
from tests.test_worker_support import (
    chat_request,
    enqueue,
    reply_events,
    run_burst,
    text_of,
    wait_until,
)
from token_service.accounts import Accounts
from token_service.store import Account
from upstream_worker.retries import MAX_STREAM_BUSY

__all__ = ["stack_factory"]  # the fixture, imported for pytest

CHAT_PATH = "/apiv2/kimi.gateway.chat.v1.ChatService/Chat"
REST_PATH = "/completion/stream"


async def _burst(redis_url: str, sim: SimServer) -> None:
    await run_burst(redis_url, sim.url)


async def _accounts(redis, sim: SimServer, count: int, kind: str = "kimi_auth") -> list[tuple[str, str]]:
    """`count` simulator accounts saved in the pool, as (account id, token)."""
    pairs = []
    async with aiohttp.ClientSession() as session:
        pool = Accounts(redis, PoolSettings(), session, sim.url)
        for _ in range(count):
            token = sim.state.add_account(kind).token
            account, _created = await pool.add(token)
            pairs.append((account.id, token))
    return pairs


async def _account(redis, sim_url: str, account_id: str) -> Account:
    async with aiohttp.ClientSession() as session:
        pool = Accounts(redis, PoolSettings(), session, sim_url)
        account = await pool.get(account_id)
    assert account is not None
    return account


async def _assert_not_cooled(redis, sim_url: str, account_id: str) -> None:
    account = await _account(redis, sim_url, account_id)
    assert (account.state, account.cooling_until_ms, account.cooling_until) == ("active", 0, None)
    assert account.counters.get("rate_limited", 0) == 0


async def _kept_turn(redis, redis_url: str, sim: SimServer, prompt: str, model: str | None = None) -> str:
    """One finished keep_chat turn; the Kimi chat id."""
    extra = {"model": model} if model else {}
    job_id = await enqueue(redis, chat_request(prompt, keep_chat=True, **extra))
    await _burst(redis_url, sim)
    done = (await reply_events(redis, job_id))[-1]
    assert isinstance(done, Done) and done.conversation_id, done
    return done.conversation_id


def _calls(sim: SimServer, path: str) -> list[str]:
    """The Authorization header of every call whose path contains `path`, in order."""
    return [r.headers.get("Authorization", "") for r in sim.state.requests if path in r.path]


async def _hold_stream(sim: SimServer, token: str, seconds: float) -> None:
    """Another client of the same user: a Connect stream that stays open `seconds` before its answer."""
    sim.state.faults.arm("stall_mid_stream", count=1, path=CHAT_PATH, seconds=seconds)
    body = json_frame({"message": {"role": "user", "blocks": [{"text": {"content": "elsewhere"}}]}})
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/connect+json"}
    async with (
        aiohttp.ClientSession() as session,
        session.post(sim.url + CHAT_PATH, data=body, headers=headers) as resp,
    ):
        assert resp.status == 200
        await resp.read()


async def test_continuation_waits_for_the_users_open_stream(
    redis, redis_url: str, kimi_sim: SimServer
) -> None:
    """A continuation sent while the user's other stream is still open succeeds once it ends; no cooldown."""
    [(account_id, token)] = await _accounts(redis, kimi_sim, 1)
    chat_id = await _kept_turn(redis, redis_url, kimi_sim, "one")
    holder = asyncio.create_task(_hold_stream(kimi_sim, token, seconds=1.0))
    await wait_until(lambda: _running(kimi_sim))
    calls_before = len(_calls(kimi_sim, CHAT_PATH))
    job_id = await enqueue(redis, chat_request("two", conversation_id=chat_id))
    await _burst(redis_url, kimi_sim)
    await holder

    events = await reply_events(redis, job_id)
    assert isinstance(events[0], Start) and events[0].account_id == account_id
    assert isinstance(events[-1], Done) and events[-1].conversation_id == chat_id
    assert text_of(events) == answer_for("two")
    assert [m["content"] for m in kimi_sim.state.chats[chat_id].messages if m["role"] == "user"] == [
        "one",
        "two",
    ]
    # The holder's call, at least one busy answer, then the turn itself.
    assert len(_calls(kimi_sim, CHAT_PATH)) - calls_before >= 3
    await _assert_not_cooled(redis, kimi_sim.url, account_id)


async def _running(sim: SimServer) -> bool:
    return any(stream.status == "running" for stream in sim.state.streams)


async def test_rest_continuation_is_retried_on_its_account(
    redis, redis_url: str, kimi_sim: SimServer
) -> None:
    """REST `chat.user_stream_pushing` twice: the pinned turn is asked again twice and answers exactly."""
    [(account_id, _token)] = await _accounts(redis, kimi_sim, 1, kind="refresh_token")
    chat_id = await _kept_turn(redis, redis_url, kimi_sim, "one", model="moonshot-v1-8k")
    kimi_sim.state.faults.arm("user_stream_pushing", count=2, path=REST_PATH)
    job_id = await enqueue(redis, chat_request("two", model="moonshot-v1-8k", conversation_id=chat_id))
    await _burst(redis_url, kimi_sim)

    events = await reply_events(redis, job_id)
    assert isinstance(events[-1], Done) and text_of(events) == answer_for("two")
    assert len(_calls(kimi_sim, REST_PATH)) == 1 + 3
    await _assert_not_cooled(redis, kimi_sim.url, account_id)


async def test_unpinned_request_fails_over_without_cooling(
    redis, redis_url: str, kimi_sim: SimServer
) -> None:
    """A new chat whose account is busy goes to another account at once; the busy one is not cooled."""
    accounts = dict(await _accounts(redis, kimi_sim, 2))
    kimi_sim.state.faults.arm("user_stream_pushing", count=1, path=CHAT_PATH)
    job_id = await enqueue(redis, chat_request("new chat"))
    await _burst(redis_url, kimi_sim)

    events = await reply_events(redis, job_id)
    assert isinstance(events[-1], Done) and text_of(events) == answer_for("new chat")
    assert isinstance(events[0], Start)
    served = events[0].account_id
    [busy] = set(accounts) - {served}
    assert _calls(kimi_sim, CHAT_PATH) == [f"Bearer {accounts[busy]}", f"Bearer {accounts[served]}"]
    for account_id in accounts:
        await _assert_not_cooled(redis, kimi_sim.url, account_id)


async def test_single_account_pool_waits_for_its_busy_account(
    redis, redis_url: str, kimi_sim: SimServer
) -> None:
    """With no other account to go to, a new chat asks the busy account again after a short wait."""
    [(account_id, _token)] = await _accounts(redis, kimi_sim, 1)
    kimi_sim.state.faults.arm("user_stream_pushing", count=1, path=CHAT_PATH)
    job_id = await enqueue(redis, chat_request("alone"))
    await _burst(redis_url, kimi_sim)

    events = await reply_events(redis, job_id)
    assert isinstance(events[-1], Done) and text_of(events) == answer_for("alone")
    assert len(_calls(kimi_sim, CHAT_PATH)) == 2
    await _assert_not_cooled(redis, kimi_sim.url, account_id)


async def test_busy_waits_stop_at_the_deadline(redis, redis_url: str, kimi_sim: SimServer) -> None:
    """A wait that would pass the job's deadline is not taken: the client gets the 429 at once."""
    [(account_id, _token)] = await _accounts(redis, kimi_sim, 1)
    kimi_sim.state.faults.arm("user_stream_pushing", count=10, path=CHAT_PATH)
    job_id = await enqueue(redis, chat_request("hurry", deadline_in_s=1.2))
    await _burst(redis_url, kimi_sim)

    # The job held an account for over FIRST_KEEPALIVE_S (0.5 s) meanwhile: its keep-alive may come first.
    [error] = [e for e in await reply_events(redis, job_id) if not isinstance(e, Keepalive)]
    assert isinstance(error, ErrorEvent)
    assert (error.kind, error.status, error.retry_after_s, error.retryable) == (
        "rate_limited",
        429,
        2.0,
        True,
    )
    # Asked at once, again after 0.5 s; the next wait (1 s) would end past the deadline.
    assert len(_calls(kimi_sim, CHAT_PATH)) == 2
    await _assert_not_cooled(redis, kimi_sim.url, account_id)


async def test_persistent_busy_answers_429_with_retry_after(stack_factory: StackFactory) -> None:
    """A user stream that stays busy past the retries gives the client a 429 with Retry-After; no cooldown."""
    stack = await stack_factory()
    account_id = await stack.add()
    url = f"{stack.url}/v1/chat/completions"
    body = {"model": "kimi-k2.5-instant", "messages": [{"role": "user", "content": "one"}]}
    async with aiohttp.ClientSession() as session:
        async with session.post(url, json={**body, "conversation_id": "none"}) as resp:
            assert resp.status == 200
            chat_id = (await resp.json())["id"]
        calls_before = len(await stack.sim_requests(CHAT_PATH))
        await stack.arm("user_stream_pushing", count=10, path=CHAT_PATH)
        async with session.post(url, json={**body, "conversation_id": chat_id}) as resp:
            assert resp.status == 429
            assert resp.headers["Retry-After"] == "2"
            error = (await resp.json())["error"]
    assert (error["type"], error["code"]) == ("rate_limit_error", "rate_limit_exceeded"), error
    assert "another reply is being generated" in error["message"].lower()
    assert len(await stack.sim_requests(CHAT_PATH)) - calls_before == MAX_STREAM_BUSY
    await _assert_not_cooled(stack.redis, stack.sim.url, account_id)


async def test_turn_right_after_a_cut_stream_continues(stack_factory: StackFactory) -> None:
    """A continuation sent as soon as a max_tokens-cut turn is recorded (its stream may still count) answers."""
    stack = await stack_factory()
    account_id = await stack.add()
    await stack.configure_sim(chunk_count=20, chunk_delay_s=0.1)
    client = AsyncOpenAI(base_url=f"{stack.url}/v1", api_key="unused", max_retries=0)
    try:
        stream = await client.chat.completions.create(
            model="kimi-k2.5-instant",
            messages=[{"role": "user", "content": "a long story"}],
            stream=True,
            max_tokens=2,
            extra_body={"conversation_id": "none"},
        )
        chunks = [chunk async for chunk in stream]
        assert chunks[-1].choices[0].finish_reason == "length"

        async def recorded() -> bool:  # the worker writes the record once it has seen the cancel
            return bool(await stack.redis.exists(keys.conversation_key(chunks[0].id)))

        await wait_until(recorded, timeout_s=3.0)
        answer = await client.chat.completions.create(
            model="kimi-k2.5-instant",
            messages=[{"role": "user", "content": "go on"}],
            extra_body={"conversation_id": chunks[0].id},
        )
    finally:
        await client.close()
    assert answer.id == chunks[0].id
    assert answer.choices[0].message.content == answer_for("go on")
    await _assert_not_cooled(stack.redis, stack.sim.url, account_id)
