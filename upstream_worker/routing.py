"""Which accounts may serve a job, and in which order: web accounts, API keys, or both (README "Routing").

The model table says which protocols serve an id (`shared.models.ModelSpec.protocols`), the kinds registry
which kinds of account speak them (`token_service.client.kinds_serving`): a web account serves ids with a web
lane, an API key ids with an `api` row. The policy orders the two public upstreams, `kimi_web` and `api_key`:

    web_first    web accounts; a key when no web account is free or healthy (the default)
    keys_first   keys; a web account when no key is
    web_only     web accounts only
    keys_only    keys only

`UPSTREAM_POLICY` sets it for every model, `UPSTREAM_POLICY_MODELS` per model (`pattern=policy`, shell-style
patterns on the resolved id, first match wins). `lease` tries each upstream in order without waiting, then the
whole set with the job's wait, so an account of the first upstream that is busy, cooling or missing gives way
at once to the next; a failover before the first content leases again through the same order, so it crosses
kinds too. A model that no allowed kind can serve ends the job with a 503 that says why, before any lease.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from fnmatch import fnmatchcase

from shared.errors import RateLimited, ServiceUnavailable
from shared.models import ModelSpec
from shared.settings import WorkerSettings
from token_service.client import AccountPool, Lease, Ticket, Upstream, kinds_serving, upstream_of
from upstream_worker import metrics

#: Each policy's upstreams, in the order they are asked.
ORDER: dict[str, tuple[Upstream, ...]] = {
    "web_first": ("kimi_web", "api_key"),
    "keys_first": ("api_key", "kimi_web"),
    "web_only": ("kimi_web",),
    "keys_only": ("api_key",),
}


@dataclass(frozen=True, slots=True)
class Route:
    """A model's upstreams in the policy's order, each with the kinds of account that serve the model there."""

    model: str
    policy: str
    tiers: tuple[tuple[Upstream, frozenset[str]], ...]

    @property
    def kinds(self) -> frozenset[str]:
        return frozenset().union(*(kinds for _, kinds in self.tiers))

    @property
    def line(self) -> str:
        """The pool's waiting line of this route's jobs: one per set of kinds, so none waits behind a job
        that needs accounts it could not use."""
        return ",".join(sorted(self.kinds))


def policy_for(model_id: str, settings: WorkerSettings) -> str:
    """The policy of a model: the first `UPSTREAM_POLICY_MODELS` pattern it matches, else `UPSTREAM_POLICY`."""
    for entry in settings.upstream_policy_models:
        pattern, _, policy = entry.partition("=")
        if fnmatchcase(model_id, pattern):
            return policy
    return settings.upstream_policy


def route_for(spec: ModelSpec, settings: WorkerSettings) -> Route:
    """The model's route; ServiceUnavailable when the policy leaves no upstream that serves it."""
    policy = policy_for(spec.id, settings)
    serving = kinds_serving(spec)
    tiers = tuple((upstream, serving[upstream]) for upstream in ORDER[policy] if serving[upstream])
    if not tiers:
        served_by = " or ".join(upstream for upstream, kinds in serving.items() if kinds) or "no account"
        raise ServiceUnavailable(
            f"the model {spec.id!r} is served by {served_by} only, which the upstream policy {policy} excludes"
        )
    return Route(spec.id, policy, tiers)


async def lease(
    pool: AccountPool,
    route: Route,
    *,
    exclude: set[str],
    only: set[str] | None,
    wait_s: float,
    ticket: Ticket | None = None,
    stop: asyncio.Event | None = None,
) -> Lease:
    """An account of the route's first upstream that has one free, else wait (up to `wait_s`) for any; a
    `ticket` (its line: the route's kinds) keeps the job's place in the waiting line through every tier."""
    for _, kinds in route.tiers[:-1]:
        try:
            return await pool.lease(exclude=exclude, only=only, kinds=kinds, wait_s=0.0, ticket=ticket)
        except (RateLimited, ServiceUnavailable):
            continue
    try:
        return await pool.lease(
            exclude=exclude, only=only, kinds=route.kinds, wait_s=wait_s, ticket=ticket, stop=stop
        )
    except ServiceUnavailable:
        raise _no_account(route) from None


def count_served(kind: str, spec: ModelSpec) -> None:
    """One answer served by an account of this kind (`kimi_worker_requests_by_kind_total`)."""
    upstream = upstream_of(kind)
    if upstream is not None:
        metrics.REQUESTS_BY_KIND.labels(upstream, spec.label).inc()


def _no_account(route: Route) -> ServiceUnavailable:
    upstreams = " or ".join(upstream for upstream, _ in route.tiers)
    how = 'POST /auth/save {"token": "<kimi-auth, refresh_token or sk-… API key>"}'
    return ServiceUnavailable(
        f"no usable {upstreams} account serves the model {route.model!r}: add one with {how}"
    )
