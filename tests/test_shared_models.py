"""The one model table: which protocols serve each id, and what each protocol sends for it."""

from __future__ import annotations

import pytest

from shared.errors import ServiceUnavailable
from shared.models import ApiModel, listed_models, resolve_model
from shared.schema import ChatRequest, Message
from token_service.client import protocol_for
from upstream_worker.kimi.connect_request import build_request


@pytest.mark.parametrize(
    ("model", "protocols", "web", "api"),
    [
        # Kimi web, 2026 (kimi-web-2026.md §4.1).
        (
            "kimi-k2.6-instant",
            ("connect", "moonshot"),
            ("SCENARIO_CHAT", "k2d6-chat", "REASONING_EFFORT_NONE", None),
            ApiModel("kimi-k2.6", "disabled", vision=True),
        ),
        (
            "kimi-k2.6",
            ("connect", "moonshot"),
            ("SCENARIO_CHAT", "k2d6-chat", "REASONING_EFFORT_LOW", None),
            ApiModel("kimi-k2.6", "enabled", vision=True),
        ),
        (
            "kimi-k2.8",
            ("connect",),
            ("SCENARIO_OK_COMPUTER", "k28-agent-preview", "REASONING_EFFORT_HIGH", "TYPE_NORMAL"),
            None,
        ),
        (
            "kimi-k2.8-max",
            ("connect",),
            ("SCENARIO_OK_COMPUTER", "k28-agent-preview", "REASONING_EFFORT_MAX", "TYPE_NORMAL"),
            None,
        ),
        (
            "kimi-k3",
            ("connect", "moonshot"),
            ("SCENARIO_OK_COMPUTER", "k3-agent", "REASONING_EFFORT_HIGH", "TYPE_NORMAL"),
            ApiModel("kimi-k3", "always", "high", vision=True, tool_choice_required=True),
        ),
        (
            "kimi-k3-low",
            ("connect", "moonshot"),
            ("SCENARIO_OK_COMPUTER", "k3-agent", "REASONING_EFFORT_LOW", "TYPE_NORMAL"),
            ApiModel("kimi-k3", "always", "low", vision=True, tool_choice_required=True),
        ),
        (
            "kimi-k3-max",
            ("connect", "moonshot"),
            ("SCENARIO_OK_COMPUTER", "k3-agent", "REASONING_EFFORT_MAX", "TYPE_NORMAL"),
            ApiModel("kimi-k3", "always", "max", vision=True, tool_choice_required=True),
        ),
        (
            "kimi-k3-swarm",
            ("connect",),
            ("SCENARIO_OK_COMPUTER_SWARM", "k3-agent-swarm", "REASONING_EFFORT_HIGH", "TYPE_ULTRA"),
            None,
        ),
        # The official API's ids (moonshot-official-api.md §4.2).
        ("kimi-k2.7-code", ("moonshot",), None, ApiModel("kimi-k2.7-code", "always", vision=True)),
        (
            "kimi-k2.7-code-highspeed",
            ("moonshot",),
            None,
            ApiModel("kimi-k2.7-code-highspeed", "always", vision=True),
        ),
        ("moonshot-v1-auto", ("moonshot",), None, ApiModel("moonshot-v1-auto")),
        (
            "kimi-k2.5",
            ("connect", "moonshot"),
            ("SCENARIO_K2D5", None, None, None),
            ApiModel("kimi-k2.5", "enabled", vision=True),
        ),
        # Older ids: their web lane as before, and the API where it still serves them.
        (
            "moonshot-v1-8k",
            ("rest", "moonshot"),
            ("SCENARIO_K2", None, None, None),
            ApiModel("moonshot-v1-8k"),
        ),
        (
            "moonshot-v1-32k-vision-preview",
            ("rest", "moonshot"),
            ("SCENARIO_K2", None, None, None),
            ApiModel("moonshot-v1-32k-vision-preview", vision=True),
        ),
        (
            "kimi-k2.5-instant",
            ("connect", "moonshot"),
            ("SCENARIO_K2D5", None, None, None),
            ApiModel("kimi-k2.5", "disabled", vision=True),
        ),
        ("kimi-k2-thinking", ("connect",), ("SCENARIO_K2", None, None, None), None),
        ("kimi-latest", ("connect",), ("SCENARIO_K2D5", None, None, None), None),
        ("kimi-search", ("rest",), ("SCENARIO_SEARCH", None, None, None), None),
    ],
)
def test_model_rows(
    model: str,
    protocols: tuple[str, ...],
    web: tuple[str, str | None, str | None, str | None] | None,
    api: ApiModel | None,
) -> None:
    """Each id names the protocols that serve it, its web lane's scenario / entry / effort / mode, and its API model."""
    spec = resolve_model(model)
    assert spec is not None
    assert spec.protocols == protocols
    if web is None:
        assert spec.protocol == "moonshot" and not spec.web
    else:
        assert (spec.scenario, spec.web_model, spec.reasoning_effort, spec.agent_mode) == web
    assert spec.api == api


def test_new_ids_are_listed_once() -> None:
    """/v1/models shows every 2026 web id with its effort options and the API's ids, each once."""
    ids = [m.id for m in listed_models()]
    assert len(ids) == len(set(ids))
    for required in (
        "kimi-k2.6-instant",
        "kimi-k2.6",
        "kimi-k2.8",
        "kimi-k2.8-low",
        "kimi-k2.8-max",
        "kimi-k3",
        "kimi-k3-low",
        "kimi-k3-max",
        "kimi-k3-swarm",
        "kimi-k3-swarm-low",
        "kimi-k3-swarm-max",
        "kimi-k2.7-code",
        "kimi-k2.7-code-highspeed",
        "kimi-k2.5",
        "moonshot-v1-auto",
    ):
        assert required in ids


def test_api_thinking_flags() -> None:
    """K3 and K2.7 Code always think, K2.6 thinks unless Instant, moonshot-v1 never does."""
    thinks = {
        m: resolve_model(m).api.thinks for m in ("kimi-k3", "kimi-k2.7-code", "kimi-k2.6", "moonshot-v1-8k")
    }  # type: ignore[union-attr]
    assert thinks == {"kimi-k3": True, "kimi-k2.7-code": True, "kimi-k2.6": True, "moonshot-v1-8k": False}
    assert not resolve_model("kimi-k2.6-instant").api.thinks  # type: ignore[union-attr]


def test_web_accounts_cannot_serve_api_only_models() -> None:
    """An API-only id has no protocol for either web kind (only a key's), and the Connect request refuses it too."""
    spec = resolve_model("kimi-k2.7-code")
    assert spec is not None
    for kind in ("refresh_token", "kimi_auth"):
        with pytest.raises(ServiceUnavailable) as caught:
            protocol_for(kind, spec)
        assert caught.value.message == f"an account of kind {kind!r} cannot serve the model 'kimi-k2.7-code'"
    assert protocol_for("api_key", spec) == "moonshot"
    request = ChatRequest(request_id="r", model=spec.id, messages=[Message(role="user", content="x")])
    with pytest.raises(ServiceUnavailable, match=r"kimi-k2\.7-code"):
        build_request(request, spec, None, None)
