"""Which region a Kimi account belongs to, and the web origin its calls go to (kimi-web-2026.md §1).

Accounts and tokens are bound to one region: `cn` (www.kimi.com, auth.kimi.com) or `global` (www.kimi.ai,
auth.kimi.ai); the other region answers a token 401. The region is read from the token's claims when the account
is saved (§1.3: `aud` naming kimi.ai or `region: "overseas"` → global, `aud` naming kimi.com → cn; nothing → the
token does not say). Where an account's calls go, first match wins:

    1. the account's own `base_url` (saved with it: the admin API's or the CLI's `base_url`);
    2. its region's origin (KIMI_CN_BASE_URL, KIMI_GLOBAL_BASE_URL);
    3. KIMI_BASE_URL.

Never "retry on the other region" after a 401: a token of one region is refused by the other (§1.3).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit

from shared.errors import BadRequest
from token_service.jwt_info import Claims

Region = Literal["cn", "global"]
#: `Claims.aud` entries naming each region's host.
_AUDIENCES: tuple[tuple[str, Region], ...] = (("kimi.ai", "global"), ("kimi.com", "cn"))


def region_of(claims: Claims) -> Region | None:
    """The region a token's claims name, or None when they name none (older China tokens carry no claim)."""
    for audience, region in _AUDIENCES:
        if any(audience in aud for aud in claims.aud):
            return region
    if claims.region == "overseas":
        return "global"
    return None


def checked_base_url(value: str) -> str:
    """An operator's per-account origin: an http(s) URL with a host, without its trailing slash."""
    parts = urlsplit(value.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
        raise BadRequest("base_url must be an http(s) origin such as https://www.kimi.ai", param="base_url")
    return value.strip().rstrip("/")


@dataclass(frozen=True, slots=True)
class Origins:
    """The configured origins: KIMI_BASE_URL (`default`) and each region's."""

    default: str
    cn: str
    global_: str

    def for_account(self, region: str, base_url: str = "") -> str:
        """Where calls as an account of `region` ("" when unknown) go; its own `base_url` wins."""
        if base_url:
            return base_url
        if region == "cn":
            return self.cn
        if region == "global":
            return self.global_
        return self.default
