"""`/openapi.json` describes the API for real: a valid OpenAPI 3.1 document, every registered route with its
tag, schemes, schemas, examples and code samples; the official SDKs' requests and the gateway's real answers
(through the simulator) validate against its schemas."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import anthropic
import openai
import pytest
import pytest_asyncio
from aiohttp import web
from aiohttp.test_utils import TestServer
from google import genai
from google.genai import types as genai_types
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate

from gateway.app import create_app
from gateway.openapi import TAGS, build
from gateway.openapi_operations import OPERATIONS
from shared.settings import CommonSettings, GatewaySettings
from tests.stack import Stack, StackFactory, stack_factory

__all__ = ["stack_factory"]
pytestmark = pytest.mark.filterwarnings("ignore:Inheritance class AiohttpClientSession:DeprecationWarning")

Spec = dict[str, Any]
#: The operations whose request or the route itself can stream (the docs page's "try it" reads `x-stream`).
STREAMING = {
    ("post", "/v1/chat/completions"),
    ("post", "/v1/messages"),
    ("post", "/v1/responses"),
    ("post", "/v1beta/models/{model}:streamGenerateContent"),
    ("post", "/v1/models/{model}:streamGenerateContent"),
}
#: POST routes that take no body.
NO_BODY = {
    "/auth/clear",
    "/admin/accounts/probe",
    "/admin/accounts/{account_id}/enable",
    "/admin/accounts/{account_id}/disable",
    "/admin/accounts/{account_id}/probe",
    "/admin/keys/{key_id}/revoke",
    "/admin/keys/{key_id}/rotate",
}
SDK_LANGS = {"Python (openai)", "Python (openai, stream)", "Python (anthropic)", "Python (google-genai)"}


def _app(**overrides: Any) -> web.Application:
    return create_app(GatewaySettings(common=CommonSettings(redis_url="redis://127.0.0.1:1/0"), **overrides))


@pytest.fixture(scope="module")
def spec() -> Spec:
    document: Spec = json.loads(json.dumps(build(_app())))
    return document


def validator(spec: Spec, schema: Any) -> Draft202012Validator:
    """A JSON Schema 2020-12 validator of `schema` that resolves the document's `#/components/...` refs."""
    return Draft202012Validator({**schema, "components": spec["components"]})


def check(spec: Spec, schema: Any, instance: Any) -> None:
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator(spec, schema).iter_errors(instance)]
    assert errors == [], json.dumps(instance)[:500]


def answer_schema(
    spec: Spec, method: str, path: str, status: str = "200", content: str = "application/json"
) -> Any:
    return spec["paths"][path][method]["responses"][status]["content"][content]["schema"]


def request_schema(spec: Spec, method: str, path: str) -> Any:
    return spec["paths"][path][method]["requestBody"]["content"]["application/json"]["schema"]


def _operations(spec: Spec) -> list[tuple[str, str, Spec]]:
    return [(m, p, op) for p, ops in spec["paths"].items() for m, op in ops.items()]


async def test_the_served_document_is_valid_openapi_and_cached(aiohttp_client: Any) -> None:
    """GET /openapi.json validates as OpenAPI 3.1, is built once (same bytes), and a matching ETag gets 304."""
    client = await aiohttp_client(_app())
    first = await client.get("/openapi.json")
    body = await first.read()
    validate(json.loads(body))
    again = await client.get("/openapi.json")
    assert await again.read() == body and again.headers["ETag"] == first.headers["ETag"]
    cached = await client.get("/openapi.json", headers={"If-None-Match": first.headers["ETag"]})
    assert cached.status == 304 and await cached.read() == b""


async def test_every_registered_route_is_described(spec: Spec) -> None:
    """Each route of the router has a row, one known tag, schemes that exist, request and answer schemas,
    examples and a curl sample; `x-stream` marks exactly the streaming operations."""
    app = _app()
    registered = {
        (r.method, r.resource.canonical)
        for r in app.router.routes()
        if r.resource is not None and r.method not in ("HEAD", "*")
    }
    assert registered - set(OPERATIONS) == set()
    tags = [t["name"] for t in spec["tags"]]
    assert (
        tags
        == [name for name, _ in TAGS]
        == ["OpenAI", "Responses", "Anthropic", "Gemini", "Service", "Admin"]
    )
    schemes = set(spec["components"]["securitySchemes"])
    for method, path, op in _operations(spec):
        where = f"{method} {path}"
        assert len(op["tags"]) == 1 and op["tags"][0] in tags, where
        assert all(set(s) <= schemes for s in op["security"]), where
        ok = next(v for k, v in op["responses"].items() if k.startswith("2"))
        assert ok["content"] and all("schema" in c for c in ok["content"].values()), where
        takes_body = method in ("post", "patch") and path not in NO_BODY
        assert ("requestBody" in op) == takes_body, where
        if takes_body:
            assert op["requestBody"]["content"]["application/json"]["example"], where
        assert op["x-codeSamples"][0]["lang"] == "curl" and "$BASE" in op["x-codeSamples"][0]["source"], where
        assert op.get("x-stream", False) == ((method, path) in STREAMING), where
        if op["tags"][0] not in ("Service", "Admin"):
            assert {"400", "401", "403", "404", "429", "5XX"} <= set(op["responses"]), where
    chat = [op for m, p, op in _operations(spec) if (m, p) in STREAMING]
    assert all({s["label"] for s in op["x-codeSamples"]} & SDK_LANGS for op in chat)


def test_security_per_dialect(spec: Spec) -> None:
    """Each dialect names the key styles its SDK sends; admin routes the admin key."""
    paths = spec["paths"]
    assert paths["/v1/chat/completions"]["post"]["security"] == [{"bearer": []}]
    assert paths["/v1/messages"]["post"]["security"] == [{"anthropicKey": []}, {"bearer": []}]
    gemini = paths["/v1beta/models/{model}:generateContent"]["post"]["security"]
    assert gemini == [{"googApiKey": []}, {"googKeyQuery": []}, {"bearer": []}]
    assert paths["/admin/keys"]["post"]["security"] == [{"adminBearer": []}, {"adminKey": []}]
    assert paths["/ping"]["get"]["security"] == []
    schemes = spec["components"]["securitySchemes"]
    assert (schemes["anthropicKey"]["name"], schemes["googKeyQuery"]["in"]) == ("x-api-key", "query")
    assert schemes["adminKey"]["name"] == "X-Admin-Key"


def test_every_example_validates_against_its_schema(spec: Spec) -> None:
    """Request examples, JSON answer examples and error examples all match their own schemas."""
    for method, path, op in _operations(spec):
        if "requestBody" in op:
            check(
                spec,
                request_schema(spec, method, path),
                op["requestBody"]["content"]["application/json"]["example"],
            )
        for response in op["responses"].values():
            json_content = response.get("content", {}).get("application/json", {})
            if "example" in json_content:
                check(spec, json_content["schema"], json_content["example"])


def test_extensions_are_documented(spec: Spec) -> None:
    """kimi-free-api's use_search, conversation_id and model flags are properties with descriptions."""
    request = spec["components"]["schemas"]["ChatCompletionRequest"]["properties"]
    assert "-search" in request["model"]["description"]
    assert "use_search" in spec["paths"]["/v1/chat/completions"]["post"]["description"]
    assert request["use_search"]["description"] and request["conversation_id"]["description"]


# ---------------------------------------------------------------- the SDKs' own requests


class Recorder:
    """A loopback server that records each JSON body and answers the document's own example for the route."""

    def __init__(self, spec: Spec) -> None:
        self.spec = spec
        self.bodies: dict[str, Any] = {}

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.bodies[request.path] = await request.json()
        path = request.path.replace("/kimi:", "/{model}:")
        example = self.spec["paths"][path]["post"]["responses"]["200"]["content"]["application/json"][
            "example"
        ]
        return web.json_response(example)


@pytest_asyncio.fixture
async def recorder(spec: Spec) -> AsyncIterator[tuple[Recorder, str]]:
    rec = Recorder(spec)
    app = web.Application()
    app.router.add_post("/{tail:.*}", rec.handle)
    async with TestServer(app, host="127.0.0.1") as server:
        yield rec, str(server.make_url("")).rstrip("/")


async def test_sdk_requests_validate_against_the_request_schemas(
    spec: Spec, recorder: tuple[Recorder, str]
) -> None:
    """openai (chat, responses), anthropic and google-genai bodies with typical options match the schemas,
    and each SDK parses the document's answer example."""
    rec, url = recorder
    tool = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    async with openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="k", max_retries=0) as oa:
        completion = await oa.chat.completions.create(
            model="kimi-search",
            messages=[
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": [{"type": "text", "text": "Hi"}]},
            ],
            temperature=0.3,
            max_tokens=64,
            stop=["END"],
            stream_options=None,
            tools=[{"type": "function", "function": {"name": "weather", "parameters": tool}}],
            tool_choice="auto",
            extra_body={"use_search": True, "conversation_id": "none"},
        )
        assert completion.choices[0].message.content
        response = await oa.responses.create(
            model="kimi",
            instructions="Be brief.",
            input=[{"role": "user", "content": "Hi"}],
            max_output_tokens=64,
        )
        assert response.output_text
    async with anthropic.AsyncAnthropic(base_url=url, api_key="k", max_retries=0) as an:
        message = await an.messages.create(
            model="kimi",
            max_tokens=64,
            system="Be brief.",
            messages=[{"role": "user", "content": [{"type": "text", "text": "Hi"}]}],
            stop_sequences=["END"],
            tools=[{"name": "weather", "input_schema": tool}],
        )
        assert message.content[0].type == "text"
    client = genai.Client(
        api_key="k", http_options=genai_types.HttpOptions(base_url=url, api_version="v1beta")
    )
    config = genai_types.GenerateContentConfig(
        system_instruction="Be brief.", max_output_tokens=64, temperature=0.2
    )
    try:
        answer = await client.aio.models.generate_content(model="kimi", contents="Hi", config=config)
    finally:
        await client.aio.aclose()
    assert answer.text
    schemas = {
        "/v1/chat/completions": ("post", "/v1/chat/completions"),
        "/v1/responses": ("post", "/v1/responses"),
        "/v1/messages": ("post", "/v1/messages"),
        "/v1beta/models/kimi:generateContent": ("post", "/v1beta/models/{model}:generateContent"),
    }
    assert set(rec.bodies) == set(schemas)
    for sent, (method, path) in schemas.items():
        check(spec, request_schema(spec, method, path), rec.bodies[sent])


# ---------------------------------------------------------------- the gateway's real answers


def sse_payloads(text: str) -> list[Any]:
    """The JSON of each `data:` line of an SSE body (`[DONE]` kept as a string)."""
    out = []
    for line in text.splitlines():
        if line.startswith("data: "):
            data = line[6:]
            out.append(data if data == "[DONE]" else json.loads(data))
    return out


@pytest_asyncio.fixture
async def live(stack_factory: StackFactory) -> AsyncIterator[tuple[Stack, aiohttp.ClientSession]]:
    stack = await stack_factory()
    await stack.add("kimi_auth")
    async with aiohttp.ClientSession(base_url=stack.url) as session:
        yield stack, session


async def _exchange(
    session: aiohttp.ClientSession, method: str, url: str, body: Any = None, **headers: str
) -> tuple[int, str, str]:
    async with session.request(method, url, json=body, headers=headers) as response:
        return response.status, response.content_type, await response.text()


async def test_real_answers_validate_against_the_response_schemas(
    spec: Spec, live: tuple[Stack, aiohttp.ClientSession]
) -> None:
    """Non-stream bodies and every stream event of each dialect, model lists, stored responses, counts and
    admin answers, as the gateway really writes them, match the documented schemas."""
    _, session = live
    hi = [{"role": "user", "content": "hi"}]
    gemini_body = {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}
    cases: list[tuple[str, str, Any, str, str]] = [
        (
            "POST",
            "/v1/chat/completions",
            {"model": "kimi", "messages": hi},
            "/v1/chat/completions",
            "application/json",
        ),
        (
            "POST",
            "/v1/chat/completions",
            {
                "model": "kimi-k2.5-thinking",
                "messages": hi,
                "stream": True,
                "stream_options": {"include_usage": True},
            },
            "/v1/chat/completions",
            "text/event-stream",
        ),
        (
            "POST",
            "/v1/messages",
            {"model": "kimi", "max_tokens": 256, "messages": hi},
            "/v1/messages",
            "application/json",
        ),
        (
            "POST",
            "/v1/messages",
            {"model": "kimi-k2.5-thinking", "max_tokens": 256, "messages": hi, "stream": True},
            "/v1/messages",
            "text/event-stream",
        ),
        (
            "POST",
            "/v1/messages/count_tokens",
            {"model": "kimi", "messages": hi},
            "/v1/messages/count_tokens",
            "application/json",
        ),
        (
            "POST",
            "/v1beta/models/kimi:generateContent",
            gemini_body,
            "/v1beta/models/{model}:generateContent",
            "application/json",
        ),
        (
            "POST",
            "/v1/models/kimi:streamGenerateContent?alt=sse",
            gemini_body,
            "/v1/models/{model}:streamGenerateContent",
            "text/event-stream",
        ),
        (
            "POST",
            "/v1beta/models/kimi:streamGenerateContent",
            gemini_body,
            "/v1beta/models/{model}:streamGenerateContent",
            "application/json",
        ),
        (
            "POST",
            "/v1beta/models/kimi:countTokens",
            gemini_body,
            "/v1beta/models/{model}:countTokens",
            "application/json",
        ),
        (
            "POST",
            "/v1/responses",
            {"model": "kimi-k2.5-thinking", "input": "hi", "stream": True},
            "/v1/responses",
            "text/event-stream",
        ),
        ("GET", "/v1/models", None, "/v1/models", "application/json"),
        ("GET", "/v1/models/kimi-search", None, "/v1/models/{model}", "application/json"),
        ("GET", "/v1beta/models", None, "/v1beta/models", "application/json"),
        ("GET", "/v1beta/models/kimi", None, "/v1beta/models/{model}", "application/json"),
        ("GET", "/healthz", None, "/healthz", "application/json"),
        ("GET", "/readyz", None, "/readyz", "application/json"),
        ("GET", "/admin/accounts", None, "/admin/accounts", "application/json"),
        ("GET", "/auth/status", None, "/auth/status", "application/json"),
    ]
    for method, url, body, path, content in cases:
        status, content_type, text = await _exchange(session, method, url, body)
        assert (status, content_type) == (200, content), f"{url}: {text[:300]}"
        schema = answer_schema(spec, method.lower(), path, "200", content)
        payloads = sse_payloads(text) if content == "text/event-stream" else [json.loads(text)]
        assert payloads
        for payload in payloads:
            check(spec, schema, payload)
    status, _, text = await _exchange(session, "POST", "/v1/responses", {"model": "kimi", "input": "hi"})
    response_id = json.loads(text)["id"]
    check(spec, answer_schema(spec, "post", "/v1/responses"), json.loads(text))
    stored = [
        ("GET", f"/v1/responses/{response_id}", "/v1/responses/{response_id}"),
        ("GET", f"/v1/responses/{response_id}/input_items", "/v1/responses/{response_id}/input_items"),
        ("DELETE", f"/v1/responses/{response_id}", "/v1/responses/{response_id}"),
    ]
    for method, url, path in stored:
        status, _, text = await _exchange(session, method, url)
        assert status == 200, text
        check(spec, answer_schema(spec, method.lower(), path), json.loads(text))
    status, _, text = await _exchange(
        session, "POST", "/admin/keys", {"name": "docs", "requests_per_minute": 5}
    )
    assert status == 201
    check(spec, answer_schema(spec, "post", "/admin/keys", "201"), json.loads(text))


@pytest.mark.parametrize(
    ("method", "url", "body", "path", "status", "headers"),
    [
        (
            "POST",
            "/v1/chat/completions",
            {"model": "gpt-x", "messages": [{"role": "user", "content": "hi"}]},
            "/v1/chat/completions",
            "404",
            {},
        ),
        ("POST", "/v1/messages", {"model": "kimi"}, "/v1/messages", "400", {}),
        (
            "POST",
            "/v1beta/models/nope:generateContent",
            {"contents": []},
            "/v1beta/models/{model}:generateContent",
            "404",
            {},
        ),
        ("GET", "/v1/models/nope", None, "/v1/models/{model}", "404", {"x-goog-api-key": "k"}),
        ("GET", "/v1/responses/resp_missing", None, "/v1/responses/{response_id}", "404", {}),
        ("DELETE", "/admin/accounts/nope", None, "/admin/accounts/{account_id}", "404", {}),
        ("POST", "/admin/keys", {"name": ""}, "/admin/keys", "400", {}),
    ],
)
async def test_real_errors_validate_against_the_error_schemas(
    spec: Spec,
    live: tuple[Stack, aiohttp.ClientSession],
    method: str,
    url: str,
    body: Any,
    path: str,
    status: str,
    headers: dict[str, str],
) -> None:
    """An error of each dialect (OpenAI, Anthropic, Gemini, Gemini on /v1, Responses, admin) matches the schema
    the document attaches to that status."""
    got, _, text = await _exchange(live[1], method, url, body, **headers)
    assert str(got) == status, text
    check(spec, answer_schema(spec, method.lower(), path, status), json.loads(text))
