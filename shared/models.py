"""The one model table: every public model id, the upstream protocols that can serve it, and their options.

Protocols: "rest" is Kimi's classic `/api/...` surface (kimi-web-rest.md), "connect" the `/apiv2/...` Connect
RPC surface (kimi-web-connect.md, kimi-web-2026.md), both served by web accounts; "moonshot" is the official
Open Platform API (moonshot-official-api.md), served by API keys. A row's web lane (`protocol`, with `scenario`,
`web_model`, `reasoning_effort`, …) is what a web account sends; its `api` is what a key sends; a row whose
`protocol` is "moonshot" has no web lane. The protocol a web account speaks also depends on the account (the
kinds registry, `token_service.kinds`): a kimi-auth account has no refresh token and always speaks Connect; a
refresh_token account speaks the row's protocol.
The kimi-free-api family (`kimi` plus `-search`, `-silent`, `-research`, `-k1`, `-math`, `-thinking`, freely
combined) and 20-character Kimi+ agent ids resolve by rule, not by row.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Literal

UpstreamProtocol = Literal["rest", "connect", "moonshot"]
#: How an API model reasons: "enabled" / "disabled" are sent as `thinking.type` (K2.6, K2.5); "always" thinks
#: and must not be sent `thinking` (K3, K2.7 Code); "none" has no reasoning (moonshot-v1). §5.
ApiThinking = Literal["none", "enabled", "disabled", "always"]
ApiEffort = Literal["low", "high", "max"]

K1_KIMIPLUS_ID = "crm40ee9e5jvhsn7ptcg"
AGENT_KIMIPLUS_ID = "ok-computer"
_AGENT_ID = re.compile(r"^[0-9a-z]{20}$")
_FLAGS = ("search", "silent", "research", "k1", "math", "thinking")


@dataclass(frozen=True, slots=True)
class ApiModel:
    """How an official API key serves a public id (moonshot-official-api.md §4–§6)."""

    #: The platform's model id.
    model: str
    thinking: ApiThinking = "none"
    #: K3's top-level `reasoning_effort`.
    reasoning_effort: ApiEffort | None = None
    #: Accepts `image_url` parts (base64 data URLs); text-only models get string content.
    vision: bool = False
    #: Accepts `tool_choice: "required"` (K3); other models get `auto` plus the documented nudge.
    tool_choice_required: bool = False

    @property
    def thinks(self) -> bool:
        """The answer carries `reasoning_content`, and tool-call history must carry it back."""
        return self.thinking in ("enabled", "always")


@dataclass(frozen=True, slots=True)
class ModelSpec:
    id: str
    #: The web lane ("rest" / "connect"); "moonshot" when only API keys serve the id.
    protocol: UpstreamProtocol
    scenario: str = "SCENARIO_K2"
    thinking: bool = False
    search: bool = False
    silent: bool = False
    research: bool = False
    math: bool = False
    k1: bool = False
    #: Connect agent lanes: TYPE_NORMAL (agent) or TYPE_ULTRA (swarm).
    agent_mode: str | None = None
    #: REST kimiplus_id (Kimi+ agent) or Connect kimiplusId ("ok-computer" for agent lanes).
    kimiplus_id: str | None = None
    #: Connect `options.model`: the 2026 catalogue entry id (`k3-agent`, kimi-web-2026.md §4.1).
    web_model: str | None = None
    #: Connect `options.reasoning_effort` (`REASONING_EFFORT_NONE` … `_MAX`).
    reasoning_effort: str | None = None
    #: The official API's model and options; None when no API key serves the id.
    api: ApiModel | None = None
    owned_by: str = "moonshot"
    created: int = 1_735_689_600  # 2025-01-01, a fixed date so /v1/models is stable
    #: The metric label when it differs from `id`: family flags de-duplicated in a fixed order, "kimiplus"
    #: for every Kimi+ agent id, so that clients cannot grow a label without bound.
    canonical_id: str | None = None

    @property
    def is_agent(self) -> bool:
        return self.agent_mode is not None

    @property
    def label(self) -> str:
        """The model's metric label: a bounded set of values, whatever id the client spelled."""
        return self.canonical_id or self.id

    @property
    def web(self) -> bool:
        """Web accounts can serve the id (it has a REST or Connect lane)."""
        return self.protocol != "moonshot"

    @property
    def protocols(self) -> tuple[UpstreamProtocol, ...]:
        """Every protocol that can serve the id: its web lane, then the official API."""
        web: tuple[UpstreamProtocol, ...] = (self.protocol,) if self.web else ()
        return (*web, "moonshot") if self.api is not None else web


def _connect(mid: str, scenario: str = "SCENARIO_K2D5", **kw: object) -> ModelSpec:
    return ModelSpec(id=mid, protocol="connect", scenario=scenario, **kw)  # type: ignore[arg-type]


def _rest(mid: str, **kw: object) -> ModelSpec:
    return ModelSpec(id=mid, protocol="rest", **kw)  # type: ignore[arg-type]


def _api_only(mid: str, api: ApiModel) -> ModelSpec:
    return ModelSpec(id=mid, protocol="moonshot", api=api)


def _agent_2026(
    mid: str, web_model: str, api: ApiModel | None = None, swarm: bool = False
) -> list[ModelSpec]:
    """A 2026 agent-lane entry (K2.8, K3, K3 Swarm) at its effort options: HIGH (the default), LOW, MAX."""
    rows = []
    efforts: tuple[tuple[str, ApiEffort], ...] = (("", "high"), ("-low", "low"), ("-max", "max"))
    for suffix, effort in efforts:
        rows.append(
            _connect(
                mid + suffix,
                "SCENARIO_OK_COMPUTER_SWARM" if swarm else "SCENARIO_OK_COMPUTER",
                agent_mode="TYPE_ULTRA" if swarm else "TYPE_NORMAL",
                kimiplus_id=AGENT_KIMIPLUS_ID,
                web_model=web_model,
                reasoning_effort=f"REASONING_EFFORT_{effort.upper()}",
                api=replace(api, reasoning_effort=effort) if api is not None else None,
            )
        )
    return rows


_K2_6 = ApiModel("kimi-k2.6", "enabled", vision=True)
_K2_5 = ApiModel("kimi-k2.5", "enabled", vision=True)
_K3 = ApiModel("kimi-k3", "always", vision=True, tool_choice_required=True)


def _moonshot_v1(mid: str, vision: bool = False) -> ModelSpec:
    return _rest(mid, api=ApiModel(mid, vision=vision))


_TABLE: tuple[ModelSpec, ...] = (
    # K2.5 lanes (kimi-web-connect.md §2.6, recommended mapping).
    _connect("kimi-k2.5-instant", api=replace(_K2_5, thinking="disabled")),
    _connect("kimi-k2.5-thinking", thinking=True, api=_K2_5),
    _connect(
        "kimi-k2.5-agent", "SCENARIO_OK_COMPUTER", agent_mode="TYPE_NORMAL", kimiplus_id=AGENT_KIMIPLUS_ID
    ),
    _connect(
        "kimi-k2.5-agent-swarm",
        "SCENARIO_OK_COMPUTER",
        agent_mode="TYPE_ULTRA",
        kimiplus_id=AGENT_KIMIPLUS_ID,
    ),
    # The rest of the kimi-free-api-fix list: names only pick a lane there; keep that meaning. The API has
    # retired these ids (moonshot-official-api.md §4.2), so only web accounts serve them.
    _connect("kimi-k2-0905-preview", "SCENARIO_K2"),
    _connect("kimi-k2-0711-preview", "SCENARIO_K2"),
    _connect("kimi-k2-turbo-preview", "SCENARIO_K2"),
    _connect("kimi-k2-thinking", "SCENARIO_K2", thinking=True),
    _connect("kimi-k2-thinking-turbo", "SCENARIO_K2", thinking=True),
    _connect("kimi-k2", "SCENARIO_K2"),
    _connect("kimi-k2-0905", "SCENARIO_K2"),
    _connect("kimi-latest", "SCENARIO_K2D5"),
    _moonshot_v1("moonshot-v1-8k"),
    _moonshot_v1("moonshot-v1-32k"),
    _moonshot_v1("moonshot-v1-128k"),
    _moonshot_v1("moonshot-v1-8k-vision-preview", vision=True),
    _moonshot_v1("moonshot-v1-32k-vision-preview", vision=True),
    _moonshot_v1("moonshot-v1-128k-vision-preview", vision=True),
    # Kimi web, 2026 (kimi-web-2026.md §4.1): Instant is K2.6 at effort NONE ("Standard") or LOW ("High").
    _connect(
        "kimi-k2.6-instant",
        "SCENARIO_CHAT",
        web_model="k2d6-chat",
        reasoning_effort="REASONING_EFFORT_NONE",
        api=replace(_K2_6, thinking="disabled"),
    ),
    _connect(
        "kimi-k2.6",
        "SCENARIO_CHAT",
        thinking=True,
        web_model="k2d6-chat",
        reasoning_effort="REASONING_EFFORT_LOW",
        api=_K2_6,
    ),
    *_agent_2026("kimi-k2.8", "k28-agent-preview"),
    *_agent_2026("kimi-k3", "k3-agent", api=_K3),
    *_agent_2026("kimi-k3-swarm", "k3-agent-swarm", swarm=True),
    # The official API's own ids (moonshot-official-api.md §4.2); K2.5 also has its web thinking lane.
    _connect("kimi-k2.5", thinking=True, api=_K2_5),
    _api_only("kimi-k2.7-code", ApiModel("kimi-k2.7-code", "always", vision=True)),
    _api_only("kimi-k2.7-code-highspeed", ApiModel("kimi-k2.7-code-highspeed", "always", vision=True)),
    _api_only("moonshot-v1-auto", ApiModel("moonshot-v1-auto")),
)
_BY_ID = {spec.id: spec for spec in _TABLE}

#: The kimi-free-api family ids shown in /v1/models (every combination of flags also resolves).
_LISTED_FAMILY = (
    "kimi",
    "kimi-search",
    "kimi-silent",
    "kimi-research",
    "kimi-k1",
    "kimi-math",
    "kimi-thinking",
    "kimi-search-silent",
)


def _family(model: str) -> ModelSpec | None:
    if model != "kimi" and not model.startswith("kimi-"):
        return None
    flags = model.split("-")[1:]
    if any(flag not in _FLAGS for flag in flags):
        return None
    spec = _rest(model)
    # `-thinking` on the REST lane is K1, Kimi's reasoning model there.
    k1 = "k1" in flags or "thinking" in flags
    return replace(
        spec,
        canonical_id="-".join(["kimi", *(flag for flag in _FLAGS if flag in flags)]),
        search="search" in flags,
        silent="silent" in flags,
        research="research" in flags,
        math="math" in flags,
        k1=k1,
        thinking=k1,
        kimiplus_id=K1_KIMIPLUS_ID if k1 else None,
        scenario="SCENARIO_K1" if k1 else ("SCENARIO_SEARCH" if "search" in flags else "SCENARIO_K2"),
    )


def resolve_model(model: str) -> ModelSpec | None:
    """The spec of a public model id, or None when no such model exists."""
    model = model.strip()
    if model.startswith("models/"):
        model = model[len("models/") :]
    spec = _BY_ID.get(model) or _family(model)
    if spec is not None:
        return spec
    if _AGENT_ID.match(model):
        return _rest(model, kimiplus_id=model, owned_by="kimi-plus", canonical_id="kimiplus")
    return None


def listed_models() -> list[ModelSpec]:
    """Every model id /v1/models shows, table rows first."""
    family = [s for s in (_family(m) for m in _LISTED_FAMILY) if s is not None]
    return [*_TABLE, *family]
