"""Routing between web accounts and API keys: the pool's kinds filter, the policy and its per-model overrides,
and a real worker that fails over from a cooling web account to a key (upstream_worker/routing.py)."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator

import aiohttp
import pytest
import redis.asyncio as aioredis

from kimi_sim.answers import answer_for
from kimi_sim.server import SimServer
from shared import keys
from shared.errors import RateLimited, ServiceUnavailable
from shared.models import resolve_model
from shared.schema import ErrorEvent, Start, Usage
from shared.settings import PoolSettings, WorkerSettings
from tests.test_worker_api_keys import add_key, run_worker
from tests.test_worker_support import (
    add_accounts,
    chat_request,
    enqueue,
    reply_events,
    text_of,
)
from token_service.accounts import Accounts
from upstream_worker import metrics
from upstream_worker.answer import Answer, Attempt
from upstream_worker.kimi.call import Creds, UpstreamCall
from upstream_worker.publisher import ReplyPublisher
from upstream_worker.routing import Route, policy_for, route_for

WEB = frozenset({"kimi_auth", "refresh_token"})
KEYS = frozenset({"api_key"})


@pytest.fixture
async def pool(redis: aioredis.Redis, kimi_sim: SimServer) -> AsyncIterator[Accounts]:
    async with aiohttp.ClientSession() as session:
        yield Accounts(redis, PoolSettings(), session, kimi_sim.url)


async def test_a_lease_takes_only_accounts_of_the_kinds_asked(
    redis: aioredis.Redis, kimi_sim: SimServer, pool: Accounts
) -> None:
    """`kinds` walks past other kinds: keys for KEYS, web accounts for WEB, and busy / cooling / none per kind."""
    [web] = await add_accounts(redis, kimi_sim, 1)
    key = await add_key(redis, kimi_sim)
    first = await pool.lease(kinds=KEYS)
    assert (first.account_id, first.kind) == (key, "api_key")
    with pytest.raises(RateLimited) as busy:  # the one key is at its cap of 1; the free web account is no key
        await pool.lease(kinds=KEYS)
    assert busy.value.message == "every Kimi account is busy"
    second = await pool.lease(kinds=WEB)
    assert (second.account_id, second.kind) == (web, "kimi_auth")
    await pool.release(first, "rate_limited", retry_after_s=30)
    with pytest.raises(RateLimited) as cooling:
        await pool.lease(kinds=KEYS)
    assert 29 <= (cooling.value.retry_after_s or 0) <= 30
    with pytest.raises(RateLimited):  # `only` names the key, which is cooling; the web account is not asked
        await pool.lease(only={key, web}, kinds=KEYS)
    await pool.release(second, "ok")
    assert (await pool.lease(only={key, web}, kinds=WEB)).account_id == web
    with pytest.raises(ServiceUnavailable):
        await pool.lease(kinds=frozenset({"refresh_token"}))


def settings(**overrides: object) -> WorkerSettings:
    return dataclasses.replace(WorkerSettings(), **overrides)  # type: ignore[arg-type]


def spec(model: str):  # type: ignore[no-untyped-def]
    found = resolve_model(model)
    assert found is not None
    return found


def test_the_policy_is_global_unless_a_model_pattern_matches() -> None:
    """UPSTREAM_POLICY_MODELS patterns match the resolved id, first match wins; others take UPSTREAM_POLICY."""
    chosen = settings(
        upstream_policy="web_only",
        upstream_policy_models=("moonshot-v1-*=keys_first", "moonshot-v1-8k=web_only", "kimi-k3=keys_only"),
    )
    assert [policy_for(m, chosen) for m in ("moonshot-v1-8k", "kimi-k3", "kimi-k3-low", "kimi")] == [
        "keys_first",
        "keys_only",
        "web_only",
        "web_only",
    ]


@pytest.mark.parametrize(
    ("model", "policy", "tiers"),
    [
        ("kimi-k3", "web_first", (("kimi_web", WEB), ("api_key", KEYS))),
        ("kimi-k3", "keys_first", (("api_key", KEYS), ("kimi_web", WEB))),
        ("kimi-k3", "web_only", (("kimi_web", WEB),)),
        ("kimi-k3", "keys_only", (("api_key", KEYS),)),
        ("kimi-k2.7-code", "web_first", (("api_key", KEYS),)),
        ("kimi-search", "keys_first", (("kimi_web", WEB),)),
    ],
)
def test_a_route_orders_the_upstreams_that_serve_the_model(model: str, policy: str, tiers: object) -> None:
    """The route lists the policy's upstreams that serve the model, each with its kinds, skipping the rest."""
    assert route_for(spec(model), settings(upstream_policy=policy)) == Route(model, policy, tiers)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("model", "policy", "message"),
    [
        (
            "kimi-k2.7-code",
            "web_only",
            "the model 'kimi-k2.7-code' is served by api_key only, which the upstream policy web_only excludes",
        ),
        (
            "kimi-search",
            "keys_only",
            "the model 'kimi-search' is served by kimi_web only, which the upstream policy keys_only excludes",
        ),
    ],
)
def test_a_policy_that_leaves_no_upstream_is_a_clear_503(model: str, policy: str, message: str) -> None:
    """A model no allowed upstream serves is a 503 naming the model, who serves it and the policy."""
    with pytest.raises(ServiceUnavailable) as caught:
        route_for(spec(model), settings(upstream_policy=policy))
    assert (caught.value.message, caught.value.status) == (message, 503)


def served(kind: str, model: str) -> float:
    return metrics.REQUESTS_BY_KIND.labels(kind, model)._value.get()


async def test_web_first_serves_from_the_web_then_a_key_when_the_web_account_cools(
    redis: aioredis.Redis, redis_url: str, kimi_sim: SimServer, pool: Accounts
) -> None:
    """web_first: the web account answers; once it cools, the key answers; Start and the metric name the kind."""
    [web] = await add_accounts(redis, kimi_sim, 1)
    key = await add_key(redis, kimi_sim)
    before = (served("kimi_web", "kimi-k2.6"), served("api_key", "kimi-k2.6"))
    first = await enqueue(redis, chat_request("first", model="kimi-k2.6"))
    await run_worker(redis_url, kimi_sim)
    await pool.cool(web, "rate_limited", 60)
    second = await enqueue(redis, chat_request("second", model="kimi-k2.6"))
    await run_worker(redis_url, kimi_sim)
    starts = [
        next(e for e in await reply_events(redis, job) if isinstance(e, Start)) for job in (first, second)
    ]
    assert [(s.account_id, s.kind) for s in starts] == [(web, "kimi_web"), (key, "api_key")]
    assert (served("kimi_web", "kimi-k2.6"), served("api_key", "kimi-k2.6")) == (before[0] + 1, before[1] + 1)


async def test_a_web_429_fails_over_to_the_key_before_the_first_byte(
    redis: aioredis.Redis, redis_url: str, kimi_sim: SimServer, pool: Accounts
) -> None:
    """A web account refused with 429 cools and gives way to the key in the same job, which says the key served."""
    [web] = await add_accounts(redis, kimi_sim, 1)
    key = await add_key(redis, kimi_sim)
    kimi_sim.state.faults.arm("http_429", path="/apiv2/")
    job = await enqueue(redis, chat_request("fail over", model="kimi-k2.6"))
    await run_worker(redis_url, kimi_sim)
    events = await reply_events(redis, job)
    assert [(e.account_id, e.kind) for e in events if isinstance(e, Start)] == [(key, "api_key")]
    assert (await pool.get(web)).state == "cooling"
    assert text_of(events) == answer_for("fail over")
    assert [u.estimated for u in events if isinstance(u, Usage)] == [False]


@pytest.mark.parametrize(
    ("policy", "kind"), [("keys_only", "api_key"), ("web_only", "kimi_web"), ("keys_first", "api_key")]
)
async def test_the_policy_decides_who_serves_a_mixed_pool(
    redis: aioredis.Redis, redis_url: str, kimi_sim: SimServer, policy: str, kind: str
) -> None:
    """With a free web account and a free key, keys_only and keys_first take the key, web_only the web account."""
    await add_accounts(redis, kimi_sim, 1)
    await add_key(redis, kimi_sim)
    job = await enqueue(redis, chat_request("who serves", model="kimi-k2.6"))
    await run_worker(redis_url, kimi_sim, upstream_policy=policy)
    start = next(e for e in await reply_events(redis, job) if isinstance(e, Start))
    assert start.kind == kind


async def test_an_api_only_model_with_only_web_accounts_is_a_clear_503(
    redis: aioredis.Redis, redis_url: str, kimi_sim: SimServer
) -> None:
    """kimi-k2.7-code with web accounts only ends with a 503 saying it needs an API key; no web call is made."""
    await add_accounts(redis, kimi_sim, 1, kind="refresh_token")
    job = await enqueue(redis, chat_request("code", model="kimi-k2.7-code"))
    await run_worker(redis_url, kimi_sim)
    [error] = [e for e in await reply_events(redis, job) if isinstance(e, ErrorEvent)]
    assert (error.kind, error.status, error.message) == (
        "unavailable",
        503,
        "no usable api_key account serves the model 'kimi-k2.7-code': add one with POST /auth/save "
        '{"token": "<kimi-auth, refresh_token or sk-… API key>"}',
    )
    assert [r for r in kimi_sim.state.requests if "/chat" in r.path] == []


async def test_an_attempt_on_another_kind_sends_start_again_naming_it(redis: aioredis.Redis) -> None:
    """A web attempt accepted then failed before content, retried on a key: a second Start names the key's kind;
    a retry on the same kind sends none."""
    publisher = ReplyPublisher(redis, keys.reply_key("kinds-1"))
    answer = Answer(publisher)
    request = chat_request("x", model="kimi-k2.6")
    for account_id, kind in (("web1", "kimi_auth"), ("web2", "refresh_token"), ("key1", "api_key")):
        answer.begin()
        call = UpstreamCall(request, spec("kimi-k2.6"), Creds(account_id, kind, "secret"))
        answer.attempt = Attempt(call, "connect", None, False)
        answer.take(Start())
    await publisher.aclose()
    assert [e for e in await reply_events(redis, "kinds-1") if isinstance(e, Start)] == [
        Start(account_id="web1", kind="kimi_web"),
        Start(account_id="key1", kind="api_key"),
    ]


def test_the_policy_settings_are_read_and_checked_from_the_environment() -> None:
    """UPSTREAM_POLICY and UPSTREAM_POLICY_MODELS parse from the environment; an unknown policy is refused."""
    loaded = WorkerSettings.from_env(
        {
            "UPSTREAM_POLICY": "Keys_First",
            "UPSTREAM_POLICY_MODELS": " moonshot-v1-* = web_only ,kimi-k3=keys_only",
        }
    )
    assert (loaded.upstream_policy, loaded.upstream_policy_models) == (
        "keys_first",
        ("moonshot-v1-*=web_only", "kimi-k3=keys_only"),
    )
    assert WorkerSettings.from_env({}).upstream_policy == "web_first"
    with pytest.raises(ValueError) as unknown:
        WorkerSettings.from_env({"UPSTREAM_POLICY": "cheapest"})
    assert str(unknown.value) == (
        "UPSTREAM_POLICY must be one of web_first, keys_first, web_only, keys_only, got 'cheapest'"
    )
    with pytest.raises(ValueError) as malformed:
        WorkerSettings.from_env({"UPSTREAM_POLICY_MODELS": "kimi-k3"})
    assert str(malformed.value) == "UPSTREAM_POLICY_MODELS entries read MODEL_PATTERN=POLICY, got 'kimi-k3'"
