"""Official API keys of the simulated Moonshot Open Platform (moonshot-official-api.md §1, §7, §10).

A key belongs to one region, each served under its own path prefix (the simulator's stand-in for
`api.moonshot.ai` and `api.moonshot.cn`); the other region answers it 401, as the real platforms do.
"""

from __future__ import annotations

import secrets
import string
from dataclasses import dataclass
from typing import Any, Literal

from .tokens import new_xid

Region = Literal["global", "cn"]
#: The path prefix of each region: a driver base URL of `<sim>/moonshot` reaches `<sim>/moonshot/v1/...`.
PREFIXES: dict[Region, str] = {"global": "/moonshot", "cn": "/moonshot-cn"}
_KEY_ALPHABET = string.ascii_letters + string.digits


@dataclass
class ApiKey:
    key: str
    region: Region
    #: The organisation and key ids the platform embeds in its error messages (`org-…<ak-…>`).
    org_id: str
    key_id: str
    cash_balance: float = 50.0
    voucher_balance: float = 0.0
    #: Model ids this key may use (None: every model; K3 needs a top-up, §1).
    models: list[str] | None = None
    #: Concurrent requests allowed (the tier's concurrency, §10.4); 0 = unlimited.
    max_concurrency: int = 0
    revoked: bool = False
    active: int = 0

    @property
    def available_balance(self) -> float:
        return round(self.cash_balance + self.voucher_balance, 5)

    @property
    def account(self) -> str:
        """How the platform names the key in its messages."""
        return f"{self.org_id}<{self.key_id}>"

    def as_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "region": self.region,
            "base_path": PREFIXES[self.region],
            "org_id": self.org_id,
            "key_id": self.key_id,
            "available_balance": self.available_balance,
            "models": self.models,
            "max_concurrency": self.max_concurrency,
            "revoked": self.revoked,
        }


class OfficialState:
    """The minted keys, by key."""

    def __init__(self) -> None:
        self.keys: dict[str, ApiKey] = {}

    def mint(
        self,
        region: Region = "global",
        balance: float = 50.0,
        models: list[str] | None = None,
        max_concurrency: int = 0,
    ) -> ApiKey:
        if region not in PREFIXES:
            raise ValueError(f"unknown region {region!r}")
        key = "sk-" + "".join(secrets.choice(_KEY_ALPHABET) for _ in range(48))
        api_key = ApiKey(
            key, region, f"org-{new_xid()}", f"ak-{new_xid()}", balance, 0.0, models, max_concurrency
        )
        self.keys[key] = api_key
        return api_key

    def region_of_path(self, path: str) -> Region | None:
        for region, prefix in PREFIXES.items():
            if path.startswith(prefix + "/"):
                return region
        return None
