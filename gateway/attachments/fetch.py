"""Fetching an attachment URL without opening an SSRF hole (tools-and-attachments.md §8).

- Only http(s), no credentials in the URL, at most `MAX_REDIRECTS` redirects, each hop checked like the first.
- A host that is an address (any notation) is checked before any socket exists. A name is resolved once, by
  the session's own resolver (`_VettingResolver`): every address it resolves to is checked, and aiohttp
  connects to exactly those addresses, so no second lookup can answer differently (DNS rebinding). TLS still
  verifies the certificate against the URL's host name.
- Body: Content-Length first, then counted while streaming, never past `max_bytes`; no decompression (asked
  for `identity`, a compressed answer is refused), so the cap is the real size; one deadline for everything.
- Refusals are `BadRequest` (too large: `PayloadTooLarge`) naming the part, saying why without an address,
  a resolved name or the remote's body; their reason is a bounded metric label
  (`kimi_gateway_attachment_fetch_refusals_total{reason}`). A name that resolves to a forbidden address and
  a name that does not resolve get the same message, so the gateway cannot be used to map internal DNS.

One `UrlFetcher` per gateway app (`open_fetcher` in a cleanup_ctx): its session keeps no connection alive
and no cookies, and reads no proxy settings from the environment.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import PurePosixPath

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from yarl import URL

from gateway.attachments.addresses import FetchPolicy, IPAddress, is_canonical, parse_host_address
from gateway.metrics import ATTACHMENT_FETCH_REFUSALS
from shared.errors import BadRequest, PayloadTooLarge
from shared.logging import get_logger
from shared.settings import AttachmentSettings

log = get_logger(__name__)

MAX_REDIRECTS = 3
CONNECT_TIMEOUT_S = 5.0
_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
_CHUNK_BYTES = 64 * 1024
_HEADERS = {"User-Agent": "kimi-gateway-attachment-fetcher/1", "Accept": "*/*", "Accept-Encoding": "identity"}
_MB = 1024 * 1024

#: What the caller reads for each reason; never an address, a resolved name or anything the remote said.
_FORBIDDEN_HOST = "the URL's host is not a public address the gateway may fetch from, or does not resolve"
_MESSAGES = {
    "scheme": "only http and https URLs can be fetched",
    "credentials": "URLs with a user name or password are not fetched",
    "bad_url": "the URL is not a valid http(s) URL with a host",
    "port": "the URL's port is not one the gateway fetches from (80, 443, 8000, 8080, 8443)",
    "unresolvable": _FORBIDDEN_HOST,
    "unreachable": "the URL's server could not be reached",
    "tls": "the URL's server did not prove its identity (TLS certificate)",
    "redirects": f"the URL redirects more than {MAX_REDIRECTS} times",
    "bad_response": "the URL's server sent a compressed or malformed answer",
}
_ADDRESS_REASONS = frozenset(
    {"loopback", "private", "link_local", "cgnat", "multicast", "reserved", "unspecified"}
)


@dataclass(frozen=True, slots=True)
class Fetched:
    data: bytes
    #: The last path segment of the final URL (after redirects), if any.
    name: str | None
    #: The server's Content-Type: a hint only, the bytes decide the type.
    content_type: str | None


class FetchRefused(BadRequest):
    """A URL the gateway would not or could not fetch (400); `reason` is for metrics and logs only."""

    def __init__(self, message: str, *, reason: str, param: str) -> None:
        super().__init__(message, param=param)
        self.reason = reason


class _Refusal(Exception):
    """Raised while fetching (in the resolver too); turned into a `FetchRefused` for the part."""

    def __init__(self, reason: str, message: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.message = message


class _VettingResolver(AbstractResolver):
    """Resolves a name once and hands aiohttp only addresses the policy allows, or refuses them all."""

    def __init__(self, policy: FetchPolicy) -> None:
        self._policy = policy

    async def resolve(self, host: str, port: int = 0, family: int = socket.AF_INET) -> list[ResolveResult]:
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM, family=socket.AF_UNSPEC)
        except (socket.gaierror, UnicodeError) as exc:
            raise _Refusal("unresolvable") from exc
        found: dict[IPAddress, int] = {}
        for info_family, _, _, _, sockaddr in infos:
            address = parse_host_address(str(sockaddr[0]).split("%", 1)[0])
            if address is not None:
                found.setdefault(address, info_family)
        reason = self._policy.refusal(host, port, list(found))
        if reason is not None:
            raise _Refusal(reason)
        flags = socket.AI_NUMERICHOST | socket.AI_NUMERICSERV
        return [
            ResolveResult(hostname=host, host=str(a), port=port, family=f, proto=0, flags=flags)
            for a, f in found.items()
        ]

    async def close(self) -> None:
        return None


class UrlFetcher:
    """GETs attachment URLs under the policy; build with `open_fetcher`."""

    def __init__(self, session: aiohttp.ClientSession, policy: FetchPolicy, timeout_s: float) -> None:
        self._session = session
        self._policy = policy
        self._timeout_s = timeout_s

    async def fetch(self, url: str, *, max_bytes: int, param: str) -> Fetched:
        """The bytes behind `url` (at most `max_bytes`); `FetchRefused` / `PayloadTooLarge` naming `param`."""
        try:
            async with asyncio.timeout(self._timeout_s):
                return await self._follow(url, max_bytes)
        except _Refusal as refusal:
            count_refusal(refusal.reason, url)
            text = _FORBIDDEN_HOST if refusal.reason in _ADDRESS_REASONS else _MESSAGES.get(refusal.reason)
            message = f"{param}: {refusal.message or text}"
            raise FetchRefused(message, reason=refusal.reason, param=param) from None
        except TimeoutError:
            count_refusal("timeout", url)
            message = f"{param}: the URL could not be fetched within {self._timeout_s:g} s"
            raise FetchRefused(message, reason="timeout", param=param) from None
        except PayloadTooLarge as exc:
            count_refusal("too_large", url)
            raise PayloadTooLarge(f"{param}: {exc.message}", param=param) from None

    async def _follow(self, url: str, max_bytes: int) -> Fetched:
        target = _parse(url)
        for _ in range(MAX_REDIRECTS + 1):
            self._check_target(target)
            async with await self._open(target) as resp:
                location = resp.headers.get("Location") if resp.status in _REDIRECT_STATUSES else None
                location = location or None
                if location is None:
                    return await _read(resp, target, max_bytes)
            target = _parse_relative(target, location)
        raise _Refusal("redirects")

    def _check_target(self, target: URL) -> None:
        """The checks that need no socket: scheme, credentials, and a host that is itself an address."""
        if target.scheme not in ("http", "https"):
            raise _Refusal("scheme")
        if target.user is not None or target.password is not None:
            raise _Refusal("credentials")
        host, port = target.raw_host, target.port
        if not host or port is None:
            raise _Refusal("bad_url")
        address = parse_host_address(host)
        if address is None:
            return  # a name: the resolver checks every address it resolves to
        reason = self._policy.refusal(host, port, [address])
        if reason is not None:
            raise _Refusal(reason)
        if not is_canonical(host):
            raise _Refusal("bad_url")

    async def _open(self, target: URL) -> aiohttp.ClientResponse:
        """The response to one GET, unread; a refusal from the resolver passes through as it is."""
        try:
            return await self._session.get(target, allow_redirects=False)
        except aiohttp.InvalidURL as exc:
            raise _Refusal("bad_url") from exc
        except aiohttp.ClientSSLError as exc:  # before ValueError: certificate errors are ValueErrors too
            raise _Refusal("tls") from exc
        except aiohttp.ClientResponseError as exc:
            raise _Refusal("bad_response") from exc
        except aiohttp.ClientError as exc:
            raise _Refusal("unreachable") from exc
        except ValueError as exc:
            raise _Refusal("bad_url") from exc


def _parse(url: str) -> URL:
    try:
        return URL(url)
    except (ValueError, TypeError):
        raise _Refusal("bad_url") from None


def _parse_relative(base: URL, location: str) -> URL:
    try:
        return base.join(URL(location))
    except (ValueError, TypeError):
        raise _Refusal("bad_url") from None


async def _read(resp: aiohttp.ClientResponse, target: URL, max_bytes: int) -> Fetched:
    if not 200 <= resp.status < 300:
        raise _Refusal("http_status", f"the URL answered HTTP {resp.status}")
    if resp.headers.get("Content-Encoding", "identity").strip().lower() not in ("", "identity"):
        raise _Refusal("bad_response")
    too_large = PayloadTooLarge(f"the URL's content is larger than {human_size(max_bytes)}, its limit")
    if resp.content_length is not None and resp.content_length > max_bytes:
        raise too_large
    body = bytearray()
    try:
        async for chunk in resp.content.iter_chunked(_CHUNK_BYTES):
            body += chunk
            if len(body) > max_bytes:
                raise too_large
    except aiohttp.ClientError as exc:
        raise _Refusal("unreachable") from exc
    name = PurePosixPath(target.path).name or None
    return Fetched(bytes(body), name, resp.headers.get("Content-Type"))


def human_size(size: int) -> str:
    """`25.3 MB`, or `180 bytes` below a tenth of a megabyte."""
    return f"{size / _MB:.1f} MB" if size >= _MB // 10 else f"{size} bytes"


def count_refusal(reason: str, url: str) -> None:
    """Count and log one refused URL: the reason and the URL's host, nothing the fetch learned."""
    ATTACHMENT_FETCH_REFUSALS.labels(reason=reason).inc()
    log.info("attachment_fetch_refused", reason=reason, host=_host_of(url))


def _host_of(url: str) -> str | None:
    try:
        return URL(url).host
    except (ValueError, TypeError):
        return None


@asynccontextmanager
async def open_fetcher(
    settings: AttachmentSettings,
    trace_configs: Sequence[aiohttp.TraceConfig] = (),
    ssl_context: ssl.SSLContext | None = None,
) -> AsyncIterator[UrlFetcher]:
    """The app's one fetcher (a cleanup_ctx body). `trace_configs` are aiohttp's own request hooks;
    `ssl_context` replaces the system's CAs (an intranet CA), never the verification itself."""
    policy = FetchPolicy.from_entries(settings.fetch_allow)
    connector = aiohttp.TCPConnector(
        resolver=_VettingResolver(policy),
        use_dns_cache=False,
        force_close=True,
        limit=64,
        ssl=ssl_context if ssl_context is not None else True,
    )
    session = aiohttp.ClientSession(
        connector=connector,
        timeout=aiohttp.ClientTimeout(total=None, sock_connect=CONNECT_TIMEOUT_S),
        headers=_HEADERS,
        auto_decompress=False,
        trust_env=False,
        cookie_jar=aiohttp.DummyCookieJar(),
        trace_configs=list(trace_configs) or None,
        raise_for_status=False,
    )
    try:
        yield UrlFetcher(session, policy, settings.fetch_timeout_s)
    finally:
        await session.close()
