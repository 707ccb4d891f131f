"""CORS_ALLOW_ORIGINS: the exact CORS headers of the public API routes, and none on the admin routes."""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import pytest

from gateway.app import exposure_warnings
from gateway.cors import EXPOSE_HEADERS
from kimi_sim.answers import answer_for
from shared.secret import Secret
from shared.settings import GatewaySettings
from tests.stack import Stack, StackFactory, stack_factory
from tests.test_gateway_relay import ClientFactory, gateway

__all__ = ["gateway", "stack_factory"]

SITE = "https://chat.example.org"
OTHER = "https://evil.example.net"
SDK_HEADERS = "authorization, content-type, x-stainless-os, anthropic-dangerous-direct-browser-access"


def preflight_headers(origin: str, method: str = "POST", headers: str = SDK_HEADERS) -> dict[str, str]:
    return {
        "Origin": origin,
        "Access-Control-Request-Method": method,
        "Access-Control-Request-Headers": headers,
    }


def cors_headers(response: aiohttp.ClientResponse) -> dict[str, str]:
    """The response's CORS headers (and Vary), lower-cased names."""
    return {
        name.lower(): value
        for name, value in response.headers.items()
        if name.lower().startswith("access-control-") or name.lower() == "vary"
    }


@pytest.mark.parametrize(
    "path",
    [
        "/v1/chat/completions",
        "/v1/messages",
        "/v1/responses",
        "/v1/responses/resp_1",
        "/v1/models",
        "/v1beta/models/kimi:streamGenerateContent",
        "/v1/models/kimi:generateContent",
    ],
)
async def test_a_preflight_from_an_allowed_origin_is_answered(gateway: ClientFactory, path: str) -> None:
    """204 with the origin itself, the methods, the requested headers as sent, a max age and Vary: Origin."""
    client = await gateway(cors_allow_origins=(SITE, "http://127.0.0.1:5173"))
    response = await client.options(path, headers=preflight_headers(SITE))
    assert response.status == 204
    assert cors_headers(response) == {
        "access-control-allow-origin": SITE,
        "access-control-allow-methods": "GET, POST, DELETE, OPTIONS",
        "access-control-allow-headers": SDK_HEADERS,
        "access-control-max-age": "600",
        "vary": "Origin",
    }


async def test_a_star_allows_every_origin_without_echoing_it(gateway: ClientFactory) -> None:
    """With `*`, a preflight and an actual response (here a 401) say `*`."""
    client = await gateway(cors_allow_origins=("*",), api_keys=(Secret("k1"),))
    response = await client.options("/v1/messages", headers=preflight_headers(OTHER, headers="x-api-key"))
    assert (response.status, response.headers["Access-Control-Allow-Origin"]) == (204, "*")
    assert response.headers["Access-Control-Allow-Headers"] == "x-api-key"
    actual = await client.post("/v1/messages", json={}, headers={"Origin": OTHER})
    assert actual.status == 401
    assert cors_headers(actual) == {
        "access-control-allow-origin": "*",
        "access-control-expose-headers": EXPOSE_HEADERS,
        "vary": "Origin",
    }


async def test_an_error_carries_the_cors_headers_so_the_page_can_read_it(gateway: ClientFactory) -> None:
    """A 401 to an allowed origin has Allow-Origin and exposes x-request-id; its body is OpenAI's error."""
    client = await gateway(cors_allow_origins=(SITE,), api_keys=(Secret("k1"),))
    response = await client.get("/v1/models", headers={"Origin": SITE})
    assert response.status == 401
    assert cors_headers(response) == {
        "access-control-allow-origin": SITE,
        "access-control-expose-headers": EXPOSE_HEADERS,
        "vary": "Origin",
    }
    assert "x-request-id" in EXPOSE_HEADERS.split(", ") and response.headers["x-request-id"]
    assert (await response.json())["error"]["code"] == "invalid_api_key"


async def test_a_disallowed_origin_gets_no_cors_headers(gateway: ClientFactory) -> None:
    """Preflight → 403 plain text; an actual response carries only Vary: Origin (it depends on the origin)."""
    client = await gateway(cors_allow_origins=(SITE,))
    response = await client.options("/v1/chat/completions", headers=preflight_headers(OTHER))
    assert response.status == 403 and response.content_type == "text/plain"
    assert cors_headers(response) == {}
    actual = await client.get("/v1/models", headers={"Origin": OTHER})
    assert actual.status == 200 and cors_headers(actual) == {"vary": "Origin"}


async def test_no_setting_means_no_cross_origin_at_all(gateway: ClientFactory) -> None:
    """The default (empty): every preflight is refused and no response has a CORS header."""
    client = await gateway()
    response = await client.options("/v1/chat/completions", headers=preflight_headers(SITE))
    assert response.status == 403 and cors_headers(response) == {}
    actual = await client.get("/v1/models", headers={"Origin": SITE})
    assert actual.status == 200 and cors_headers(actual) == {}


async def test_an_invalid_requested_header_refuses_the_preflight(gateway: ClientFactory) -> None:
    """Requested headers are reflected only when each is a valid header name."""
    client = await gateway(cors_allow_origins=(SITE,))
    bad = preflight_headers(SITE, headers="content-type, bad header")
    response = await client.options("/v1/chat/completions", headers=bad)
    assert response.status == 403 and cors_headers(response) == {}


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/admin/accounts"),
        ("POST", "/admin/keys"),
        ("GET", "/auth/status"),
        ("POST", "/token/check"),
        ("GET", "/metrics"),
    ],
)
async def test_admin_routes_never_answer_cross_origin(gateway: ClientFactory, method: str, path: str) -> None:
    """Even with `*`, an admin route's (or /metrics') preflight is refused, its answers carry no CORS header."""
    client = await gateway(cors_allow_origins=("*",))
    response = await client.options(path, headers=preflight_headers(SITE, method=method))
    assert response.status == 403 and cors_headers(response) == {}
    actual = await client.request(method, path, headers={"Origin": SITE})
    assert cors_headers(actual) == {}


async def test_a_stream_has_the_cors_headers_before_its_first_byte(stack_factory: StackFactory) -> None:
    """An SSE chat completion to an allowed origin carries Allow-Origin and Expose-Headers, and its text."""
    stack: Stack = await stack_factory(cors_allow_origins=(SITE,))
    await stack.add("kimi_auth")
    body: dict[str, Any] = {"model": "kimi", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{stack.url}/v1/chat/completions", json=body, headers={"Origin": SITE}) as response,
    ):
        assert response.status == 200 and response.content_type == "text/event-stream"
        assert cors_headers(response) == {
            "access-control-allow-origin": SITE,
            "access-control-expose-headers": EXPOSE_HEADERS,
            "vary": "Origin",
        }
        assert response.headers["x-request-id"]
        text = await response.text()
    assert text.endswith("data: [DONE]\n\n")
    chunks = [json.loads(line[6:]) for line in text.splitlines() if line.startswith("data: {")]
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks) == answer_for("hi")


def test_a_star_on_an_open_gateway_is_warned_about() -> None:
    """`*` without client keys warns at start (even on loopback); with keys, or a list of origins, it does not."""
    (warning,) = exposure_warnings(GatewaySettings(cors_allow_origins=("*",)))
    assert warning.startswith("CORS_ALLOW_ORIGINS=* and GATEWAY_API_KEYS is not set")
    assert exposure_warnings(GatewaySettings(cors_allow_origins=("*",), api_keys=(Secret("k1"),))) == []
    assert exposure_warnings(GatewaySettings(cors_allow_origins=(SITE,))) == []
