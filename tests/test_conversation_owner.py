"""A kept pool conversation belongs to the client that started it: another client key gets not_found, and the
gateway names each client by a non-secret id (real Redis, the simulator, a burst worker)."""

from __future__ import annotations

import msgspec
import redis.asyncio as aioredis

from kimi_sim.answers import answer_for
from kimi_sim.server import SimServer
from shared import keys
from shared.schema import Done, Start, TextDelta
from shared.secret import Secret
from tests.test_gateway_relay import HI, ClientFactory, gateway, worker
from tests.test_worker_conversations import _kept_turn, _not_found
from tests.test_worker_support import add_accounts, chat_request, enqueue, reply_events, run_burst, text_of

__all__ = ["gateway"]


async def test_another_client_key_cannot_continue_a_pool_conversation(
    redis: aioredis.Redis, redis_url: str, kimi_sim: SimServer
) -> None:
    """A chat kept by client A over the pool is not_found for client B, and continues for A."""
    await add_accounts(redis, kimi_sim, 1)
    mine = msgspec.structs.replace(chat_request("mine", keep_chat=True), client_id="key:a")
    chat_id = await _kept_turn(redis, redis_url, kimi_sim, mine)
    assert await redis.hget(keys.conversation_key(chat_id), "owner") == b"key:a"
    steal = chat_request("steal", conversation_id=chat_id)
    await _not_found(redis, redis_url, kimi_sim, msgspec.structs.replace(steal, client_id="key:b"))
    # a caller with no client id (an open gateway's) is no owner either
    await _not_found(redis, redis_url, kimi_sim, chat_request("peek", conversation_id=chat_id))
    again = msgspec.structs.replace(chat_request("still mine", conversation_id=chat_id), client_id="key:a")
    job_id = await enqueue(redis, again)
    await run_burst(redis_url, kimi_sim.url)
    events = await reply_events(redis, job_id)
    assert isinstance(events[-1], Done) and text_of(events) == answer_for("still mine")


async def test_the_gateway_names_each_client_by_a_hash_of_its_key(
    gateway: ClientFactory, redis: aioredis.Redis
) -> None:
    """Jobs carry a client_id that differs per client key, repeats for the same key, and never holds the key."""
    client = await gateway(api_keys=(Secret("k1-secret"), Secret("k2-secret")))
    seen = []
    for key in ("k1-secret", "k2-secret", "k1-secret"):
        task = worker(redis, [Start(), TextDelta("x"), Done()])
        resp = await client.post("/v1/chat/completions", json=HI, headers={"Authorization": f"Bearer {key}"})
        assert resp.status == 200
        seen.append((await task).request.client_id)
        await redis.delete(keys.JOBS_STREAM)
    first, second, again = seen
    assert first.startswith("key:") and first == again and first != second
    assert "secret" not in first + second
