"""shared.metrics (Redis timing, /metrics handler) and the metric names the dashboard and alerts read."""

from __future__ import annotations

import asyncio
import json
import re
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
import redis.asyncio as aioredis
import yaml
from aiohttp import web
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.metrics import MetricWrapperBase
from pytest_aiohttp import AiohttpClient
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from shared import metrics as shared_metrics
from shared.metrics import instrument_redis, metrics_handler
from shared.redis_client import PoolExhausted, make_redis
from shared.settings import CommonSettings

ROOT = Path(__file__).resolve().parent.parent
ALERTS = ROOT / "deploy" / "alerts.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "kimi-gateway.json"
#: Series Prometheus makes itself, not read from any service.
PROMETHEUS_OWN = {"up"}
SERVICE_METRICS_MODULES = ("gateway.metrics", "upstream_worker.metrics", "token_service.metrics")


def _count(service: str, command: str) -> float:
    labels = {"service": service, "command": command}
    return REGISTRY.get_sample_value("kimi_redis_command_duration_seconds_count", labels) or 0.0


def _errors(service: str) -> float:
    return REGISTRY.get_sample_value("kimi_redis_errors_total", {"service": service}) or 0.0


@pytest.fixture
def service() -> str:
    """A service label of this test alone, so counts start at zero."""
    return f"test-{uuid.uuid4().hex[:8]}"


async def test_instrumented_client_times_each_command_under_its_service(redis_url: str, service: str) -> None:
    """Every command of an instrumented client adds one observation labelled with its service and command."""
    client = instrument_redis(aioredis.Redis.from_url(redis_url), service)
    await client.set("k", "v")
    await client.set("k", "w")
    assert await client.get("k") == b"w"
    await client.aclose()
    assert (_count(service, "SET"), _count(service, "GET"), _errors(service)) == (2.0, 1.0, 0.0)


async def test_pipelines_are_timed_as_one_batch(redis_url: str, service: str) -> None:
    """A pipeline counts once, as PIPELINE or MULTI, and its queued commands do not count one by one."""
    client = instrument_redis(aioredis.Redis.from_url(redis_url), service)
    pipe = client.pipeline(transaction=False)
    pipe.set("a", 1)
    pipe.get("a")
    assert await pipe.execute() == [True, b"1"]
    async with client.pipeline() as tx:
        tx.incr("a")
        assert await tx.execute() == [2]
    await client.aclose()
    assert (_count(service, "PIPELINE"), _count(service, "MULTI"), _count(service, "SET")) == (1.0, 1.0, 0.0)


async def test_error_replies_are_timed_but_not_counted_as_errors(redis_url: str, service: str) -> None:
    """BUSYGROUP and NOSCRIPT are answers the code handles: timed, not counted in kimi_redis_errors_total."""
    client = instrument_redis(aioredis.Redis.from_url(redis_url), service)
    await client.xgroup_create("s", "g", id="0", mkstream=True)
    with pytest.raises(ResponseError, match="BUSYGROUP"):
        await client.xgroup_create("s", "g", id="0", mkstream=True)
    script = client.register_script(f"return 1 -- {service}")
    assert await script() == 1
    await client.aclose()
    assert _count(service, "XGROUP CREATE") == 2.0
    assert (_count(service, "EVALSHA"), _count(service, "SCRIPT LOAD")) == (2.0, 1.0)
    assert _errors(service) == 0.0


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_unreachable_redis_counts_one_error_per_failed_command(service: str) -> None:
    """A command that cannot reach Redis counts one error for its service and is still timed."""
    url = f"redis://127.0.0.1:{_closed_port()}/0"
    client = instrument_redis(aioredis.Redis.from_url(url, retry=Retry(NoBackoff(), 0)), service)
    with pytest.raises(RedisConnectionError):
        await client.ping()
    await client.aclose()
    assert (_errors(service), _count(service, "PING")) == (1.0, 1.0)


async def test_metrics_handler_serves_the_exposition(aiohttp_client: AiohttpClient) -> None:
    """GET /metrics answers the Prometheus text format with the shared Redis metrics in it."""
    app = web.Application()
    app.router.add_get("/metrics", metrics_handler)
    client = await aiohttp_client(app)
    response = await client.get("/metrics")
    body = await response.text()
    assert response.status == 200
    assert response.content_type == "text/plain"
    assert "# TYPE kimi_redis_command_duration_seconds histogram" in body
    assert "# TYPE kimi_redis_errors_total counter" in body


# --- every name the dashboard and the alert rules read is exposed by some service --------------------------

_SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("", "_sum", "_count", "_created"),
    "gauge": ("",),
}


def _exposition(module: ModuleType) -> str:
    """The text a registry holding only `module`'s metrics exposes."""
    registry = CollectorRegistry(auto_describe=True)
    for value in vars(module).values():
        if isinstance(value, MetricWrapperBase):
            registry.register(value)
    return generate_latest(registry).decode()


def _series_names(exposition: str) -> set[str]:
    """Sample names a query can select, from the TYPE lines (labelled metrics may have no sample yet)."""
    names: set[str] = set()
    for match in re.finditer(r"^# TYPE (\S+) (\S+)$", exposition, re.MULTILINE):
        family, kind = match.groups()
        base = family.removesuffix("_total") if kind == "counter" else family
        names.update(base + suffix for suffix in _SUFFIXES.get(kind, ("",)))
    return names


@pytest.fixture(scope="module")
def exposed() -> set[str]:
    import importlib

    modules = [shared_metrics, *(importlib.import_module(name) for name in SERVICE_METRICS_MODULES)]
    return set().union(*(_series_names(_exposition(module)) for module in modules))


_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_MATCHERS = re.compile(r"\{[^}]*\}")
_RANGE = re.compile(r"\[[^\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_IDENT = re.compile(r"(?<![\w:.$])([a-zA-Z_:][\w:]*)\b(?!\s*\()")
_OPERATORS = {"and", "or", "unless", "bool", "offset", "inf", "nan"}
_KEYWORDS = _OPERATORS | {"by", "without", "on", "ignoring", "group_left", "group_right"}


def promql_metric_names(expr: str) -> set[str]:
    """Metric names a PromQL expression selects: identifiers that are not functions, labels or keywords."""
    for pattern in (_STRING, _MATCHERS, _RANGE, _GROUPING):
        expr = pattern.sub(" ", expr)
    return {name for name in _IDENT.findall(expr) if name.lower() not in _KEYWORDS}


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        (
            'sum by (le, dialect) (rate(kimi_a_bucket{status=~"5.."}[$__rate_interval]))',
            {"kimi_a_bucket"},
        ),
        ("time() - kimi_b > 60 and on() kimi_c offset 5m", {"kimi_b", "kimi_c"}),
        ('absent(up{job="w"} == 1) or vector(0)', {"up"}),
        ("max(kimi_d) by (state) / ignoring(x) group_left kimi_e < 3 * 86400", {"kimi_d", "kimi_e"}),
    ],
)
def test_promql_metric_names(expr: str, names: set[str]) -> None:
    """The name extractor keeps metric names and drops functions, labels, ranges, keywords and numbers."""
    assert promql_metric_names(expr) == names


def _alert_exprs() -> Iterator[tuple[str, str]]:
    for group in yaml.safe_load(ALERTS.read_text())["groups"]:
        for rule in group["rules"]:
            yield rule.get("alert") or rule["record"], rule["expr"]


def _dashboard_exprs() -> Iterator[tuple[str, str]]:
    for panel in json.loads(DASHBOARD.read_text())["panels"]:
        for target in panel.get("targets", []):
            yield panel["title"], target["expr"]


def test_every_alert_reads_metrics_that_services_expose(exposed: set[str]) -> None:
    """Each alert rule selects only series some service exposes (or Prometheus' own `up`)."""
    unknown = {
        name: [alert for alert, expr in _alert_exprs() if name in promql_metric_names(expr)]
        for _, expr in _alert_exprs()
        for name in promql_metric_names(expr) - exposed - PROMETHEUS_OWN
    }
    assert unknown == {}
    assert len(list(_alert_exprs())) >= 6


def test_every_dashboard_query_reads_metrics_that_services_expose(exposed: set[str]) -> None:
    """Each dashboard query selects only series some service exposes (or Prometheus' own `up`)."""
    unknown = {
        name: [title for title, expr in _dashboard_exprs() if name in promql_metric_names(expr)]
        for _, expr in _dashboard_exprs()
        for name in promql_metric_names(expr) - exposed - PROMETHEUS_OWN
    }
    assert unknown == {}
    assert all(promql_metric_names(expr) for _, expr in _dashboard_exprs())


async def test_an_exhausted_pool_is_not_counted_as_a_redis_error(redis_url: str) -> None:
    """A command that finds no free pooled connection (overload in this process) is not a Redis failure:
    `kimi_redis_errors_total` stays, so the "Redis unreachable" alert does not fire on a burst."""
    settings = CommonSettings(redis_url=redis_url, redis_pool_wait_s=0.05)
    client = instrument_redis(make_redis(settings, max_connections=1), "test-pool")
    labels = {"service": "test-pool"}
    before = REGISTRY.get_sample_value("kimi_redis_errors_total", labels) or 0.0
    blocking = asyncio.create_task(client.blpop(["test:nothing"], timeout=1))
    await asyncio.sleep(0.1)  # the one connection is busy in BLPOP
    with pytest.raises(PoolExhausted):
        await client.ping()
    assert (REGISTRY.get_sample_value("kimi_redis_errors_total", labels) or 0.0) == before
    await blocking
    await client.aclose()
