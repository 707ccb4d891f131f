"""`/openapi.json` is built from the app's router: every registered route is documented (the `/` page draws it in
the browser: tests/test_browser_docs.py)."""

from __future__ import annotations

from typing import Any

from gateway.app import create_app
from shared.settings import CommonSettings, GatewaySettings


async def test_openapi_lists_every_registered_route_with_a_summary(
    redis_url: str, aiohttp_client: Any
) -> None:
    """Each (method, path) the app serves, HEAD twins aside, is in /openapi.json with a summary and path params."""
    app = create_app(GatewaySettings(common=CommonSettings(redis_url=redis_url)))
    client = await aiohttp_client(app)
    registered = {
        (route.method.lower(), route.resource.canonical)
        for route in app.router.routes()
        if route.resource is not None and route.method != "HEAD"
    }
    spec = await (await client.get("/openapi.json")).json()
    documented = {(method, path) for path, ops in spec["paths"].items() for method in ops}
    assert documented == registered
    assert {
        "/auth/extract",
        "/auth/status",
        "/auth/clear",
        "/admin/accounts/{account_id}/probe",
        "/v1beta/models/{model}",
        "/v1/models/{model}:generateContent",
        "/v1/models/{model}:streamGenerateContent",
        "/v1/models/{model}:countTokens",
    } <= set(spec["paths"])
    missing = sorted(key for key in documented if not spec["paths"][key[1]][key[0]]["summary"])
    assert missing == []
    params = spec["paths"]["/admin/accounts/{account_id}/enable"]["post"]["parameters"]
    assert [p["name"] for p in params] == ["account_id"]
