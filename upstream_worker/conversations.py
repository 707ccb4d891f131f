"""Kept conversations: which account and upstream ids a client's `conversation_id` continues.

A record lives in `kimi:conv:<id>` (hash: account_id, protocol, chat_id, parent_id, tools) for
CONVERSATION_TTL_S and is refreshed by every turn. `<id>` is the id the client sees: the Kimi chat id of the
conversation's first turn, as in kimi-free-api (`chat_id` differs only when that turn failed over to another
account after Kimi had accepted it). `tools` is the chat's `ToolState` as JSON (the call ids Kimi knows, the
next call index, the declarations it has seen; docs/TOOLS.md), empty while no turn of the chat used tools.

A turn keeps its record current with a `RecordTracker` from the moment Kimi accepts it (`Start`): the write
rides in the pipeline of the reply stream's next XADD, before it, so the id a client can read is always
resolvable and the record costs no round trip of its own.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import msgspec
import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline

from shared import keys
from upstream_worker.toolcalls import ToolState

#: Commands `fill` adds to a pipeline (HSET, EXPIRE).
FILL_COMMANDS = 2
_tools_encoder = msgspec.json.Encoder()
_tools_decoder = msgspec.json.Decoder(ToolState)


@dataclass(frozen=True, slots=True)
class Conversation:
    account_id: str
    protocol: str
    chat_id: str
    parent_id: str | None = None
    #: What the chat knows of tool calls (web lanes), for the next turn's `build_continuation`.
    tools: ToolState | None = None


class Carrier(Protocol):
    """The reply publisher, as `RecordTracker` sees it: XADDs that carry the record's writes."""

    def attach(self, fill: Callable[[Pipeline], None], count: int) -> None: ...

    def detach(self, fill: Callable[[Pipeline], None]) -> None: ...

    async def drain(self) -> None: ...


class RecordTracker:
    """One turn's view of its conversation record: the latest state, and whether Redis has it yet.

    `update()` remembers the latest state and queues a write with the publisher's next XADD when none is
    waiting; `fill()`, run when the publisher builds that pipeline, writes the state current *then*, so a late
    pipeline never writes an older one. `settle()` ends the turn's writes: none is left to land after the
    account went to the conversation's next turn.
    """

    __slots__ = ("_carrier", "_queued", "_written", "conversation_id", "current")

    def __init__(self, conversation_id: str | None, carrier: Carrier) -> None:
        #: The id the client sees: the continued conversation's, else the chat id of the first accepted turn.
        self.conversation_id = conversation_id
        self.current: Conversation | None = None
        self._carrier = carrier
        self._written: Conversation | None = None
        self._queued = False

    def update(self, conversation: Conversation) -> None:
        """Take the latest state; queue a write when it changed and none is waiting."""
        if self.conversation_id is None:
            self.conversation_id = conversation.chat_id
        self.current = conversation
        if conversation != self._written and not self._queued:
            self._queued = True
            self._carrier.attach(self.fill, FILL_COMMANDS)

    def fill(self, pipe: Pipeline) -> None:
        assert self.conversation_id is not None and self.current is not None
        fill(pipe, self.conversation_id, self.current)
        self._written, self._queued = self.current, False

    async def settle(self, redis: aioredis.Redis) -> None:
        """Make sure Redis holds the latest state, and that no queued write lands later."""
        await self._carrier.drain()
        if self._queued:  # no XADD came to carry it
            self._carrier.detach(self.fill)
            pipe = redis.pipeline(transaction=False)
            self.fill(pipe)
            await pipe.execute()


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
        tools=_tool_state(fields.get("tools", "")),
    )


def fill(
    pipe: Pipeline, conversation_id: str, conversation: Conversation, *, ttl_s: int = keys.CONVERSATION_TTL_S
) -> None:
    """Add the record's `FILL_COMMANDS` commands to `pipe`."""
    key = keys.conversation_key(conversation_id)
    mapping: dict[str | bytes, str | bytes] = {
        "account_id": conversation.account_id,
        "protocol": conversation.protocol,
        "chat_id": conversation.chat_id,
        "parent_id": conversation.parent_id or "",
        "tools": _tools_encoder.encode(conversation.tools).decode() if conversation.tools else "",
    }
    pipe.hset(key, mapping=mapping)  # type: ignore[arg-type]  # redis-py's Mapping key type is invariant
    pipe.expire(key, ttl_s)


def _tool_state(text: str) -> ToolState | None:
    """The stored state; None when absent or unreadable (another version's fields): the next turn then
    renders its history from scratch, as for a chat that never used tools."""
    if not text:
        return None
    try:
        return _tools_decoder.decode(text)
    except msgspec.DecodeError:
        return None


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
