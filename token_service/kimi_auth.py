"""The few authenticated Kimi calls the token service makes: refresh, and cheap liveness probes.

    refresh         GET  /api/auth/token/refresh, Bearer <refresh_token> → {access_token, refresh_token}
    probe_rest      GET  /api/user, Bearer <access token> → {"id": …}
    probe_connect   POST /apiv2/kimi.gateway.account.v1.UserService/GetCurrentUser, `{}` → {"user": …}

Failures become `shared.errors`: 401/403/400 or `auth.token.invalid` → UpstreamAuthError, 429 →
UpstreamRateLimited (Retry-After), 5xx or no connection → UpstreamUnavailable. Messages never hold a token.
"""

from __future__ import annotations

from typing import Any

import aiohttp
import msgspec

from shared.errors import UpstreamAuthError, UpstreamError, UpstreamRateLimited, UpstreamUnavailable

REFRESH_PATH = "/api/auth/token/refresh"
USER_PATH = "/api/user"
CURRENT_USER_PATH = "/apiv2/kimi.gateway.account.v1.UserService/GetCurrentUser"
#: Kimi's own refresh client waits 15 s (kimi-web-rest.md §4.1).
TIMEOUT_S = 15.0

_json = msgspec.json.Decoder(dict[str, Any])
_BASE_HEADERS = {
    "Accept": "*/*",
    "X-Msh-Platform": "web",
    "User-Agent": "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.0.0 Safari/537.36",
}


class RefreshResult(msgspec.Struct, frozen=True):
    access_token: str
    refresh_token: str | None


class KimiAuthClient:
    """Talks to `base_url` (www.kimi.com or the simulator) through the app's one ClientSession."""

    def __init__(self, session: aiohttp.ClientSession, base_url: str, timeout_s: float = TIMEOUT_S) -> None:
        self.session = session
        self.base_url = base_url.rstrip("/")
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)

    async def refresh(self, refresh_token: str) -> RefreshResult:
        body = await self._call("GET", REFRESH_PATH, refresh_token)
        access = body.get("access_token") or body.get("accessToken") or body.get("token")
        rotated = body.get("refresh_token") or body.get("refreshToken")
        if not isinstance(access, str) or not access:
            raise UpstreamAuthError("refresh answered without an access_token")
        return RefreshResult(access_token=access, refresh_token=rotated if isinstance(rotated, str) else None)

    async def probe_rest(self, access_token: str) -> None:
        body = await self._call("GET", USER_PATH, access_token)
        if not body.get("id"):
            raise UpstreamAuthError("GET /api/user answered without a user id")

    async def probe_connect(self, kimi_auth: str) -> None:
        headers = {"Connect-Protocol-Version": "1", "Content-Type": "application/json"}
        await self._call("POST", CURRENT_USER_PATH, kimi_auth, body=b"{}", headers=headers)

    async def _call(
        self,
        method: str,
        path: str,
        bearer: str,
        *,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        all_headers = {**_BASE_HEADERS, **(headers or {}), "Authorization": f"Bearer {bearer}"}
        try:
            async with self.session.request(
                method, self.base_url + path, data=body, headers=all_headers, timeout=self.timeout
            ) as resp:
                raw = await resp.read()
                return _checked(path, resp.status, resp.headers.get("Retry-After"), raw)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise UpstreamUnavailable(f"{path}: {type(exc).__name__}") from None


def _checked(path: str, status: int, retry_after: str | None, raw: bytes) -> dict[str, Any]:
    body = _decode(raw)
    error_type = body.get("error_type") or body.get("code")
    if status in (400, 401, 403) or error_type in (
        "auth.token.invalid",
        "unauthenticated",
        "permission_denied",
    ):
        raise UpstreamAuthError(f"{path}: HTTP {status} {error_type or ''}".strip(), status=502)
    if status == 429 or error_type == "resource_exhausted":
        raise UpstreamRateLimited(f"{path}: HTTP {status}", retry_after_s=_retry_after(retry_after))
    if status >= 500:
        raise UpstreamUnavailable(f"{path}: HTTP {status}")
    if status != 200:
        raise UpstreamError(f"{path}: HTTP {status}")
    return body


def _decode(raw: bytes) -> dict[str, Any]:
    try:
        return _json.decode(raw) if raw else {}
    except msgspec.DecodeError:
        return {}


def _retry_after(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None
