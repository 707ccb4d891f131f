"""What a job's end means: the account's release outcome follows the failure's type; a driver's Usage wins."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import aiohttp
import pytest
import redis.asyncio as aioredis

from kimi_sim.answers import answer_for
from kimi_sim.server import SimServer
from shared.errors import (
    BadRequest,
    ContentFiltered,
    NotFound,
    UpstreamAuthError,
    UpstreamError,
    UpstreamOverloaded,
    UpstreamPlanRequired,
    UpstreamProtocolError,
    UpstreamQuotaExhausted,
    UpstreamRateLimited,
    UpstreamStreamBusy,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from shared.schema import Done, Event, Start, Usage
from shared.settings import PoolSettings, WorkerSettings
from tests.test_worker_support import (
    add_accounts,
    chat_request,
    enqueue,
    reply_events,
    run_burst,
    text_of,
    worker_settings,
)
from token_service.accounts import Accounts
from token_service.client import ReleaseOutcome
from token_service.store import Account
from upstream_worker.drivers import DRIVERS, Driver
from upstream_worker.job import JobOutcome
from upstream_worker.kimi.call import UpstreamCall
from upstream_worker.resources import open_worker
from upstream_worker.retries import release_outcome

CHAT_PATH = "/apiv2/kimi.gateway.chat.v1.ChatService/Chat"
#: Distinct cooldowns, so that an account's cooling time says which outcome released it.
POOL = PoolSettings(max_concurrency_per_account=8, lease_ttl_s=30, cooldown_429_s=111, quota_window_s=2222)


@pytest.mark.parametrize(
    ("failure", "outcome"),
    [
        (None, "ok"),
        (BadRequest("x"), "ok"),
        (NotFound("x"), "ok"),
        (ContentFiltered("x"), "ok"),
        (asyncio.CancelledError(), "cancelled"),
        (UpstreamStreamBusy("x"), "cancelled"),
        (UpstreamPlanRequired("x"), "cancelled"),
        (UpstreamQuotaExhausted("x"), "quota"),
        (UpstreamRateLimited("your quota is used up"), "rate_limited"),
        (UpstreamOverloaded("x"), "overloaded"),
        (UpstreamAuthError("x"), "auth_failed"),
        (UpstreamUnavailable("x"), "upstream_error"),
        (UpstreamTimeout("x"), "upstream_error"),
        (UpstreamProtocolError("x"), "upstream_error"),
        (UpstreamError("x", status=402), "upstream_error"),
        (RuntimeError("a bug"), "upstream_error"),
    ],
)
def test_release_outcome_follows_the_failure_type(
    failure: BaseException | None, outcome: ReleaseOutcome
) -> None:
    """Each failure type releases the account with one outcome; the message text never matters."""
    assert release_outcome(failure) == outcome


def test_job_outcomes_are_the_metric_labels() -> None:
    """The job outcomes are exactly the label values of kimi_worker_jobs_total{outcome}."""
    assert [o.value for o in JobOutcome] == [
        "ok",
        "error",
        "timeout",
        "cancelled",
        "abandoned",
        "dead_letter",
    ]


async def _account(redis, sim: SimServer, account_id: str) -> Account:
    async with aiohttp.ClientSession() as session:
        account = await Accounts(redis, POOL, session, sim.url).get(account_id)
    assert account is not None
    return account


@pytest.mark.parametrize(
    ("fault", "counter", "cooling_s"),
    [("quota_exhausted", "quota", POOL.quota_window_s), ("http_429", "rate_limited", POOL.cooldown_429_s)],
)
async def test_quota_cools_for_its_window_a_429_for_its_moment(
    redis, redis_url: str, kimi_sim: SimServer, fault: str, counter: str, cooling_s: int
) -> None:
    """A used-up quota cools the account for quota_window_s, a 429 for cooldown_429_s; both fail over."""
    ids = await add_accounts(redis, kimi_sim, 2)
    kimi_sim.state.faults.arm(fault, count=1, path=CHAT_PATH)
    job_id = await enqueue(redis, chat_request("limits"))
    before_ms = time.time() * 1000
    await run_burst(redis_url, kimi_sim.url, pool=POOL)
    events = await reply_events(redis, job_id)
    assert isinstance(events[-1], Done) and text_of(events) == answer_for("limits")
    assert isinstance(events[0], Start)
    [refused] = set(ids) - {events[0].account_id}
    account = await _account(redis, kimi_sim, refused)
    assert account.state == "cooling"
    assert account.counters.get(counter) == 1
    assert before_ms + cooling_s * 1000 <= account.cooling_until_ms <= time.time() * 1000 + cooling_s * 1000


#: What the driver below reports: real counts, unlike the estimate.
REPORTED = Usage(prompt_tokens=7, completion_tokens=11, estimated=False)


class _UsageReporting:
    """The Connect driver, reporting its own usage before Done as an upstream with real counts does."""

    def __init__(self, inner: Driver) -> None:
        self._inner = inner

    async def chat(self, call: UpstreamCall) -> AsyncIterator[Event]:
        async for event in self._inner.chat(call):
            if isinstance(event, Done):
                yield REPORTED
            yield event

    async def cleanup(self, call: UpstreamCall) -> bool:
        return await self._inner.cleanup(call)


def _reporting(session: aiohttp.ClientSession, settings: WorkerSettings, redis: aioredis.Redis) -> Driver:
    return _UsageReporting(DRIVERS["connect"](session, settings, redis))


async def test_drivers_own_usage_goes_out_unchanged(redis, redis_url: str, kimi_sim: SimServer) -> None:
    """A driver's Usage(estimated=False) is the reply's one Usage, right before Done; no estimate follows."""
    await add_accounts(redis, kimi_sim, 1)
    job_id = await enqueue(redis, chat_request("count me"))
    settings = worker_settings(redis_url, kimi_sim.url)
    async with open_worker(settings, drivers={**DRIVERS, "connect": _reporting}) as worker:
        await worker.run(burst=True)
    events = await reply_events(redis, job_id)
    assert [e for e in events if isinstance(e, Usage)] == [REPORTED]
    assert events[-2] == REPORTED and isinstance(events[-1], Done)
    assert text_of(events) == answer_for("count me")
