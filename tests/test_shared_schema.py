"""The canonical schema: msgpack round trips, tagged events, strict internal messages, the model table."""

from __future__ import annotations

import msgspec
import pytest

from shared.models import K1_KIMIPLUS_ID, listed_models, resolve_model
from shared.schema import (
    AttachmentPart,
    ChatOptions,
    ChatRequest,
    Citation,
    Done,
    ErrorEvent,
    Job,
    Message,
    ReasoningDelta,
    Start,
    TextDelta,
    TextPart,
    Usage,
    encode_events,
    encode_job,
    events_decoder,
    job_decoder,
)
from shared.usage_estimate import estimate_prompt_tokens, estimate_tokens

PNG_PART = AttachmentPart(
    sha256="ab" * 32, mime="image/png", name="cat.png", size=68, kind="image", source="inline"
)


def test_job_round_trip() -> None:
    """A job with every part kind and option survives encode → decode unchanged."""
    request = ChatRequest(
        request_id="r1",
        model="kimi-search",
        messages=[
            Message(role="system", content="be brief"),
            Message(role="user", content=[TextPart("hi"), PNG_PART]),
        ],
        options=ChatOptions(search=True, conversation_id="none", keep_chat=True),
        deadline_s=123.5,
        account_ids=["a1"],
    )
    job = Job(request=request, reply_key="kimi:reply:{r1}", enqueued_s=1.0)
    assert job_decoder.decode(encode_job(job)) == job
    assert request.messages[1].text() == "hi"


def test_attachment_part_travels_by_reference() -> None:
    """An attachment part is encoded as its reference fields under the `attachment` tag, with no bytes."""
    raw = msgspec.msgpack.encode(PNG_PART)
    assert msgspec.msgpack.decode(raw) == {
        "type": "attachment",
        "sha256": "ab" * 32,
        "mime": "image/png",
        "name": "cat.png",
        "size": 68,
        "kind": "image",
        "source": "inline",
    }


def test_event_batches_round_trip_with_tags() -> None:
    """A reply entry holds a list of tagged events; each comes back as its own type."""
    events = [
        Start(conversation_id="c1", account_id="a1"),
        ReasoningDelta("think"),
        TextDelta("你好"),
        Citation(1, "t", "https://x"),
        Usage(3, 4),
        Done("length", "c1"),
        ErrorEvent("rate_limited", "slow down", retryable=True, status=429, retry_after_s=5),
    ]
    assert events_decoder.decode(encode_events(events)) == events


def test_internal_messages_forbid_unknown_fields() -> None:
    """A stream entry with an unknown field is rejected rather than silently misread."""
    raw = msgspec.msgpack.encode([{"type": "text", "text": "x", "extra": 1}])
    with pytest.raises(msgspec.ValidationError):
        events_decoder.decode(raw)


@pytest.mark.parametrize(
    ("model", "protocol", "flags"),
    [
        ("kimi", "rest", {}),
        ("kimi-search-silent", "rest", {"search": True, "silent": True}),
        ("kimi-k1", "rest", {"k1": True, "thinking": True}),
        ("kimi-thinking", "rest", {"k1": True, "thinking": True}),
        ("kimi-research", "rest", {"research": True}),
        ("kimi-math", "rest", {"math": True}),
        ("kimi-k2.5-thinking", "connect", {"thinking": True}),
        ("models/kimi-k2.5-instant", "connect", {}),
        ("kimi-k2.5-agent-swarm", "connect", {}),
        ("moonshot-v1-8k", "rest", {}),
    ],
)
def test_model_table_resolves_ids_and_flags(model: str, protocol: str, flags: dict[str, bool]) -> None:
    """Every public id maps to one protocol and the options its name implies."""
    spec = resolve_model(model)
    assert spec is not None and spec.protocol == protocol
    for name, value in flags.items():
        assert getattr(spec, name) is value


def test_model_table_special_cases() -> None:
    """K1 uses its kimiplus id, agent lanes carry their mode, 20-char ids are Kimi+ agents, junk is unknown."""
    assert resolve_model("kimi-k1").kimiplus_id == K1_KIMIPLUS_ID  # type: ignore[union-attr]
    swarm = resolve_model("kimi-k2.5-agent-swarm")
    assert swarm is not None and swarm.agent_mode == "TYPE_ULTRA" and swarm.scenario == "SCENARIO_OK_COMPUTER"
    agent = resolve_model("coo6l3pkqq4ri39f36bg")
    assert agent is not None and agent.kimiplus_id == "coo6l3pkqq4ri39f36bg"
    assert resolve_model("gpt-4o") is None and resolve_model("kimi-turbo") is None
    ids = [m.id for m in listed_models()]
    assert len(ids) == len(set(ids))
    for required in (
        "kimi-k2.5-instant",
        "kimi-k2.5-agent",
        "kimi-latest",
        "kimi-k2",
        "kimi-k2-0905",
        "kimi",
    ):
        assert required in ids


def test_token_estimate_is_not_a_constant() -> None:
    """CJK characters count one token each, other text one per four characters; prompts add overhead."""
    assert estimate_tokens("") == 0
    assert estimate_tokens("你好世界") == 4
    assert estimate_tokens("abcdefgh") == 2
    assert estimate_tokens("abcdefghi") == 3
    assert estimate_prompt_tokens(["hi", "你好"]) == (1 + 4) + (2 + 4)
