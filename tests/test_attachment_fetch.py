"""The SSRF-safe URL fetcher against real loopback servers: what it fetches from the one allowed server, and
every forbidden target refused with zero connections (counting listeners and aiohttp's own trace hooks)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from prometheus_client import REGISTRY

from gateway.attachments.fetch import MAX_REDIRECTS, FetchRefused, UrlFetcher, open_fetcher
from shared.errors import PayloadTooLarge
from shared.settings import AttachmentSettings
from tests.attachment_servers import (
    MB,
    PDF,
    PNG,
    FileServer,
    Forbidden,
    TlsServer,
    TraceCounts,
    file_server,  # noqa: F401 - fixture
    forbidden,  # noqa: F401 - fixture
    ipv6_loopback_works,
    tls_file_server,  # noqa: F401 - fixture
)

PARAM = "messages[0].content[1]"
HOST_REFUSED = (
    f"{PARAM}: the URL's host is not a public address the gateway may fetch from, or does not resolve"
)


@pytest_asyncio.fixture
async def traces() -> TraceCounts:
    return TraceCounts()


@pytest_asyncio.fixture
async def fetcher(file_server: FileServer, traces: TraceCounts) -> AsyncIterator[UrlFetcher]:  # noqa: F811
    """A fetcher that may reach the file server's 127.0.0.1 port (and [::1] on it) and nothing else local."""
    port = file_server.port
    settings = AttachmentSettings(fetch_allow=(f"127.0.0.1:{port}", f"[::1]:{port}"), fetch_timeout_s=1.0)
    async with open_fetcher(settings, [traces.config()]) as built:
        yield built


def refusals(reason: str) -> float:
    return (
        REGISTRY.get_sample_value("kimi_gateway_attachment_fetch_refusals_total", {"reason": reason}) or 0.0
    )


async def test_fetches_from_the_allowed_server(fetcher: UrlFetcher, file_server: FileServer) -> None:  # noqa: F811
    """An allowed host:port serves its bytes unchanged, named after the URL's last path segment."""
    got = await fetcher.fetch(f"{file_server.url}/files/cat.png?x=1", max_bytes=MB, param=PARAM)
    assert (got.data, got.name, got.content_type) == (PNG, "cat.png", "image/png")
    pdf = await fetcher.fetch(f"http://localhost:{file_server.port}/doc.pdf", max_bytes=MB, param=PARAM)
    assert pdf.data == PDF  # an address entry allows a name that resolves to it


async def test_follows_redirects_within_the_allowed_server(
    fetcher: UrlFetcher,
    file_server: FileServer,  # noqa: F811
) -> None:
    """Relative and absolute redirects are followed up to MAX_REDIRECTS hops; one more is refused."""
    relative = await fetcher.fetch(f"{file_server.url}/files/sub/relative", max_bytes=MB, param=PARAM)
    assert (relative.data, relative.name) == (PNG, "cat.png")
    hops = await fetcher.fetch(f"{file_server.url}/hop/{MAX_REDIRECTS}", max_bytes=MB, param=PARAM)
    assert hops.data == PNG
    with pytest.raises(FetchRefused) as caught:
        await fetcher.fetch(f"{file_server.url}/hop/{MAX_REDIRECTS + 1}", max_bytes=MB, param=PARAM)
    assert (caught.value.reason, caught.value.message) == (
        "redirects",
        f"{PARAM}: the URL redirects more than 3 times",
    )
    assert file_server.hits[f"/hop/{MAX_REDIRECTS + 1}"] == 1 and file_server.hits["/hop/1"] == 2
    assert file_server.hits["/hop/0"] == 1  # the refused chain stopped before its last hop


#: (url template, reason, whether a request may start: names reach the resolver, addresses never get that far)
PROBES: list[tuple[str, str, bool]] = [
    ("http://localhost:{v4}/", "loopback", True),
    ("http://127.0.0.1:{v4}/", "loopback", False),
    ("http://127.0.0.2:{v4_other}/", "loopback", False),
    ("http://2130706433:{v4}/", "loopback", False),
    ("http://0x7f000001:{v4}/", "loopback", False),
    ("http://017700000001:{v4}/", "loopback", False),
    ("http://0177.0.0.1:{v4}/", "loopback", False),
    ("http://0x7f.1:{v4}/", "loopback", False),
    ("http://127.1:{v4}/", "loopback", False),
    ("http://[::ffff:127.0.0.1]:{v4}/", "loopback", False),
    ("http://[::ffff:7f00:1]:{v4}/", "loopback", False),
    ("http://[64:ff9b::7f00:1]:{v4}/", "loopback", False),
    ("http://[2002:7f00:1::]:{v4}/", "loopback", False),
    ("http://[::127.0.0.1]:{v4}/", "reserved", False),
    ("http://0.0.0.0:{v4}/", "unspecified", False),
    ("http://0:{v4}/", "unspecified", False),
    ("http://169.254.169.254/latest/meta-data/", "link_local", False),
    ("http://[::ffff:169.254.169.254]/", "link_local", False),
    ("http://[fe80::1]/", "link_local", False),
    ("http://[fd00:ec2::254]/", "private", False),
    ("http://10.0.0.1/", "private", False),
    ("http://172.16.5.4/", "private", False),
    ("http://192.168.0.1/", "private", False),
    ("http://100.64.0.1/", "cgnat", False),
    ("http://100.100.100.200/latest/meta-data/", "cgnat", False),
    ("http://224.0.0.1/", "multicast", False),
    ("http://255.255.255.255/", "reserved", False),
    ("http://93.184.215.14:22/", "port", False),
    ("https://93.184.215.14:6379/", "port", False),
]
IPV6_PROBES: list[tuple[str, str, bool]] = [
    ("http://[::1]:{v6}/", "loopback", False),
    ("http://[::]:{v6}/", "unspecified", False),
]


@pytest.mark.parametrize(("template", "reason", "may_start"), PROBES + IPV6_PROBES)
async def test_forbidden_targets_are_refused_without_a_connection(
    fetcher: UrlFetcher,
    forbidden: Forbidden,  # noqa: F811
    traces: TraceCounts,
    template: str,
    reason: str,
    may_start: bool,
) -> None:
    """Loopback by name, by IPv6, in decimal / octal / hex, IPv4 inside IPv6, metadata, private, CGNAT and
    the rest are refused with their reason and a message without any address, before any connection."""
    if "{v6}" in template and not ipv6_loopback_works():
        pytest.skip("no IPv6 loopback here")
    url = template.format(v4=forbidden.v4.port, v4_other=forbidden.v4_other.port, v6=forbidden.v6.port)
    before = refusals(reason)
    with pytest.raises(FetchRefused) as caught:
        await fetcher.fetch(url, max_bytes=MB, param=PARAM)
    assert caught.value.reason == reason and caught.value.param == PARAM and caught.value.status == 400
    if reason == "port":
        assert caught.value.message == (
            f"{PARAM}: the URL's port is not one the gateway fetches from (80, 443, 8000, 8080, 8443)"
        )
    else:
        assert caught.value.message == HOST_REFUSED
    assert refusals(reason) == before + 1
    assert forbidden.accepted == 0 and traces.connections == 0
    assert traces.requests == (1 if may_start else 0)


@pytest.mark.parametrize(
    "target",
    [
        "http://127.0.0.2:{v4_other}/secret",
        "http://localhost:{v4}/",
        "http://[::ffff:127.0.0.1]:{v4}/",
        "http://169.254.169.254/latest/meta-data/",
    ],
)
async def test_a_redirect_to_a_forbidden_target_is_refused(
    fetcher: UrlFetcher,
    file_server: FileServer,  # noqa: F811
    forbidden: Forbidden,  # noqa: F811
    traces: TraceCounts,
    target: str,
) -> None:
    """The allowed server's redirect to a forbidden place is checked like a first URL: refused, nothing
    connects there, and the caller learns nothing about the target."""
    location = target.format(v4=forbidden.v4.port, v4_other=forbidden.v4_other.port)
    with pytest.raises(FetchRefused) as caught:
        await fetcher.fetch(f"{file_server.url}/redirect?to={location}", max_bytes=MB, param=PARAM)
    assert caught.value.message == HOST_REFUSED
    assert file_server.hits["/redirect"] == 1
    assert forbidden.accepted == 0 and traces.connections == 1  # the allowed server's one connection


@pytest.mark.parametrize(
    ("url", "reason", "message"),
    [
        ("file:///etc/passwd", "scheme", "only http and https URLs can be fetched"),
        ("ftp://93.184.215.14/a.png", "scheme", "only http and https URLs can be fetched"),
        ("gopher://127.0.0.1:70/", "scheme", "only http and https URLs can be fetched"),
        (
            "http://user:pw@127.0.0.1:{port}/cat.png",
            "credentials",
            "URLs with a user name or password are not fetched",
        ),
        ("http:///cat.png", "bad_url", "the URL is not a valid http(s) URL with a host"),
        ("http://[::1/", "bad_url", "the URL is not a valid http(s) URL with a host"),
    ],
)
async def test_urls_refused_before_any_socket(
    fetcher: UrlFetcher,
    file_server: FileServer,  # noqa: F811
    traces: TraceCounts,
    url: str,
    reason: str,
    message: str,
) -> None:
    """Other schemes, credentials in the URL and broken URLs are refused without a request."""
    with pytest.raises(FetchRefused) as caught:
        await fetcher.fetch(url.format(port=file_server.port), max_bytes=MB, param=PARAM)
    assert (caught.value.reason, caught.value.message) == (reason, f"{PARAM}: {message}")
    assert traces.requests == 0 and file_server.hits == {}


@pytest.mark.parametrize("path", ["/declared-big", "/streamed-big"])
async def test_size_cap_by_header_and_while_streaming(
    fetcher: UrlFetcher,
    file_server: FileServer,  # noqa: F811
    path: str,
) -> None:
    """A Content-Length over the cap, or a body that grows past it without one, is a 413 naming the part."""
    before = refusals("too_large")
    started = time.monotonic()
    with pytest.raises(PayloadTooLarge) as caught:
        await fetcher.fetch(f"{file_server.url}{path}", max_bytes=MB, param=PARAM)
    assert caught.value.status == 413 and caught.value.param == PARAM
    assert caught.value.message == f"{PARAM}: the URL's content is larger than 1.0 MB, its limit"
    assert time.monotonic() - started < 1.0 and refusals("too_large") == before + 1


async def test_time_cap(fetcher: UrlFetcher, file_server: FileServer) -> None:  # noqa: F811
    """A server that does not answer within the fetch time (1 s here) is refused at that time."""
    started = time.monotonic()
    with pytest.raises(FetchRefused) as caught:
        await fetcher.fetch(f"{file_server.url}/slow", max_bytes=MB, param=PARAM)
    assert 0.9 < time.monotonic() - started < 1.8
    assert (caught.value.reason, caught.value.message) == (
        "timeout",
        f"{PARAM}: the URL could not be fetched within 1 s",
    )


@pytest.mark.parametrize(
    ("path", "reason", "message"),
    [
        ("/missing.png", "http_status", "the URL answered HTTP 404"),
        ("/gzip", "bad_response", "the URL's server sent a compressed or malformed answer"),
    ],
)
async def test_unusable_answers(
    fetcher: UrlFetcher,
    file_server: FileServer,  # noqa: F811
    path: str,
    reason: str,
    message: str,
) -> None:
    """An error status, or a compressed body the fetcher did not ask for, is refused without its content."""
    with pytest.raises(FetchRefused) as caught:
        await fetcher.fetch(f"{file_server.url}{path}", max_bytes=MB, param=PARAM)
    assert (caught.value.reason, caught.value.message) == (reason, f"{PARAM}: {message}")


async def test_closed_port_is_unreachable(
    file_server: FileServer,  # noqa: F811
    forbidden: Forbidden,  # noqa: F811
) -> None:
    """An allowed place where nothing listens is `unreachable`, saying so without the address."""
    port = forbidden.v4.port
    await forbidden.v4.aclose()
    settings = AttachmentSettings(fetch_allow=(f"127.0.0.1:{port}",), fetch_timeout_s=2.0)
    async with open_fetcher(settings) as fetcher:
        with pytest.raises(FetchRefused) as caught:
            await fetcher.fetch(f"http://127.0.0.1:{port}/x.png", max_bytes=MB, param=PARAM)
    assert (caught.value.reason, caught.value.message) == (
        "unreachable",
        f"{PARAM}: the URL's server could not be reached",
    )


def test_default_settings_allow_nothing_local() -> None:
    """ATTACHMENT_FETCH_ALLOW is empty unless set: nothing private is reachable by default."""
    assert AttachmentSettings().fetch_allow == ()
    assert AttachmentSettings.from_env(
        {"ATTACHMENT_FETCH_ALLOW": "127.0.0.1:81, 10.0.0.0/8"}
    ).fetch_allow == (
        "127.0.0.1:81",
        "10.0.0.0/8",
    )


async def test_tls_verifies_the_url_host_name_on_the_pinned_address(tls_file_server: TlsServer) -> None:  # noqa: F811
    """The socket goes to the vetted 127.0.0.1, yet TLS checks the certificate against the URL's name: the
    `localhost` certificate passes for https://localhost and fails for https://127.0.0.1 and for untrusted CAs."""
    port = tls_file_server.port
    settings = AttachmentSettings(fetch_allow=(f"127.0.0.1:{port}",), fetch_timeout_s=2.0)
    async with open_fetcher(settings, ssl_context=tls_file_server.client_context) as fetcher:
        got = await fetcher.fetch(f"https://localhost:{port}/cat.png", max_bytes=MB, param=PARAM)
        assert got.data == PNG
        with pytest.raises(FetchRefused) as by_address:
            await fetcher.fetch(f"https://127.0.0.1:{port}/cat.png", max_bytes=MB, param=PARAM)
    assert (by_address.value.reason, by_address.value.message) == (
        "tls",
        f"{PARAM}: the URL's server did not prove its identity (TLS certificate)",
    )
    async with open_fetcher(settings) as system_cas:
        with pytest.raises(FetchRefused) as untrusted:
            await system_cas.fetch(f"https://localhost:{port}/cat.png", max_bytes=MB, param=PARAM)
    assert untrusted.value.reason == "tls"
