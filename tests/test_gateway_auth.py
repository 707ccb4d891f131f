"""Client authentication on the routes that need no job, and the dialect their errors take."""

from __future__ import annotations

from typing import Any

import pytest

from kimi_sim.server import SimServer
from shared.secret import Secret
from shared.usage_estimate import estimate_prompt_tokens
from tests.test_gateway_relay import ClientFactory, gateway

__all__ = ["gateway"]

KEY = Secret("k1")
OPENAI_401 = {
    "error": {
        "message": "You didn't provide an API key (Authorization: Bearer <key>).",
        "type": "invalid_request_error",
        "param": None,
        "code": "invalid_api_key",
    }
}
COUNT_BODY = {"model": "kimi", "messages": [{"role": "user", "content": "hi"}]}
GEMINI_COUNT_BODY = {"contents": [{"parts": [{"text": "hi"}]}]}


def gemini_error(code: int, status: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "status": status}}


@pytest.mark.parametrize("path", ["/v1/models", "/v1/models/kimi"])
async def test_openai_model_routes_need_a_key(gateway: ClientFactory, path: str) -> None:
    """With GATEWAY_API_KEYS, the OpenAI model routes answer 401 in OpenAI's shape without the right key."""
    client = await gateway(api_keys=(KEY,))
    missing = await client.get(path)
    assert (missing.status, await missing.json()) == (401, OPENAI_401)
    wrong = await client.get(path, headers={"Authorization": "Bearer nope"})
    assert (wrong.status, (await wrong.json())["error"]["message"]) == (401, "Incorrect API key provided.")
    right = await client.get(path, headers={"Authorization": "Bearer k1"})
    assert right.status == 200


async def test_anthropic_count_tokens_needs_a_key(gateway: ClientFactory) -> None:
    """count_tokens answers 401 authentication_error in Anthropic's shape; x-api-key or Bearer k1 passes."""
    client = await gateway(api_keys=(KEY,))
    wrong = await client.post("/v1/messages/count_tokens", json=COUNT_BODY, headers={"x-api-key": "nope"})
    body = await wrong.json()
    assert (wrong.status, body["type"], body["error"]) == (
        401,
        "error",
        {"type": "authentication_error", "message": "Incorrect API key provided."},
    )
    for headers in ({"x-api-key": "k1"}, {"Authorization": "Bearer k1"}):
        right = await client.post("/v1/messages/count_tokens", json=COUNT_BODY, headers=headers)
        assert (right.status, await right.json()) == (200, {"input_tokens": estimate_prompt_tokens(["hi"])})


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/v1beta/models", None),
        ("GET", "/v1beta/models/kimi", None),
        ("POST", "/v1beta/models/kimi:countTokens", GEMINI_COUNT_BODY),
        ("POST", "/v1/models/kimi:countTokens", GEMINI_COUNT_BODY),
        ("GET", "/v1/models", None),
        ("GET", "/v1/models/kimi", None),
    ],
)
async def test_gemini_local_routes_need_a_key(
    gateway: ClientFactory, method: str, path: str, body: dict[str, Any] | None
) -> None:
    """A Gemini caller with a wrong key gets 401 UNAUTHENTICATED as google.rpc.Status; the right key passes."""
    client = await gateway(api_keys=(KEY,))
    wrong = await client.request(method, path, json=body, headers={"x-goog-api-key": "nope"})
    assert (wrong.status, await wrong.json()) == (
        401,
        gemini_error(401, "UNAUTHENTICATED", "Incorrect API key provided."),
    )
    by_query = await client.request(method, f"{path}?key=nope", json=body)
    assert by_query.status == 401 and (await by_query.json())["error"]["status"] == "UNAUTHENTICATED"
    for params, headers in (({}, {"x-goog-api-key": "k1"}), ({"key": "k1"}, {})):
        right = await client.request(method, path, json=body, params=params, headers=headers)
        assert right.status == 200


async def test_passthrough_tokens_pass_the_local_routes(gateway: ClientFactory, kimi_sim: SimServer) -> None:
    """A `Bearer T1,T2` of Kimi tokens is let through with keys set and ALLOW_PASSTHROUGH_TOKENS=true, not
    when a token is expired nor, by default, once keys are set."""
    one = kimi_sim.state.add_account("kimi_auth").token
    two = kimi_sim.state.add_account("refresh_token").token
    expired = kimi_sim.state.add_account("kimi_auth", exp_in_s=-60).token
    client = await gateway(api_keys=(KEY,), allow_passthrough="true")
    ok = await client.get("/v1/models", headers={"Authorization": f"Bearer {one},{two}"})
    assert ok.status == 200
    count = await client.post("/v1/messages/count_tokens", json=COUNT_BODY, headers={"x-api-key": one})
    assert count.status == 200
    stale = await client.get("/v1/models", headers={"Authorization": f"Bearer {one},{expired}"})
    message = (await stale.json())["error"]["message"]
    assert stale.status == 401 and message.startswith("pass-through token 2 of 2: token is already expired")
    closed = await gateway(api_keys=(KEY,))
    refused = await closed.get("/v1/models", headers={"Authorization": f"Bearer {one}"})
    assert refused.status == 401


async def test_service_routes_stay_open(gateway: ClientFactory) -> None:
    """/ping, /healthz, /readyz, /metrics, / and /openapi.json need no key even with GATEWAY_API_KEYS."""
    client = await gateway(api_keys=(KEY,))
    statuses = {path: (await client.get(path)).status for path in ("/ping", "/healthz", "/metrics", "/")}
    statuses["/openapi.json"] = (await client.get("/openapi.json")).status
    statuses["/readyz"] = (await client.get("/readyz")).status  # the fixture announces a worker
    assert statuses == {
        "/ping": 200,
        "/healthz": 200,
        "/metrics": 200,
        "/": 200,
        "/openapi.json": 200,
        "/readyz": 200,
    }


@pytest.mark.parametrize(
    ("params", "headers"),
    [({}, {"x-goog-api-key": "k"}), ({"key": "k"}, {})],
)
async def test_unknown_model_for_a_gemini_caller_is_a_gemini_404(
    gateway: ClientFactory, params: dict[str, str], headers: dict[str, str]
) -> None:
    """GET /v1/models/{unknown} by a Gemini-authenticated caller is a 404 NOT_FOUND google.rpc.Status."""
    client = await gateway()
    resp = await client.get("/v1/models/gpt-5", params=params, headers=headers)
    assert (resp.status, await resp.json()) == (
        404,
        gemini_error(404, "NOT_FOUND", "models/gpt-5 is not found."),
    )


async def test_unknown_model_on_v1beta_is_a_gemini_404(gateway: ClientFactory) -> None:
    """GET /v1beta/models/{unknown} is a Gemini 404 whoever asks; /v1/models/{unknown} by Bearer is OpenAI's."""
    client = await gateway()
    beta = await client.get("/v1beta/models/gpt-5", headers={"Authorization": "Bearer k"})
    assert (beta.status, await beta.json()) == (
        404,
        gemini_error(404, "NOT_FOUND", "models/gpt-5 is not found."),
    )
    openai_style = await client.get("/v1/models/gpt-5", headers={"Authorization": "Bearer k"})
    assert (openai_style.status, (await openai_style.json())["error"]["code"]) == (404, "model_not_found")
