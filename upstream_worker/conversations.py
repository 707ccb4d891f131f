"""Kept conversations: which account and upstream ids a client's `conversation_id` continues.

A record lives in `kimi:conv:<id>` (hash: account_id, protocol, chat_id, parent_id) for CONVERSATION_TTL_S and
is refreshed by every turn. The id a client sees is the Kimi chat id, as in kimi-free-api.
"""

from __future__ import annotations

from dataclasses import dataclass

import redis.asyncio as aioredis

from shared import keys


@dataclass(frozen=True, slots=True)
class Conversation:
    account_id: str
    protocol: str
    chat_id: str
    parent_id: str | None = None


async def load(redis: aioredis.Redis, conversation_id: str) -> Conversation | None:
    raw = await redis.hgetall(keys.conversation_key(conversation_id))
    fields = {_text(k): _text(v) for k, v in raw.items()}
    if not fields.get("account_id") or not fields.get("chat_id"):
        return None
    return Conversation(
        account_id=fields["account_id"],
        protocol=fields.get("protocol", ""),
        chat_id=fields["chat_id"],
        parent_id=fields.get("parent_id") or None,
    )


async def save(
    redis: aioredis.Redis, conversation: Conversation, *, ttl_s: int = keys.CONVERSATION_TTL_S
) -> None:
    key = keys.conversation_key(conversation.chat_id)
    mapping: dict[str | bytes, str | bytes] = {
        "account_id": conversation.account_id,
        "protocol": conversation.protocol,
        "chat_id": conversation.chat_id,
        "parent_id": conversation.parent_id or "",
    }
    pipe = redis.pipeline(transaction=True)
    pipe.hset(key, mapping=mapping)  # type: ignore[arg-type]  # redis-py's Mapping key type is invariant
    pipe.expire(key, ttl_s)
    await pipe.execute()


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
