"""Kept conversations: continued only by their own caller, and still continuable after a cut-short turn."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import msgspec
from openai import AsyncOpenAI

from kimi_sim.answers import answer_for
from kimi_sim.common import pick
from kimi_sim.server import SimServer
from shared import keys
from shared.schema import ChatRequest, Done, ErrorEvent, Start, TextDelta
from shared.settings import PoolSettings
from tests.sim_fixtures import SimFactory
from tests.stack import StackFactory, stack_factory
from tests.test_worker_support import (
    add_accounts,
    chat_request,
    enqueue,
    reply_events,
    run_burst,
    text_of,
    wait_until,
    worker_settings,
)
from token_service.accounts import Accounts
from upstream_worker.resources import open_worker

__all__ = ["stack_factory"]  # the fixture, imported for pytest

CHAT_PATH = "/apiv2/kimi.gateway.chat.v1.ChatService/Chat"


async def _burst(redis_url: str, sim: SimServer) -> None:
    await run_burst(redis_url, sim.url)


async def _passthrough(redis, sim: SimServer, count: int) -> list[str]:
    """`count` pass-through tokens saved as the gateway saves them: ephemeral accounts; their ids."""
    async with aiohttp.ClientSession() as session:
        pool = Accounts(redis, PoolSettings(), session, sim.url)
        return await pool.add_ephemeral([sim.state.add_account("kimi_auth").token for _ in range(count)])


def _as(request: ChatRequest, account_ids: list[str] | None) -> ChatRequest:
    return msgspec.structs.replace(request, account_ids=account_ids)


async def _kept_turn(redis, redis_url: str, sim: SimServer, request: ChatRequest) -> str:
    """Run one keep_chat turn to its end; the Kimi chat id."""
    job_id = await enqueue(redis, request)
    await _burst(redis_url, sim)
    done = (await reply_events(redis, job_id))[-1]
    assert isinstance(done, Done) and done.conversation_id, done
    return done.conversation_id


async def _not_found(redis, redis_url: str, sim: SimServer, request: ChatRequest) -> None:
    job_id = await enqueue(redis, request)
    calls = len([r for r in sim.state.requests if r.path == CHAT_PATH])
    await _burst(redis_url, sim)
    events = await reply_events(redis, job_id)
    assert len(events) == 1 and isinstance(events[0], ErrorEvent), events
    assert (events[0].kind, events[0].status) == ("not_found", 404)
    assert len([r for r in sim.state.requests if r.path == CHAT_PATH]) == calls


async def test_passthrough_conversation_continues_only_for_its_own_tokens(
    redis, redis_url: str, kimi_sim: SimServer
) -> None:
    """A chat kept by pass-through token A is not_found for a caller with token B, and continues for A."""
    a, b = await _passthrough(redis, kimi_sim, 2)
    chat_id = await _kept_turn(redis, redis_url, kimi_sim, _as(chat_request("mine", keep_chat=True), [a]))
    await _not_found(redis, redis_url, kimi_sim, _as(chat_request("steal", conversation_id=chat_id), [b]))
    job_id = await enqueue(redis, _as(chat_request("still mine", conversation_id=chat_id), [b, a]))
    await _burst(redis_url, kimi_sim)
    events = await reply_events(redis, job_id)
    assert isinstance(events[0], Start) and events[0].account_id == a
    assert isinstance(events[-1], Done) and text_of(events) == answer_for("still mine")


async def test_server_pool_never_continues_a_passthrough_conversation(
    redis, redis_url: str, kimi_sim: SimServer
) -> None:
    """A pool caller (no account_ids) naming a pass-through client's chat gets not_found; the lease is freed."""
    await add_accounts(redis, kimi_sim, 1)
    [a] = await _passthrough(redis, kimi_sim, 1)
    chat_id = await _kept_turn(redis, redis_url, kimi_sim, _as(chat_request("private", keep_chat=True), [a]))
    await _not_found(redis, redis_url, kimi_sim, chat_request("peek", conversation_id=chat_id))
    async with aiohttp.ClientSession() as session:
        pool = Accounts(redis, PoolSettings(), session, kimi_sim.url)
        assert await pool.in_flight(a) == 0


async def test_unknown_conversation_is_not_found(redis, redis_url: str, kimi_sim: SimServer) -> None:
    """A conversation_id with no record (never kept, or expired) is not_found, never a silent new chat."""
    await add_accounts(redis, kimi_sim, 1)
    await _not_found(
        redis, redis_url, kimi_sim, chat_request("hello", conversation_id="cr1p2q3s4t5u6v7w8x9y")
    )


async def _cancel_when(redis, redis_url: str, sim: SimServer, job_id: str, event_type: type) -> None:
    """Run a worker until the job's reply shows `event_type`, then cancel the job as the gateway does."""
    async with open_worker(worker_settings(redis_url, sim.url)) as worker:
        task = asyncio.create_task(worker.run())

        async def shown() -> bool:
            return any(isinstance(e, event_type) for e in await reply_events(redis, job_id))

        await wait_until(shown)
        await redis.set(keys.cancel_key(job_id), 1, ex=keys.CANCEL_TTL_S)

        async def ended() -> bool:
            return isinstance((await reply_events(redis, job_id))[-1], ErrorEvent)

        await wait_until(ended, timeout_s=3.0)
        await worker.aclose()
        await task
    events = await reply_events(redis, job_id)
    assert isinstance(events[-1], ErrorEvent) and events[-1].kind == "cancelled"


async def _parent_of(redis, chat_id: str) -> str:
    return (await redis.hget(keys.conversation_key(chat_id), "parent_id")).decode()


async def _streams_closed(sim: SimServer) -> bool:
    return all(stream.status != "running" for stream in sim.state.streams)


def _user_messages(sim: SimServer, chat_id: str) -> list[dict[str, str]]:
    return [m for m in sim.state.chats[chat_id].messages if m["role"] == "user"]


async def test_turn_cut_mid_answer_is_continued_after_its_assistant_message(
    redis, redis_url: str, kimi_sim_factory: SimFactory
) -> None:
    """A kept turn cancelled mid-answer records its own assistant message id as the next turn's parent."""
    sim = await kimi_sim_factory(chunk_count=40, chunk_delay_s=0.05)
    await add_accounts(redis, sim, 1)
    chat_id = await _kept_turn(redis, redis_url, sim, chat_request("one", keep_chat=True))
    first_parent = await _parent_of(redis, chat_id)
    second = await enqueue(redis, chat_request("two", conversation_id=chat_id))
    await _cancel_when(redis, redis_url, sim, second, TextDelta)

    parent = await _parent_of(redis, chat_id)
    second_user = _user_messages(sim, chat_id)[1]
    assert second_user["parent_id"] == first_parent
    assert len(parent) == 20 and parent not in (first_parent, second_user["id"])
    third = await enqueue(redis, chat_request("three", conversation_id=chat_id))
    await _burst(redis_url, sim)
    assert text_of(await reply_events(redis, third)) == answer_for("three")
    assert _user_messages(sim, chat_id)[2]["parent_id"] == parent


async def test_turn_cut_before_its_assistant_message_continues_at_the_chat_head(
    redis, redis_url: str, kimi_sim: SimServer
) -> None:
    """A kept turn cancelled after Start but before Kimi named its reply records no parent id, not the old one."""
    await add_accounts(redis, kimi_sim, 1)
    chat_id = await _kept_turn(redis, redis_url, kimi_sim, chat_request("one", keep_chat=True))
    assert await _parent_of(redis, chat_id)
    # Each frame arrives in two halves 0.6 s apart: Start (at the response) long before the assistant message.
    kimi_sim.state.faults.arm("split_frames", count=1, path=CHAT_PATH, parts=2, pause_s=0.6)
    second = await enqueue(redis, chat_request("two", conversation_id=chat_id))
    await _cancel_when(redis, redis_url, kimi_sim, second, Start)

    assert await _parent_of(redis, chat_id) == ""
    await wait_until(lambda: _streams_closed(kimi_sim))  # Kimi allows one stream per user at a time
    third = await enqueue(redis, chat_request("three", conversation_id=chat_id))
    await _burst(redis_url, kimi_sim)
    assert text_of(await reply_events(redis, third)) == answer_for("three")
    assert _user_messages(kimi_sim, chat_id)[-1]["parent_id"] == ""


def _sent_parents(sim: SimServer, chat_id: str) -> list[str]:
    """The parent id of every Chat call that continued `chat_id`, in order (the simulator's request log)."""
    messages = [
        r.body["message"]
        for r in sim.state.requests
        if r.path == CHAT_PATH and pick(r.body, "chat_id", "chatId") == chat_id
    ]
    return [str(pick(m, "parent_id", "parentId") or "") for m in messages]


def _assistant_ids(sim: SimServer, chat_id: str) -> list[str]:
    return [m["id"] for m in sim.state.chats[chat_id].messages if m["role"] == "assistant"]


async def test_later_turns_continue_after_the_previous_assistant_message(
    redis, redis_url: str, kimi_sim: SimServer
) -> None:
    """Each finished turn's assistant message id is the parent id Kimi gets with the conversation's next turn."""
    await add_accounts(redis, kimi_sim, 1)
    chat_id = await _kept_turn(redis, redis_url, kimi_sim, chat_request("one", keep_chat=True))
    for prompt in ("two", "three"):
        job_id = await enqueue(redis, chat_request(prompt, conversation_id=chat_id))
        await _burst(redis_url, kimi_sim)
        assert text_of(await reply_events(redis, job_id)) == answer_for(prompt)
    first, second, _third = _assistant_ids(kimi_sim, chat_id)
    assert _sent_parents(kimi_sim, chat_id) == [first, second]
    assert await _parent_of(redis, chat_id) == _third


async def test_record_exists_with_start_and_next_turn_waits_for_the_running_one(
    redis, redis_url: str, kimi_sim_factory: SimFactory
) -> None:
    """A kept turn's record is in Redis when its Start is; a turn sent while it runs continues after its answer."""
    sim = await kimi_sim_factory(chunk_count=10, chunk_delay_s=0.05)
    [account_id] = await add_accounts(redis, sim, 1)
    first = await enqueue(redis, chat_request("one", keep_chat=True))
    async with open_worker(worker_settings(redis_url, sim.url)) as worker:
        task = asyncio.create_task(worker.run())

        async def started() -> bool:
            return any(isinstance(e, Start) for e in await reply_events(redis, first))

        await wait_until(started, every_s=0.005)
        [start] = [e for e in await reply_events(redis, first) if isinstance(e, Start)]
        assert start.conversation_id is not None
        chat_id = start.conversation_id
        record = await redis.hgetall(keys.conversation_key(chat_id))
        assert (record[b"account_id"].decode(), record[b"chat_id"].decode()) == (account_id, chat_id)
        assert not any(isinstance(e, Done) for e in await reply_events(redis, first))
        second = await enqueue(redis, chat_request("two", conversation_id=chat_id))

        async def ended() -> bool:
            events = await reply_events(redis, second)
            return bool(events) and isinstance(events[-1], Done)

        await wait_until(ended)
        await worker.aclose()
        await task
    assert text_of(await reply_events(redis, first)) == answer_for("one")
    events = await reply_events(redis, second)
    assert text_of(events) == answer_for("two")
    assert isinstance(events[-1], Done) and events[-1].conversation_id == chat_id
    first_answer, second_answer = _assistant_ids(sim, chat_id)
    assert _sent_parents(sim, chat_id)[-1] == first_answer
    assert await _parent_of(redis, chat_id) == second_answer


async def test_continuation_sent_after_the_first_chunk_continues_the_chat(
    stack_factory: StackFactory,
) -> None:
    """A client continuing a kept chat as soon as its first chunk names it (before Done) gets no 404."""
    stack = await stack_factory()
    await stack.add()
    await stack.configure_sim(chunk_count=10, chunk_delay_s=0.05)
    client = AsyncOpenAI(base_url=f"{stack.url}/v1", api_key="unused", max_retries=0)
    try:
        stream = await client.chat.completions.create(
            model="kimi-k2.5-instant",
            messages=[{"role": "user", "content": "one"}],
            stream=True,
            extra_body={"conversation_id": "none"},
        )
        chunks = [await anext(aiter(stream))]
        chat_id = chunks[0].id
        rest = asyncio.create_task(_collect(stream))
        answer = await client.chat.completions.create(
            model="kimi-k2.5-instant",
            messages=[{"role": "user", "content": "two"}],
            extra_body={"conversation_id": chat_id},
        )
        chunks += await rest
    finally:
        await client.close()
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == answer_for("one")
    assert (answer.id, answer.choices[0].message.content) == (chat_id, answer_for("two"))
    first_answer, _second_answer = _assistant_ids(stack.sim, chat_id)
    assert _sent_parents(stack.sim, chat_id)[-1] == first_answer


async def _collect(stream: Any) -> list[Any]:
    return [chunk async for chunk in stream]


async def test_chat_cut_by_max_tokens_is_continued_at_once(stack_factory: StackFactory) -> None:
    """A turn sent right after an OpenAI stream was cut by max_tokens continues the chat after the cut answer."""
    stack = await stack_factory()
    await stack.add()
    await stack.configure_sim(chunk_count=20, chunk_delay_s=0.05)
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
        chat_id = chunks[0].id
        assert chunks[-1].choices[0].finish_reason == "length"
        answer = await client.chat.completions.create(
            model="kimi-k2.5-instant",
            messages=[{"role": "user", "content": "go on"}],
            extra_body={"conversation_id": chat_id},
        )
    finally:
        await client.close()
    assert answer.id == chat_id
    assert answer.choices[0].message.content == answer_for("go on")
    first_user, second_user = _user_messages(stack.sim, chat_id)
    # The cut answer's id (Kimi never completed it): neither the chat's head marker nor the first question.
    parent = _sent_parents(stack.sim, chat_id)[-1]
    assert second_user["parent_id"] == parent and len(parent) == 20 and parent != first_user["id"]
