"""The request headers of both Kimi surfaces (kimi-web-rest.md §3.1, kimi-web-connect.md §1.4).

Only `Authorization` is known to be enforced; the rest make the traffic look like the web app's. The
`x-msh-*` ids come from the account's token claims when it has them (they must match the token), otherwise
from ids drawn once per driver, as kimi-free-api draws them once per process.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from upstream_worker.kimi.call import KimiCredentials, reveal

USER_AGENT = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.0.0 Safari/537.36"
)
_BROWSER = {
    "Accept": "*/*",
    "Accept-Language": "zh-CN,zh;q=0.9,en-US;q=0.8,en;q=0.7",
    "Cache-Control": "no-cache",
    "Pragma": "no-cache",
    "R-Timezone": "Asia/Shanghai",
    "X-Language": "zh-CN",
    "X-Msh-Platform": "web",
    "User-Agent": USER_AGENT,
}
CONNECT_CONTENT_TYPE = "application/connect+json"


@dataclass(frozen=True, slots=True)
class FallbackIds:
    """Device and session ids for tokens without those claims: 19-digit decimals, as the web app uses."""

    device_id: str
    session_id: str

    @classmethod
    def draw(cls) -> FallbackIds:
        return cls(
            device_id=str(7 * 10**18 + secrets.randbelow(10**18)),
            session_id=str(17 * 10**17 + secrets.randbelow(10**17)),
        )


def _common(creds: KimiCredentials, base_url: str, ids: FallbackIds) -> dict[str, str]:
    return {
        **_BROWSER,
        "Authorization": f"Bearer {reveal(creds.access_token)}",
        "Origin": base_url,
        "X-Msh-Device-Id": creds.device_id or ids.device_id,
        "X-Msh-Session-Id": creds.session_id or ids.session_id,
    }


def rest_headers(
    creds: KimiCredentials, base_url: str, ids: FallbackIds, user_id: str | None, chat_id: str | None = None
) -> dict[str, str]:
    headers = _common(creds, base_url, ids)
    if user_id:
        headers["X-Traffic-Id"] = user_id
    headers["Referer"] = f"{base_url}/chat/{chat_id}" if chat_id else f"{base_url}/"
    return headers


def connect_headers(
    creds: KimiCredentials, base_url: str, ids: FallbackIds, chat_id: str | None = None, stream: bool = True
) -> dict[str, str]:
    headers = _common(creds, base_url, ids)
    token = reveal(creds.access_token)
    headers["Cookie"] = f"kimi-auth={token}"
    headers["Connect-Protocol-Version"] = "1"
    headers["Content-Type"] = CONNECT_CONTENT_TYPE if stream else "application/json"
    if creds.user_id:
        headers["X-Traffic-Id"] = creds.user_id
    headers["Referer"] = f"{base_url}/chat/{chat_id}" if chat_id else f"{base_url}/"
    return headers
