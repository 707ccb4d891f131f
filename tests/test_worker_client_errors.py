"""Kimi refusing a request: client mistakes (BadRequest, NotFound) and content filters reach the client as such."""

from __future__ import annotations

import aiohttp
import pytest

from kimi_sim.server import SimServer
from shared.schema import Done, ErrorEvent
from shared.settings import PoolSettings
from tests.test_worker_support import add_accounts, chat_request, enqueue, reply_events, run_burst
from token_service.accounts import Accounts
from token_service.store import Account


async def _burst(redis_url: str, sim: SimServer) -> None:
    await run_burst(redis_url, sim.url)


async def _account(redis, sim: SimServer, account_id: str) -> Account:
    async with aiohttp.ClientSession() as session:
        return await Accounts(redis, PoolSettings(), session, sim.url).get(account_id)


def _untouched(account: Account) -> bool:
    return account.state == "active" and account.last_error is None and not account.counters.get("errors")


@pytest.mark.parametrize(
    ("kind", "model"), [("kimi_auth", "kimi-k2.5-instant"), ("refresh_token", "moonshot-v1-8k")]
)
async def test_empty_content_is_the_clients_bad_request(
    redis, redis_url: str, kimi_sim: SimServer, kind: str, model: str
) -> None:
    """Kimi's invalid_argument / validation.error for empty content ends the job 400 and leaves the account clean."""
    [account_id] = await add_accounts(redis, kimi_sim, 1, kind=kind)
    job_id = await enqueue(redis, chat_request("", model=model))
    await _burst(redis_url, kimi_sim)
    events = await reply_events(redis, job_id)
    assert isinstance(events[-1], ErrorEvent), events
    assert (events[-1].kind, events[-1].status) == ("invalid_request", 400)
    account = await _account(redis, kimi_sim, account_id)
    assert _untouched(account), account
    assert account.counters.get("ok") == 1


async def test_deleted_conversation_is_the_clients_not_found(
    redis, redis_url: str, kimi_sim: SimServer
) -> None:
    """Continuing a kept chat Kimi no longer has ends the job 404 not_found, and the account stays clean."""
    [account_id] = await add_accounts(redis, kimi_sim, 1)
    first = await enqueue(redis, chat_request("keep me", keep_chat=True))
    await _burst(redis_url, kimi_sim)
    done = (await reply_events(redis, first))[-1]
    assert isinstance(done, Done) and done.conversation_id
    chat = kimi_sim.state.chats[done.conversation_id]
    assert kimi_sim.state.delete_chat(chat.user, chat.id)

    second = await enqueue(redis, chat_request("are you there", conversation_id=chat.id))
    await _burst(redis_url, kimi_sim)
    events = await reply_events(redis, second)
    assert isinstance(events[-1], ErrorEvent), events
    assert (events[-1].kind, events[-1].status) == ("not_found", 404)
    account = await _account(redis, kimi_sim, account_id)
    assert _untouched(account), account
    assert account.counters.get("ok") == 2


async def test_content_filter_mid_answer_ends_with_its_error_not_done(
    redis, redis_url: str, kimi_sim: SimServer
) -> None:
    """A REST `error` event after the first chunk ends the reply with content_filter and no Done before it."""
    await add_accounts(redis, kimi_sim, 1, kind="refresh_token")
    kimi_sim.state.faults.arm("stream_error", count=1, path="/completion/stream", after_chunks=1)
    job_id = await enqueue(redis, chat_request("filtered", model="moonshot-v1-8k"))
    await _burst(redis_url, kimi_sim)
    events = await reply_events(redis, job_id)
    assert isinstance(events[-1], ErrorEvent) and events[-1].kind == "content_filter", events
    assert not any(isinstance(e, Done) for e in events)
