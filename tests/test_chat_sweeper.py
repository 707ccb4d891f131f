"""The chat sweeper, through the official `openai` SDK on a real stack: the Kimi chat a stored response kept is
deleted from its account once the response has lapsed (after the latest response of a native chain), while
`store: false` chats and Chat Completions' chats (throwaway or kept with `conversation_id`) are never touched;
a busy account is tried again at the next sweep, a disabled one dropped. What Kimi deleted is read from the
simulator's state, what the gateway and worker keep from Redis."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
import openai
import pytest
import pytest_asyncio
from prometheus_client import REGISTRY

from shared.keys import CHATS_SWEEP, conversation_key, response_chat_head_key, stored_response_key
from shared.settings import PoolSettings
from tests.stack import Stack, StackFactory, sim_regions, stack_factory
from token_service.accounts import Accounts
from upstream_worker.kimi.connect import DELETE_CHAT_PATH

__all__ = ["stack_factory"]

#: A stored response lives this long here, and a request may take this long (the sweep's margin).
TTL_S = 1.0
REQUEST_TIMEOUT_S = 1.0
SWEEP_INTERVAL_S = 0.1
#: (account kind, model): a Connect lane and a REST lane.
LANES = [("kimi_auth", "kimi-k2.5-instant"), ("refresh_token", "kimi")]


async def _start(stack_factory: StackFactory) -> Stack:
    return await stack_factory(
        stored_response_ttl_s=TTL_S,
        request_timeout_s=REQUEST_TIMEOUT_S,
        worker_overrides={"chat_sweep_interval_s": SWEEP_INTERVAL_S},
    )


@pytest_asyncio.fixture
async def client() -> AsyncIterator[Callable[[Stack], openai.AsyncOpenAI]]:
    made: list[openai.AsyncOpenAI] = []

    def make(stack: Stack) -> openai.AsyncOpenAI:
        made.append(
            openai.AsyncOpenAI(base_url=f"{stack.url}/v1", api_key="sk-local", max_retries=0, timeout=30)
        )
        return made[-1]

    yield make
    for one in made:
        await one.close()


async def _until(check: Callable[[], Awaitable[bool]], timeout_s: float = 6.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not await check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


async def _kept_chat(stack: Stack, response_id: str) -> str:
    conversation: str = json.loads(await stack.redis.get(stored_response_key(response_id)))["conversation"]
    return conversation


async def _deleted(stack: Stack) -> list[str]:
    deleted: list[str] = (await stack.sim_state())["deleted_chats"]
    return deleted


async def _swept(stack: Stack, chat: str) -> None:
    """Wait until Kimi has deleted `chat`."""

    async def gone() -> bool:
        return chat in await _deleted(stack)

    await _until(gone)


def _swept_total(outcome: str) -> float:
    return REGISTRY.get_sample_value("kimi_worker_chats_swept_total", {"outcome": outcome}) or 0.0


async def _pool(stack: Stack, session: aiohttp.ClientSession) -> Accounts:
    return Accounts(
        stack.redis,
        PoolSettings(max_concurrency_per_account=1, **sim_regions(stack.sim)),
        session,
        stack.sim.url,
    )


@pytest.mark.parametrize(("kind", "model"), LANES, ids=["connect", "rest"])
async def test_a_lapsed_response_chat_is_deleted_with_its_record(
    stack_factory: StackFactory, client: Callable[[Stack], openai.AsyncOpenAI], kind: str, model: str
) -> None:
    """A stored response's chat is due at its expiry plus the request timeout; then the sweeper deletes it in
    Kimi, with its conversation record and chat head, once."""
    stack = await _start(stack_factory)
    await stack.add(kind)
    before_ms = time.time() * 1000
    response = await client(stack).responses.create(model=model, input="Hello there")
    after_ms = time.time() * 1000
    chat = await _kept_chat(stack, response.id)
    score = await stack.redis.zscore(CHATS_SWEEP, chat)
    margin_ms = (TTL_S + REQUEST_TIMEOUT_S) * 1000
    assert before_ms + margin_ms - 1 <= score <= after_ms + margin_ms + 1
    assert await stack.redis.exists(conversation_key(chat), response_chat_head_key(chat)) == 2
    deleted_before = _swept_total("deleted")
    await _swept(stack, chat)
    assert time.time() * 1000 >= score
    await _until(lambda: _no_keys(stack, chat))
    assert await stack.redis.zscore(CHATS_SWEEP, chat) is None
    assert (await _deleted(stack)).count(chat) == 1
    assert _swept_total("deleted") == deleted_before + 1


async def _no_keys(stack: Stack, chat: str) -> bool:
    return await stack.redis.exists(conversation_key(chat), response_chat_head_key(chat)) == 0


async def test_a_native_chain_is_swept_once_after_its_latest_response(
    stack_factory: StackFactory, client: Callable[[Stack], openai.AsyncOpenAI]
) -> None:
    """A native continuation stores a newer response in the same chat: the chat's due time moves to the later
    response's, the earlier due time passes without a delete, and the chat is deleted once after the later."""
    stack = await _start(stack_factory)
    await stack.add("kimi_auth")
    sdk = client(stack)
    first = await sdk.responses.create(model="kimi-k2.5-instant", input="Hello there")
    chat = await _kept_chat(stack, first.id)
    first_due = await stack.redis.zscore(CHATS_SWEEP, chat)
    await asyncio.sleep(0.6)
    second = await sdk.responses.create(
        model="kimi-k2.5-instant", input="And again", previous_response_id=first.id
    )
    assert await _kept_chat(stack, second.id) == chat  # native: the same chat
    second_due = await stack.redis.zscore(CHATS_SWEEP, chat)
    assert second_due >= first_due + 600
    await asyncio.sleep(max(0.0, first_due / 1000 - time.time()) + 3 * SWEEP_INTERVAL_S)
    assert time.time() * 1000 < second_due  # the first response's time is past, the second's is not
    assert chat not in await _deleted(stack)
    assert await stack.redis.exists(conversation_key(chat)) == 1
    await _swept(stack, chat)
    assert time.time() * 1000 >= second_due
    await asyncio.sleep(3 * SWEEP_INTERVAL_S)
    assert (await _deleted(stack)).count(chat) == 1
    deletes = await stack.sim_requests(DELETE_CHAT_PATH)
    assert [call["body"]["chat_id"] for call in deletes] == [chat]
    assert await stack.redis.zcard(CHATS_SWEEP) == 0


async def test_deleting_the_latest_response_sweeps_its_chat_at_once(
    stack_factory: StackFactory, client: Callable[[Stack], openai.AsyncOpenAI]
) -> None:
    """With an hour's TTL: deleting an earlier response of a chain leaves the chat (the later one still reaches
    it); deleting the latest makes the chat due now, and the sweeper deletes it in Kimi at its next tick."""
    stack = await stack_factory(
        stored_response_ttl_s=3600.0, worker_overrides={"chat_sweep_interval_s": SWEEP_INTERVAL_S}
    )
    await stack.add("kimi_auth")
    sdk = client(stack)
    first = await sdk.responses.create(model="kimi-k2.5-instant", input="Hello there")
    second = await sdk.responses.create(
        model="kimi-k2.5-instant", input="And again", previous_response_id=first.id
    )
    chat = await _kept_chat(stack, second.id)
    due = await stack.redis.zscore(CHATS_SWEEP, chat)
    await sdk.responses.delete(first.id)
    assert await stack.redis.zscore(CHATS_SWEEP, chat) == due
    await asyncio.sleep(3 * SWEEP_INTERVAL_S)
    assert chat not in await _deleted(stack)
    await sdk.responses.delete(second.id)
    await _swept(stack, chat)
    await _until(lambda: _no_keys(stack, chat))
    assert (await _deleted(stack)).count(chat) == 1


async def test_chats_kept_by_conversation_id_and_throwaway_chats_are_left_alone(
    stack_factory: StackFactory, client: Callable[[Stack], openai.AsyncOpenAI]
) -> None:
    """Only stored responses' chats are swept: a kimi-free-api `conversation_id` chat stays in Kimi with its
    record, and the chats of `store: false` and plain Chat Completions (deleted after their turn) are never
    deleted again; the sweep set only ever holds the stored response's chat."""
    stack = await _start(stack_factory)
    await stack.add("kimi_auth")
    sdk = client(stack)
    kept = await sdk.chat.completions.create(
        model="kimi-k2.5-instant",
        messages=[{"role": "user", "content": "keep me"}],
        extra_body={"conversation_id": "none"},
    )
    await sdk.chat.completions.create(model="kimi-k2.5-instant", messages=[{"role": "user", "content": "go"}])
    await sdk.responses.create(model="kimi-k2.5-instant", input="not stored", store=False)
    thrown_away = await _deleted(stack)
    assert len(thrown_away) == 2 and kept.id not in thrown_away
    stored = await sdk.responses.create(model="kimi-k2.5-instant", input="stored")
    chat = await _kept_chat(stack, stored.id)
    assert await stack.redis.zrange(CHATS_SWEEP, 0, -1) == [chat.encode()]
    await _swept(stack, chat)
    await asyncio.sleep(3 * SWEEP_INTERVAL_S)
    assert await _deleted(stack) == [*thrown_away, chat]
    assert kept.id in (await stack.sim_state())["chats"]
    assert await stack.redis.hget(conversation_key(kept.id), "chat_id") == kept.id.encode()


async def test_a_busy_account_is_tried_again_at_the_next_sweep(
    stack_factory: StackFactory, client: Callable[[Stack], openai.AsyncOpenAI]
) -> None:
    """While the chat's account is at its cap, a due chat goes back into the set for one interval (outcome
    `retry`), untouched; once the account is free, the next sweep deletes it."""
    stack = await _start(stack_factory)
    account = await stack.add("kimi_auth")
    response = await client(stack).responses.create(model="kimi-k2.5-instant", input="Hello there")
    chat = await _kept_chat(stack, response.id)
    due = await stack.redis.zscore(CHATS_SWEEP, chat)
    retries_before = _swept_total("retry")
    async with aiohttp.ClientSession() as session:
        pool = await _pool(stack, session)
        lease = await pool.lease(only={account})
        await asyncio.sleep(max(0.0, due / 1000 - time.time()))

        async def retried() -> bool:
            return _swept_total("retry") >= retries_before + 2

        await _until(retried)
        later = await stack.redis.zscore(CHATS_SWEEP, chat)
        assert later is not None and due < later <= time.time() * 1000 + SWEEP_INTERVAL_S * 1000 + 1
        assert chat not in await _deleted(stack)
        assert await stack.redis.exists(conversation_key(chat)) == 1
        await pool.release(lease, "ok")
    await _swept(stack, chat)
    await _until(lambda: _no_keys(stack, chat))


async def test_a_disabled_account_is_dropped(
    stack_factory: StackFactory, client: Callable[[Stack], openai.AsyncOpenAI]
) -> None:
    """A due chat whose account is disabled cannot be deleted: it leaves the set with its record and head
    (outcome `gone`), and nothing is sent to Kimi."""
    stack = await _start(stack_factory)
    account = await stack.add("kimi_auth")
    response = await client(stack).responses.create(model="kimi-k2.5-instant", input="Hello there")
    chat = await _kept_chat(stack, response.id)
    gone_before = _swept_total("gone")
    async with aiohttp.ClientSession() as session:
        await (await _pool(stack, session)).disable(account)

    async def dropped() -> bool:
        return await stack.redis.zscore(CHATS_SWEEP, chat) is None and await _no_keys(stack, chat)

    await _until(dropped)
    assert _swept_total("gone") == gone_before + 1
    assert chat not in await _deleted(stack)
    assert chat in (await stack.sim_state())["chats"]


async def test_an_interval_of_zero_turns_the_sweeper_off(
    stack_factory: StackFactory, client: Callable[[Stack], openai.AsyncOpenAI]
) -> None:
    """With CHAT_SWEEP_INTERVAL_S=0 no worker sweeps: a due chat stays in Kimi and in the set, record and all."""
    stack = await stack_factory(
        stored_response_ttl_s=TTL_S,
        request_timeout_s=REQUEST_TIMEOUT_S,
        worker_overrides={"chat_sweep_interval_s": 0.0},
    )
    await stack.add("kimi_auth")
    response = await client(stack).responses.create(model="kimi-k2.5-instant", input="Hello there")
    chat = await _kept_chat(stack, response.id)
    due = await stack.redis.zscore(CHATS_SWEEP, chat)
    await asyncio.sleep(max(0.0, due / 1000 - time.time()) + 3 * SWEEP_INTERVAL_S)
    assert await stack.redis.zscore(CHATS_SWEEP, chat) == due
    assert await stack.redis.exists(conversation_key(chat), response_chat_head_key(chat)) == 2
    assert await _deleted(stack) == []
