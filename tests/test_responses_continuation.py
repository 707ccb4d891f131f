"""`previous_response_id` through the official `openai` SDK: a stored response's Kimi chat is continued natively
with only the new input (Connect and REST), and the stored history is replayed in a new chat whenever it cannot
be (an API key served it, `store: false`, a fork of an older turn, the chat's record or account gone). What
reached Kimi is read from the simulator's request log."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import openai
import pytest
import pytest_asyncio

from kimi_sim.answers import answer_for
from shared.keys import conversation_key
from shared.settings import PoolSettings
from tests.stack import Stack, StackFactory, stack_factory
from tests.test_api_keys_sdk import add_key
from tests.test_responses_sdk import ASK_WEATHER, WEATHER
from token_service.accounts import Accounts

__all__ = ["stack_factory"]

CONNECT_CHAT = "ChatService/Chat"
REST_CHAT = "/completion/stream"
#: (account kind, model): a Connect lane and a REST lane.
LANES = [("kimi_auth", "kimi-k2.5-instant"), ("refresh_token", "kimi")]


class Lane:
    """One stack with one web account, its model, and the Kimi chat calls it received."""

    def __init__(self, stack: Stack, kind: str, model: str, client: openai.AsyncOpenAI) -> None:
        self.stack, self.kind, self.model, self.client = stack, kind, model, client
        self._seen = 0

    async def mark(self) -> None:
        """Later `calls()` list only the chat calls made from now on."""
        self._seen = len(await self._all())

    async def calls(self) -> list[tuple[str | None, str]]:
        """(chat id or None for a new chat, the text sent) of each chat call since `mark`."""
        return [_sent(call) for call in (await self._all())[self._seen :]]

    async def _all(self) -> list[dict[str, Any]]:
        return await self.stack.sim_requests(CONNECT_CHAT if self.kind == "kimi_auth" else REST_CHAT)


def _sent(call: dict[str, Any]) -> tuple[str | None, str]:
    body = call["body"]
    if "blocks" in body.get("message", {}):  # Connect: the chat id in the body, the text in its one block
        return body.get("chat_id"), body["message"]["blocks"][0]["text"]["content"]
    # REST: every turn is a call of `/api/chat/<id>/…`; a kept chat's later turns say nothing of the history
    return call["path"].split("/")[3], body["messages"][0]["content"]


@pytest_asyncio.fixture(params=LANES, ids=["connect", "rest"])
async def lane(request: pytest.FixtureRequest, stack_factory: StackFactory) -> AsyncIterator[Lane]:
    kind, model = request.param
    stack = await stack_factory()
    await stack.add(kind)
    client = openai.AsyncOpenAI(base_url=f"{stack.url}/v1", api_key="sk-local", max_retries=0, timeout=30)
    yield Lane(stack, kind, model, client)
    await client.close()


async def _chat_of_first_turn(lane: Lane, response_id: str) -> str:
    stored = json.loads(await lane.stack.redis.get(f"kimi:resp:{response_id}"))
    conversation: str = stored["conversation"]
    return conversation


async def test_text_turn_continues_the_same_chat_with_only_the_new_input(lane: Lane) -> None:
    """The second turn reaches Kimi in the first turn's chat with only its own text, not the replayed history."""
    await lane.mark()
    first = await lane.client.responses.create(
        model=lane.model, input="Hello there", instructions="Be brief."
    )
    second = await lane.client.responses.create(
        model=lane.model, input="And again", instructions="Be brief.", previous_response_id=first.id
    )
    assert second.output_text == answer_for("And again")
    assert second.previous_response_id == first.id
    (first_chat, first_text), (second_chat, second_text) = await lane.calls()
    chat_id = await _chat_of_first_turn(lane, first.id)
    assert chat_id in (await lane.stack.sim_state())["chats"]
    assert first_text.endswith("Hello there" + ("\n" if lane.kind == "refresh_token" else ""))
    assert second_chat == chat_id
    assert second_text == ("And again\n" if lane.kind == "refresh_token" else "And again")
    assert first_chat in (None, chat_id)


async def test_tool_loop_continues_natively(lane: Lane) -> None:
    """A call's output sent with `previous_response_id` goes into the same chat without the question again,
    and the answer quotes it; a third turn continues the same chat too."""
    await lane.mark()
    first = await lane.client.responses.create(model=lane.model, input=ASK_WEATHER, tools=[WEATHER])
    call = next(item for item in first.output if item.type == "function_call")
    output: Any = [{"type": "function_call_output", "call_id": call.call_id, "output": "Sunny, 21 C"}]
    async with lane.client.responses.stream(
        model=lane.model, tools=[WEATHER], previous_response_id=first.id, input=output
    ) as stream:
        second = await stream.get_final_response()
    assert "Sunny, 21 C" in second.output_text
    third = await lane.client.responses.create(
        model=lane.model, tools=[WEATHER], previous_response_id=second.id, input="Thanks"
    )
    assert third.status == "completed"
    chat_id = await _chat_of_first_turn(lane, first.id)
    calls = await lane.calls()
    assert [chat for chat, _ in calls[1:]] == [chat_id, chat_id]
    assert "Sunny, 21 C" in calls[1][1] and "Weather in Paris?" not in calls[1][1]
    assert "Thanks" in calls[2][1] and "Sunny, 21 C" not in calls[2][1]
    assert await _chat_of_first_turn(lane, third.id) == chat_id


async def test_a_fork_of_an_older_turn_is_replayed_in_a_new_chat(lane: Lane) -> None:
    """Continuing a response that is no longer its chat's latest turn replays its history in a new chat, so the
    other branch's turn is not in its context; the fork's own next turn continues its new chat natively."""
    first = await lane.client.responses.create(model=lane.model, input="Hello there")
    await lane.client.responses.create(model=lane.model, input="Branch one", previous_response_id=first.id)
    await lane.mark()
    fork = await lane.client.responses.create(
        model=lane.model, input="Branch two", previous_response_id=first.id
    )
    after = await lane.client.responses.create(model=lane.model, input="More", previous_response_id=fork.id)
    assert "Branch two" in fork.output_text and after.output_text == answer_for("More")
    (fork_chat, fork_text), (after_chat, after_text) = await lane.calls()
    old_chat, new_chat = await _chat_of_first_turn(lane, first.id), await _chat_of_first_turn(lane, fork.id)
    assert new_chat != old_chat and fork_chat != old_chat
    assert "Hello there" in fork_text and "Branch two" in fork_text and "Branch one" not in fork_text
    assert after_chat == new_chat and after_text.strip() == "More"


async def test_store_false_keeps_no_chat_and_is_never_continued_natively(lane: Lane) -> None:
    """`store: false` deletes its chat; a continuation with `store: false` replays in a throwaway chat and leaves
    the stored response's chat where it was, so the stored response still continues natively."""
    first = await lane.client.responses.create(model=lane.model, input="Hello there")
    await lane.mark()
    aside = await lane.client.responses.create(
        model=lane.model, input="Aside", previous_response_id=first.id, store=False
    )
    assert "Aside" in aside.output_text
    chat_id = await _chat_of_first_turn(lane, first.id)
    [(aside_chat, aside_text)] = await lane.calls()
    assert aside_chat != chat_id and "Hello there" in aside_text
    state = await lane.stack.sim_state()
    assert chat_id not in state["deleted_chats"]
    await lane.mark()
    await lane.client.responses.create(model=lane.model, input="Back", previous_response_id=first.id)
    [(back_chat, back_text)] = await lane.calls()
    assert back_chat == chat_id and back_text.strip() == "Back"


async def test_a_gone_conversation_record_falls_back_to_replay(lane: Lane) -> None:
    """When the kept chat's conversation record has expired, the continuation replays the history instead."""
    first = await lane.client.responses.create(model=lane.model, input="Hello there")
    await lane.stack.redis.delete(conversation_key(await _chat_of_first_turn(lane, first.id)))
    await lane.mark()
    second = await lane.client.responses.create(
        model=lane.model, input="And again", previous_response_id=first.id
    )
    assert "And again" in second.output_text
    [(chat, text)] = await lane.calls()
    assert chat != await _chat_of_first_turn(lane, first.id)
    assert "Hello there" in text and "And again" in text


async def test_an_unavailable_account_falls_back_to_replay(stack_factory: StackFactory) -> None:
    """When the chat's account is disabled, the worker refuses the native turn before any byte and the gateway
    replays the history on another account, as a new job; the client sees one clean answer."""
    stack = await stack_factory()
    holder = await stack.add("kimi_auth")
    client = openai.AsyncOpenAI(base_url=f"{stack.url}/v1", api_key="sk-local", max_retries=0, timeout=30)
    first = await client.responses.create(model="kimi-k2.5-instant", input="Hello there")
    await stack.add("kimi_auth")
    async with aiohttp.ClientSession() as session:
        await Accounts(stack.redis, PoolSettings(), session, stack.sim.url).disable(holder)
    before = len(await stack.sim_requests(CONNECT_CHAT))
    second = await client.responses.create(
        model="kimi-k2.5-instant", input="And again", previous_response_id=first.id
    )
    assert "And again" in second.output_text
    [call] = (await stack.sim_requests(CONNECT_CHAT))[before:]
    chat, text = _sent(call)
    assert chat is None and "Hello there" in text and "And again" in text
    assert (await client.responses.retrieve(second.id)).output_text == second.output_text
    kept = [json.loads(await stack.redis.get(f"kimi:resp:{r.id}"))["conversation"] for r in (first, second)]
    assert kept[1] and kept[1] != kept[0]  # the new response remembers the replay's chat, not the refused one
    await client.close()


async def test_a_rate_limited_chat_account_falls_back_to_replay(stack_factory: StackFactory) -> None:
    """Kimi answers the native turn on the chat's account with a 429: the job, pinned to that account, cannot
    fail over, so the gateway replays the history in a new chat on another account; the client sees one clean
    answer (Codex's tool loop keeps going while one account is throttled)."""
    stack = await stack_factory()
    await stack.add("kimi_auth")
    client = openai.AsyncOpenAI(base_url=f"{stack.url}/v1", api_key="sk-local", max_retries=0, timeout=30)
    first = await client.responses.create(model="kimi-k2.5-instant", input="Hello there")
    await stack.add("kimi_auth")
    await stack.arm("http_429", count=1, path=CONNECT_CHAT)
    before = len(await stack.sim_requests(CONNECT_CHAT))
    second = await client.responses.create(
        model="kimi-k2.5-instant", input="And again", previous_response_id=first.id
    )
    assert second.output_text == answer_for("user:And again")  # the replay's merged history ends so
    refused, replayed = (await stack.sim_requests(CONNECT_CHAT))[before:]
    assert _sent(refused) == (
        json.loads(await stack.redis.get(f"kimi:resp:{first.id}"))["conversation"],
        "And again",
    )
    chat, text = _sent(replayed)
    assert chat is None and "Hello there" in text and "And again" in text
    await client.close()


async def test_an_api_key_response_is_replayed(stack_factory: StackFactory) -> None:
    """An official API key keeps no chat: the continuation sends the whole history to the API."""
    stack = await stack_factory()
    await add_key(stack)
    client = openai.AsyncOpenAI(base_url=f"{stack.url}/v1", api_key="sk-local", max_retries=0, timeout=30)
    first = await client.responses.create(model="kimi-k3", input="Hello there", instructions="Be brief.")
    second = await client.responses.create(
        model="kimi-k3", input="And again", instructions="Be brief.", previous_response_id=first.id
    )
    assert second.output_text == answer_for("And again")
    calls = await stack.sim_requests("/moonshot/v1/chat/completions")
    assert [(m["role"], m["content"]) for m in calls[-1]["body"]["messages"]] == [
        ("system", "Be brief."),
        ("user", "Hello there"),
        ("assistant", answer_for("Hello there")),
        ("user", "And again"),
    ]
    stored = json.loads(await stack.redis.get(f"kimi:resp:{first.id}"))
    assert stored["conversation"] == ""
    await client.close()


async def test_the_lane_decides_not_the_model_id(stack_factory: StackFactory) -> None:
    """A thinking K2.5 answer continues natively with the instant K2.5 (one Connect lane); a REST answer
    continued with a Connect model is replayed in a new chat."""
    stack = await stack_factory()
    await stack.add("refresh_token")
    client = openai.AsyncOpenAI(base_url=f"{stack.url}/v1", api_key="sk-local", max_retries=0, timeout=30)
    thought = await client.responses.create(model="kimi-k2.5-thinking", input="Hello there")
    before = len(await stack.sim_requests(CONNECT_CHAT))
    await client.responses.create(
        model="kimi-k2.5-instant", input="And again", previous_response_id=thought.id
    )
    [call] = (await stack.sim_requests(CONNECT_CHAT))[before:]
    stored = json.loads(await stack.redis.get(f"kimi:resp:{thought.id}"))
    assert _sent(call) == (stored["conversation"], "And again")
    rest = await client.responses.create(model="kimi", input="On REST")
    before = len(await stack.sim_requests(CONNECT_CHAT))
    await client.responses.create(
        model="kimi-k2.5-instant", input="Now Connect", previous_response_id=rest.id
    )
    [call] = (await stack.sim_requests(CONNECT_CHAT))[before:]
    chat, text = _sent(call)
    assert chat is None and "On REST" in text and "Now Connect" in text
    await client.close()
