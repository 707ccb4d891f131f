"""The one model table: every public model id, its upstream protocol and the options it implies.

Protocols: "rest" is Kimi's classic `/api/...` surface (kimi-web-rest.md), "connect" the `/apiv2/...` Connect
RPC surface (kimi-web-connect.md). The protocol used for a request also depends on the account: a kimi-auth
account has no refresh token and always speaks Connect; a refresh_token account speaks the model's protocol.
The kimi-free-api family (`kimi` plus `-search`, `-silent`, `-research`, `-k1`, `-math`, `-thinking`, freely
combined) and 20-character Kimi+ agent ids resolve by rule, not by row.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Literal

UpstreamProtocol = Literal["rest", "connect"]

K1_KIMIPLUS_ID = "crm40ee9e5jvhsn7ptcg"
AGENT_KIMIPLUS_ID = "ok-computer"
_AGENT_ID = re.compile(r"^[0-9a-z]{20}$")
_FLAGS = ("search", "silent", "research", "k1", "math", "thinking")


@dataclass(frozen=True, slots=True)
class ModelSpec:
    id: str
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


def _connect(mid: str, scenario: str = "SCENARIO_K2D5", **kw: object) -> ModelSpec:
    return ModelSpec(id=mid, protocol="connect", scenario=scenario, **kw)  # type: ignore[arg-type]


def _rest(mid: str, **kw: object) -> ModelSpec:
    return ModelSpec(id=mid, protocol="rest", **kw)  # type: ignore[arg-type]


_TABLE: tuple[ModelSpec, ...] = (
    # K2.5 lanes (kimi-web-connect.md §2.6, recommended mapping).
    _connect("kimi-k2.5-instant"),
    _connect("kimi-k2.5-thinking", thinking=True),
    _connect(
        "kimi-k2.5-agent", "SCENARIO_OK_COMPUTER", agent_mode="TYPE_NORMAL", kimiplus_id=AGENT_KIMIPLUS_ID
    ),
    _connect(
        "kimi-k2.5-agent-swarm",
        "SCENARIO_OK_COMPUTER",
        agent_mode="TYPE_ULTRA",
        kimiplus_id=AGENT_KIMIPLUS_ID,
    ),
    # The rest of the kimi-free-api-fix list: names only pick a lane there; keep that meaning.
    _connect("kimi-k2-0905-preview", "SCENARIO_K2"),
    _connect("kimi-k2-0711-preview", "SCENARIO_K2"),
    _connect("kimi-k2-turbo-preview", "SCENARIO_K2"),
    _connect("kimi-k2-thinking", "SCENARIO_K2", thinking=True),
    _connect("kimi-k2-thinking-turbo", "SCENARIO_K2", thinking=True),
    _connect("kimi-k2", "SCENARIO_K2"),
    _connect("kimi-k2-0905", "SCENARIO_K2"),
    _connect("kimi-latest", "SCENARIO_K2D5"),
    _rest("moonshot-v1-8k"),
    _rest("moonshot-v1-32k"),
    _rest("moonshot-v1-128k"),
    _rest("moonshot-v1-8k-vision-preview"),
    _rest("moonshot-v1-32k-vision-preview"),
    _rest("moonshot-v1-128k-vision-preview"),
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
