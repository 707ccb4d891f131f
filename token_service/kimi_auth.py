"""The few authenticated Kimi calls the token service makes: refresh, and cheap liveness probes.

    refresh         Connect first, then REST (kimi-web-2026.md §2.3, §8: "RPC first, REST behind a flag"):
      connect       POST {auth host}/api/account.gateway.v1.AuthService/RefreshToken, no Authorization,
                    `{"refresh_token": …}` → {accessToken, refreshToken}   (what the current web app calls)
      rest          GET  {web host}/api/auth/token/refresh, Bearer <refresh_token> → {access_token, refresh_token}
    probe_rest      GET  /api/user, Bearer <access token> → {"id": …}
    probe_connect   POST /apiv2/kimi.gateway.account.v1.UserService/GetCurrentUser, `{}` → {"user": …}

The REST path is tried only when the Connect call gave no verdict on the token (no connection, a 5xx, a 404, a
429, an answer without an access token) and KIMI_REFRESH_REST_FALLBACK is on. A 401/403 from Connect means the
refresh token is dead (rotated by another holder, or expired): REST would say the same about the same token, so
it is not asked. The auth host is the web host with `www.` turned into `auth.` (www.kimi.com → auth.kimi.com,
www.kimi.ai → auth.kimi.ai); any other origin (the simulator, a proxy) serves both on itself.

Failures become `shared.errors`: 401/403/400 or `auth.token.invalid` → UpstreamAuthError, 429 →
UpstreamRateLimited (Retry-After), 5xx or no connection → UpstreamUnavailable. Messages never hold a token.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import msgspec

from shared.errors import UpstreamAuthError, UpstreamError, UpstreamRateLimited, UpstreamUnavailable
from shared.http_bodies import read_capped
from shared.logging import get_logger
from token_service.regions import Origins

#: Connect's refresh RPC, on the region's auth host (the path the current web app calls).
REFRESH_PATH = "/api/account.gateway.v1.AuthService/RefreshToken"
#: The legacy REST refresh, on the web host: the fallback.
REST_REFRESH_PATH = "/api/auth/token/refresh"
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


log = get_logger("token_service.kimi_auth")


class RefreshResult(msgspec.Struct, frozen=True):
    access_token: str
    refresh_token: str | None


def auth_origin(base_url: str) -> str:
    """The region's auth host: `https://www.kimi.ai` → `https://auth.kimi.ai`; other origins serve it themselves."""
    parts = urlsplit(base_url)
    if not parts.hostname or not parts.hostname.startswith("www."):
        return base_url.rstrip("/")
    return urlunsplit((parts.scheme, "auth." + parts.netloc.removeprefix("www."), "", "", ""))


class KimiAuthClient:
    """Talks to `base_url` (www.kimi.com, www.kimi.ai or the simulator) through the app's one ClientSession."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        base_url: str,
        timeout_s: float = TIMEOUT_S,
        *,
        rest_fallback: bool = True,
        origins: Origins | None = None,
    ) -> None:
        self.session = session
        self.origins = origins
        self.base_url = base_url.rstrip("/")
        self.auth_url = auth_origin(self.base_url)
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)
        self.timeout_s = timeout_s
        self.rest_fallback = rest_fallback

    def at(self, base_url: str | None) -> KimiAuthClient:
        """The same client for another origin (an account of the other region); itself for None or its own."""
        if not base_url or base_url.rstrip("/") == self.base_url:
            return self
        return KimiAuthClient(
            self.session, base_url, self.timeout_s, rest_fallback=self.rest_fallback, origins=self.origins
        )

    def for_region(self, region: str) -> KimiAuthClient:
        """The client of a region's origin ("" or no configured origins: this one)."""
        return self.at(self.origins.for_account(region)) if self.origins and region else self

    async def refresh(self, refresh_token: str) -> RefreshResult:
        """Connect `RefreshToken` first; the REST refresh only when Connect gave no verdict on the token."""
        try:
            return await self.refresh_connect(refresh_token)
        except UpstreamAuthError:
            raise  # the token is dead: REST would refuse the same token
        except UpstreamError as exc:
            if not self.rest_fallback:
                raise
            log.info("refresh_fallback", to="rest", reason=exc.kind)
        return await self.refresh_rest(refresh_token)

    async def refresh_connect(self, refresh_token: str) -> RefreshResult:
        """Connect unary JSON on the auth host: the token in the body, no Authorization header."""
        headers = {"Connect-Protocol-Version": "1", "Content-Type": "application/json"}
        body = msgspec.json.encode({"refresh_token": refresh_token})
        url = self.auth_url + REFRESH_PATH
        return _refreshed(await self._call("POST", url, None, body=body, headers=headers))

    async def refresh_rest(self, refresh_token: str) -> RefreshResult:
        return _refreshed(await self._call("GET", self.base_url + REST_REFRESH_PATH, refresh_token))

    async def probe_rest(self, access_token: str) -> None:
        body = await self._call("GET", self.base_url + USER_PATH, access_token)
        if not body.get("id"):
            raise UpstreamAuthError("GET /api/user answered without a user id")

    async def probe_connect(self, kimi_auth: str) -> None:
        headers = {"Connect-Protocol-Version": "1", "Content-Type": "application/json"}
        await self._call("POST", self.base_url + CURRENT_USER_PATH, kimi_auth, body=b"{}", headers=headers)

    async def _call(
        self,
        method: str,
        url: str,
        bearer: str | None,
        *,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        all_headers = {
            **_BASE_HEADERS,
            "Origin": self.base_url,
            "Referer": self.base_url + "/",
            **(headers or {}),
        }
        if bearer is not None:
            all_headers["Authorization"] = f"Bearer {bearer}"
        path = urlsplit(url).path
        try:
            async with self.session.request(
                method, url, data=body, headers=all_headers, timeout=self.timeout
            ) as resp:
                raw = await read_capped(resp)
                return _checked(path, resp.status, resp.headers.get("Retry-After"), raw)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise UpstreamUnavailable(f"{path}: {type(exc).__name__}") from None


def _refreshed(body: dict[str, Any]) -> RefreshResult:
    """Either spelling of the pair (REST snake_case, Connect camelCase)."""
    access = body.get("access_token") or body.get("accessToken") or body.get("token")
    rotated = body.get("refresh_token") or body.get("refreshToken")
    if not isinstance(access, str) or not access:
        raise UpstreamError("refresh answered without an access token")
    return RefreshResult(access_token=access, refresh_token=rotated if isinstance(rotated, str) else None)


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
