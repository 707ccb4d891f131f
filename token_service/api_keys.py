"""Official Moonshot Open Platform API keys as pasted, and their probe (moonshot-official-api.md §1, §7, §10).

Pasted forms (README "API keys"):
    sk-…                                   the key alone: MOONSHOT_BASE_URL's platform (default api.moonshot.ai)
    Bearer sk-…                            the same
    sk-…@https://api.moonshot.cn           the key and its platform's base URL (`/v1` or not, any http(s) URL)
    sk-…@api.moonshot.cn                   a host stands for https://<host>
    sk-…@cn, sk-…@global                   the two platforms by region
Keys are regional (a key of one platform gets 401 on the other), so the base URL is stored with the key.
Kimi Code keys (`sk-kimi-…`) are refused: they are a separate, gated product (§9).

The probe is `GET {base}/v1/users/me/balance` with the key: cheap, authenticated, and it tells a used-up
balance (`available_balance` ≤ 0) from a live key. Its errors never carry the key.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import msgspec

from shared.errors import (
    UpstreamAuthError,
    UpstreamError,
    UpstreamQuotaExhausted,
    UpstreamRateLimited,
    UpstreamUnavailable,
)
from shared.http_bodies import read_capped

REGIONS = {"global": "https://api.moonshot.ai", "cn": "https://api.moonshot.cn"}
BALANCE_PATH = "/users/me/balance"
TIMEOUT_S = 15.0

#: A key: `sk-` and at least 16 more of the characters keys are made of; Kimi Code's `sk-kimi-` excluded.
_KEY = re.compile(r"sk-(?!kimi-)[A-Za-z0-9_-]{16,}")
_PASTED = re.compile(r"(?:Bearer\s+)?(?P<key>\S+?)(?:@(?P<base>\S+))?")
_json = msgspec.json.Decoder(dict[str, Any])


class KeyForm(msgspec.Struct, frozen=True):
    """A pasted key: the key, and the base URL it came with ("" when none: the default platform's)."""

    key: str
    base_url: str = ""


def parse(text: str) -> KeyForm | None:
    """The key (and base URL) in pasted text, or None when the text is not one of the forms above."""
    match = _PASTED.fullmatch(text.strip())
    if match is None or not _KEY.fullmatch(match["key"]):
        return None
    base = match["base"]
    if base is None:
        return KeyForm(match["key"])
    base_url = base_url_of(base)
    return KeyForm(match["key"], base_url) if base_url else None


def defect(text: str) -> str | None:
    """Why text that starts like a key is not one; None when it does not look like a key at all."""
    stripped = text.strip().removeprefix("Bearer ").strip()
    if not stripped.startswith("sk-"):
        return None
    if stripped.startswith("sk-kimi-"):
        return "a Kimi Code key (sk-kimi-…) is not an Open Platform API key"
    key, _, base = stripped.partition("@")
    if not _KEY.fullmatch(key):
        return "not an API key: expected sk- and at least 16 letters, digits, '-' or '_'"
    del base  # never echoed: a URL may carry credentials
    return (
        "not an API key base URL: expected an http(s) URL without credentials, a host, or one of cn, global"
    )


def base_url_of(text: str) -> str | None:
    """An http(s) origin (with its path, without `/v1`) from a URL, a bare host or a region; else None."""
    if text in REGIONS:
        return REGIONS[text]
    url = text if "://" in text else f"https://{text}"
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.username or parts.query:
        return None
    if parts.fragment or parts.password:
        return None
    path = parts.path.rstrip("/").removesuffix("/v1")
    return f"{parts.scheme}://{parts.netloc}{path}"


def api_root(base_url: str) -> str:
    """`https://api.moonshot.ai/v1` for a stored base URL."""
    return f"{base_url.rstrip('/').removesuffix('/v1')}/v1"


async def probe(session: aiohttp.ClientSession, base_url: str, key: str) -> None:
    """The key's balance call; a `shared.errors.UpstreamError` when the key is refused, out of money or
    the platform cannot be reached."""
    try:
        async with session.get(
            api_root(base_url) + BALANCE_PATH,
            headers={"Authorization": f"Bearer {key}", "Accept": "application/json"},
            timeout=aiohttp.ClientTimeout(total=TIMEOUT_S),
        ) as resp:
            body = _decode(await read_capped(resp))
            status = resp.status
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise UpstreamUnavailable(f"API key probe: {type(exc).__name__}") from None
    _check(status, body)


def _check(status: int, body: dict[str, Any]) -> None:
    error = body.get("error")
    kind = error.get("type", "") if isinstance(error, dict) else ""
    if status == 401 or status == 403:
        raise UpstreamAuthError(f"API key probe: HTTP {status} {kind}".strip(), status=502)
    if status == 429 or kind == "exceeded_current_quota_error":
        quota = kind == "exceeded_current_quota_error"
        cls = UpstreamQuotaExhausted if quota else UpstreamRateLimited
        raise cls(f"API key probe: HTTP {status} {kind}".strip())
    if status >= 500:
        raise UpstreamUnavailable(f"API key probe: HTTP {status}")
    if status != 200:
        raise UpstreamError(f"API key probe: HTTP {status}")
    data = body.get("data")
    balance = data.get("available_balance") if isinstance(data, dict) else None
    if not isinstance(balance, int | float):
        raise UpstreamError("API key probe: the balance answer has no available_balance")
    if balance <= 0:
        raise UpstreamQuotaExhausted("API key probe: the key's balance is used up")


def _decode(raw: bytes) -> dict[str, Any]:
    try:
        return _json.decode(raw) if raw else {}
    except msgspec.DecodeError:
        return {}
