"""Upstream drift: unknown event kinds and fields are noted by name, skipped, and counted in the metric."""

from __future__ import annotations

import aiohttp
import msgspec
import pytest
from prometheus_client import REGISTRY

from kimi_sim.answers import answer_for, reasoning_for
from kimi_sim.server import SimServer
from shared.schema import Event, ReasoningDelta, TextDelta
from tests.driver_helpers import FAST, call_for, collect, text_of
from tests.driver_helpers import session as session  # the pytest fixture these tests use
from upstream_worker import metrics
from upstream_worker.kimi import ConnectDriver, Creds, RestDriver
from upstream_worker.kimi.connect_events import ConnectStream
from upstream_worker.kimi.envelope import Frame
from upstream_worker.kimi.rest_events import RestStream


def drift_count(protocol: str, kind: str) -> float:
    return REGISTRY.get_sample_value("kimi_upstream_drift_total", {"protocol": protocol, "kind": kind}) or 0.0


# ---------------------------------------------------------------- REST table


@pytest.mark.parametrize(
    ("payload", "event", "drift"),
    [
        ('{"event":"cmpl","text":"hi"}', TextDelta("hi"), {}),
        ('{"event":"req","id":"s","group_id":"g","content":"echo","refs":[]}', None, {}),
        ('{"event":"zone_set","zone_type":"answer"}', None, {}),
        ('{"event":"brand_new_kind","x":[1,2]}', None, {"event:brand_new_kind": 1, "field:x": 1}),
        ('{"event":"cmpl","text":"hi","view":"v2"}', TextDelta("hi"), {"field:view": 1}),
        ('{"event":"k1","data":{"text":"想","tokens":3}}', ReasoningDelta("想"), {"field:data.tokens": 1}),
        ('{"event":"cmpl","text":', None, {"malformed": 1}),
        ('{"event":"cmpl","text":5}', None, {"malformed": 1}),
        ("[1]", None, {"malformed": 1}),
    ],
)
def test_rest_drift_table(payload: str, event: Event | None, drift: dict[str, int]) -> None:
    """Unknown kinds and fields are noted by name while known parts still decode; junk is noted as malformed."""
    stream = RestStream(silent=False)
    assert stream.feed(payload) == event
    assert stream.drift.counts == drift


# ---------------------------------------------------------------- Connect table


def _feed(*events: object) -> tuple[list[Event], ConnectStream]:
    stream, out = ConnectStream("c1", silent=False), []
    for event in events:
        stream.feed(Frame(0, msgspec.json.encode(event)), out)
    return out, stream


@pytest.mark.parametrize(
    ("event", "text", "drift"),
    [
        ({"op": "set", "mask": "block.text", "block": {"id": "2", "text": {"content": "a"}}}, "a", {}),
        ({"heartbeat": {}}, "", {}),
        ({"eventOffset": 3, "notification": {"type": "TYPE_MODEL_DEGRADE"}}, "", {}),
        ({"op": "append", "mask": "chat.files", "chat": {"id": "c1", "files": [{"id": "f"}]}}, "", {}),
        ({"eventOffset": 4, "widget": {"x": 1}}, "", {"event:widget": 1}),
        (
            {"op": "set", "block": {"id": "9", "canvas": {}, "text": {"content": "b", "lang": "en"}}},
            "b",
            {"field:block.canvas": 1, "field:block.text.lang": 1},
        ),
        ({"op": "set", "mask": "message", "message": {"id": "m", "mood": 1}}, "", {"field:message.mood": 1}),
        ({"op": "set", "chat": {"id": "c1", "pinned": True}}, "", {"field:chat.pinned": 1}),
    ],
)
def test_connect_drift_table(event: dict[str, object], text: str, drift: dict[str, int]) -> None:
    """Unknown payload kinds, block kinds and fields are noted by path while the known parts still stream."""
    out, stream = _feed(event)
    assert "".join(e.text for e in out if isinstance(e, TextDelta)) == text
    assert stream.drift.counts == drift


def test_connect_malformed_frame_is_noted_and_skipped() -> None:
    """A frame that is not JSON is skipped and noted as malformed; the stream goes on."""
    stream, out = ConnectStream("c1", silent=False), []
    stream.feed(Frame(0, b'{"op":"append","mask":'), out)
    stream.feed(Frame(0, b'{"op":"set","block":{"id":"2","text":{"content":"x"}}}'), out)
    assert [e for e in out if isinstance(e, TextDelta)] == [TextDelta("x")]
    assert stream.drift.counts == {"malformed": 1}


# ---------------------------------------------------------------- the metric


def test_count_drift_bounds_and_sanitises_names() -> None:
    """Names are made label-safe and cut; past the per-protocol cap new names count as "other"."""
    protocol = "test-cap"
    before_other = drift_count(protocol, "other")
    metrics.count_drift(protocol, {"event:a b/c": 2})
    assert drift_count(protocol, "event:a_b_c") == 2
    metrics.count_drift(protocol, {f"field:n{i}": 1 for i in range(metrics.DRIFT_NAMES_MAX + 5)})
    assert drift_count(protocol, "other") - before_other == 6  # one slot was taken by event:a_b_c
    metrics.count_drift(protocol, {"event:a b/c": 1})  # a known name keeps its own series
    assert drift_count(protocol, "event:a_b_c") == 3
    metrics.count_drift(protocol, {"x" * 200: 1})
    assert drift_count(protocol, "other") - before_other == 7


# ---------------------------------------------------------------- drivers against the simulator


async def test_rest_driver_counts_unknown_event_and_field(
    kimi_sim: SimServer, session: aiohttp.ClientSession
) -> None:
    """The simulator's unknown REST kind and cmpl field are counted once each; the answer is unchanged."""
    account = kimi_sim.state.add_account("kimi_auth")
    creds = Creds(account.sub[:12], "refresh_token", account.token, user_id=account.sub)
    kinds = ("event:sim_future_event", "field:sim_future_field")
    before = [drift_count("rest", k) for k in kinds]
    kimi_sim.state.faults.arm("unknown_event", path="/completion/stream")
    events = await collect(RestDriver(session, kimi_sim.url, FAST), call_for(creds, "kimi", "drift"))
    assert text_of(events) == answer_for("drift\n")
    assert [drift_count("rest", k) - b for k, b in zip(kinds, before, strict=True)] == [1, 1]


async def test_connect_driver_counts_unknown_event_and_field(
    kimi_sim: SimServer, session: aiohttp.ClientSession
) -> None:
    """The simulator's unknown Connect payload kind and text field are counted once each, with custom names."""
    account = kimi_sim.state.add_account("kimi_auth")
    creds = Creds(account.sub[:12], "kimi_auth", account.token, user_id=account.sub)
    kinds = ("event:hologram", "field:block.text.glow")
    before = [drift_count("connect", k) for k in kinds]
    kimi_sim.state.faults.arm("unknown_event", path="ChatService/Chat", kind="hologram", field="glow")
    call = call_for(creds, "kimi-k2.5-instant", "drift")
    events = await collect(ConnectDriver(session, kimi_sim.url, FAST), call)
    assert text_of(events) == answer_for("drift")
    assert [drift_count("connect", k) - b for k, b in zip(kinds, before, strict=True)] == [1, 1]


@pytest.mark.parametrize("model", ["kimi-k1", "kimi-k2.5-thinking"])
async def test_reasoning_cut_between_events_is_whole(
    kimi_sim: SimServer, session: aiohttp.ClientSession, model: str
) -> None:
    """With characters cut between events, reasoning and answer arrive whole on the REST and Connect lanes."""
    account = kimi_sim.state.add_account("kimi_auth")
    creds = Creds(account.sub[:12], "refresh_token", account.token, user_id=account.sub)
    rest = model == "kimi-k1"
    driver = RestDriver(session, kimi_sim.url, FAST) if rest else ConnectDriver(session, kimi_sim.url, FAST)
    kimi_sim.state.faults.arm("split_utf8_events")
    events = await collect(driver, call_for(creds, model, "切分"))
    assert "".join(e.text for e in events if isinstance(e, ReasoningDelta)) == reasoning_for("切分")
    assert text_of(events) == answer_for("切分")
    assert "\ufffd" not in "".join(e.text for e in events if isinstance(e, TextDelta | ReasoningDelta))
