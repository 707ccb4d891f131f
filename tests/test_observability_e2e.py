"""Issue 6, end to end: every service as a real process, known traffic, exact metric deltas and clean logs.

One module-scoped run starts a private Redis, the Kimi simulator, the token service, one worker and the gateway
(`python -m …`, LOG_FORMAT=json, each stderr captured to a file), saves two accounts through the admin API,
scrapes every `/metrics`, sends the traffic of `CASES` through the official SDKs, scrapes again, stops every
process and reads the logs. Each test then checks one concern against what that run recorded.

Every case uses MODEL, a Connect model, so each upstream call has protocol="connect" whichever account serves.
Counters are asserted exactly, label set by label set (a label set that should not move must not move);
histograms by their count, with positive sums; gauges of work in progress must be back to 0.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import anthropic
import openai
import pytest
from google import genai
from google.genai import types as genai_types
from prometheus_client.parser import text_string_to_metric_families

from kimi_sim.answers import answer_for
from shared.redis_server import free_port, start_redis_server
from tests.procs import Procs, http_get, http_post_json

MODEL = "kimi-k2.5-instant"
PROMPT = "observability check"
#: The Connect Chat call only: DeleteChat / ListChats / GetCurrentUser paths do not contain it.
CHAT_PATH = "ChatService/Chat"
SETTLE_TIMEOUT_S = 8.0
SERVICES = ("gateway", "upstream_worker", "token_service")
#: A JWT (or the start of one) anywhere in a log line: header segment, dot, payload segment.
JWT_SHAPE = re.compile(r"eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}")


@dataclass(frozen=True)
class Case:
    """One request of the known traffic and what every service must say about it."""

    dialect: str
    status: int
    #: The worker's job outcome; None when the gateway rejects the request before enqueueing it.
    outcome: str | None
    error: str | None = None
    model: str = MODEL
    stream: bool = False


CASES: dict[str, Case] = {
    "openai": Case("openai", 200, "ok"),
    "openai_stream": Case("openai", 200, "ok", stream=True),
    "anthropic": Case("anthropic", 200, "ok"),
    "gemini": Case("gemini", 200, "ok"),
    # The gateway knows no model "-": an unknown model is rejected before the request has one.
    "not_found": Case("openai", 404, None, error="model_not_found", model="-"),
    # Kimi answers the first Chat call 429: the worker cools that account and fails over to the other.
    "failover": Case("openai", 200, "ok"),
    # Kimi cuts the stream after one chunk: after the first token there is no retry, the client sees 502.
    "upstream_error": Case("openai", 502, "error", error="protocol"),
    # The client closes a stream while Kimi stalls: the gateway counts 499, the worker cancels the job.
    "disconnect": Case("openai", 499, "cancelled", error="cancelled", stream=True),
}
ENQUEUED = [name for name, case in CASES.items() if case.outcome is not None]
SUCCEEDED = [name for name, case in CASES.items() if case.status == 200]

LabelSet = frozenset[tuple[str, str]]
Samples = dict[tuple[str, LabelSet], float]


def labels(**pairs: str) -> LabelSet:
    return frozenset(pairs.items())


# -- metrics ------------------------------------------------------------------------------------------------


def scrape(url: str) -> Samples:
    status, body = http_get(f"{url}/metrics")
    assert status == 200, f"{url}/metrics answered {status}"
    samples: Samples = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples: Samples, name: str, **pairs: str) -> float:
    return samples.get((name, labels(**pairs)), 0.0)


@dataclass
class Service:
    url: str
    before: Samples = field(default_factory=dict)
    after: Samples = field(default_factory=dict)
    logs: list[str] = field(default_factory=list)
    exit_code: int | None = None

    def delta(self, name: str) -> dict[LabelSet, float]:
        """Every label set of sample `name` whose value changed during the traffic, with its change."""
        keys = {key for key in (*self.before, *self.after) if key[0] == name}
        changes = {key[1]: self.after.get(key, 0.0) - self.before.get(key, 0.0) for key in keys}
        return {label_set: change for label_set, change in changes.items() if change}

    def now(self, name: str, **pairs: str) -> float:
        return value(self.after, name, **pairs)

    def events(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.logs]


def by_label(name: str, counts: Counter[str]) -> dict[LabelSet, float]:
    return {labels(**{name: key}): float(n) for key, n in counts.items()}


# -- the run ------------------------------------------------------------------------------------------------


@dataclass
class Run:
    services: dict[str, Service]
    #: case name → the `x-request-id` its client got back
    request_ids: dict[str, str]
    #: every secret the run handled: tokens (whole and JWT payload), keys, a cookie value, access tokens
    secrets: list[str]
    #: the bearer tokens Kimi received (the secret check must have access tokens to look for)
    kimi_bearers: list[str]
    #: account id → (kind, `exp` of the token saved)
    accounts: dict[str, tuple[str, int]]

    @property
    def gateway(self) -> Service:
        return self.services["gateway"]

    @property
    def worker(self) -> Service:
        return self.services["upstream_worker"]

    @property
    def token_service(self) -> Service:
        return self.services["token_service"]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    log_dir = tmp_path_factory.mktemp("observability")
    redis = start_redis_server()
    try:
        with Procs(log_dir) as procs:
            yield _run(procs, redis.url)
    finally:
        redis.stop()


def _run(procs: Procs, redis_url: str) -> Run:
    ports = {name: free_port() for name in ("simulator", *SERVICES)}
    urls = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
    admin_key, client_key = f"adm-{secrets.token_hex(16)}", f"sk-obs-{secrets.token_hex(16)}"
    env = _env(redis_url, urls["simulator"], admin_key, client_key, ports)
    procs.start("simulator", ["-m", "kimi_sim", "--port", str(ports["simulator"])], env)
    started = {name: procs.start(name, ["-m", name], env) for name in SERVICES}
    procs.wait_http(f"{urls['simulator']}/__sim/state")
    procs.wait_http(f"{urls['token_service']}/healthz")
    procs.wait_http(f"{urls['upstream_worker']}/healthz")
    procs.wait_http(f"{urls['gateway']}/readyz")
    services = {name: Service(urls[name]) for name in SERVICES}
    for service in services.values():
        service.before = scrape(service.url)

    cookie_secret = secrets.token_hex(16)
    accounts, tokens = _save_accounts(urls["simulator"], urls["token_service"], admin_key, cookie_secret)
    status, body = http_get(f"{urls['gateway']}/auth/status", headers={"X-Admin-Key": admin_key})
    assert status == 200 and len(json.loads(body)["accounts"]) == 2
    traffic = Traffic(urls["gateway"], urls["simulator"], urls["token_service"], client_key)
    request_ids = traffic.send_all()
    _settle(services)
    for service in services.values():
        service.after = scrape(service.url)
    bearers = _bearers_seen_by_kimi(urls["simulator"])

    procs.stop_all()
    for name, service in services.items():
        service.logs = started[name].log_lines()
        service.exit_code = started[name].process.returncode
    payloads = [token.split(".")[1] for token in tokens]
    return Run(
        services,
        request_ids,
        secrets=[*tokens, *payloads, *bearers, admin_key, client_key, cookie_secret],
        kimi_bearers=bearers,
        accounts=accounts,
    )


def _env(
    redis_url: str, sim_url: str, admin_key: str, client_key: str, ports: dict[str, int]
) -> dict[str, str]:
    inherited = ("KIMI_", "GATEWAY_", "WORKER_", "TOKEN_", "REDIS", "LOG_", "ADMIN_", "PROBE_", "COOLDOWN_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(inherited)}
    env.update(
        PYTHONUNBUFFERED="1",
        LOG_FORMAT="json",
        LOG_LEVEL="INFO",
        REDIS_URL=redis_url,
        KIMI_BASE_URL=sim_url,
        ADMIN_API_KEY=admin_key,
        GATEWAY_API_KEYS=client_key,
        GATEWAY_HOST="127.0.0.1",
        GATEWAY_PORT=str(ports["gateway"]),
        TOKEN_SERVICE_HOST="127.0.0.1",
        TOKEN_SERVICE_PORT=str(ports["token_service"]),
        TOKEN_SERVICE_URL=f"http://127.0.0.1:{ports['token_service']}",
        WORKER_HOST="127.0.0.1",
        WORKER_METRICS_PORT=str(ports["upstream_worker"]),
        WORKER_NAME="obs-e2e",
        WORKER_CONCURRENCY="4",
        WORKER_HEARTBEAT_INTERVAL_S="0.2",
        KEEPALIVE_INTERVAL_S="0.2",
        IDLE_TIMEOUT_S="10",
        REQUEST_TIMEOUT_S="15",
        KIMI_CONNECT_TIMEOUT_S="2",
        KIMI_FIRST_BYTE_TIMEOUT_S="5",
        KIMI_IDLE_TIMEOUT_S="5",
        # A 429 without Retry-After cools the account for 1 s; the prober, every 0.2 s, then brings it back.
        COOLDOWN_429_S="1",
        PROBE_INTERVAL_S="0.2",
    )
    return env


def _save_accounts(
    sim_url: str, token_service_url: str, admin_key: str, cookie_secret: str
) -> tuple[dict[str, tuple[str, int]], list[str]]:
    """A refresh_token (as `token`, admin key as Bearer) and a kimi-auth (in a cookie string, X-Admin-Key)."""
    refresh = http_post_json(f"{sim_url}/__sim/accounts", {"kind": "refresh_token"})
    kimi_auth = http_post_json(f"{sim_url}/__sim/accounts", {"kind": "kimi_auth"})
    saved_refresh = http_post_json(
        f"{token_service_url}/auth/save",
        {"token": refresh["token"]},
        headers={"Authorization": f"Bearer {admin_key}"},
    )
    cookies = f"theme=dark; kimi-auth={kimi_auth['token']}; lang_pref={cookie_secret}"
    saved_kimi_auth = http_post_json(
        f"{token_service_url}/auth/save", {"cookies": cookies}, headers={"X-Admin-Key": admin_key}
    )
    accounts = {
        saved_refresh["account_id"]: ("refresh_token", int(refresh["exp"])),
        saved_kimi_auth["account_id"]: ("kimi_auth", int(kimi_auth["exp"])),
    }
    return accounts, [refresh["token"], kimi_auth["token"]]


def _bearers_seen_by_kimi(sim_url: str) -> list[str]:
    """Every bearer token that reached Kimi (kimi-auth tokens, refresh tokens, refreshed access tokens)."""
    status, body = http_get(f"{sim_url}/__sim/requests")
    assert status == 200
    found = set()
    for request in json.loads(body):
        headers = {k.lower(): v for k, v in request.get("headers", {}).items()}
        authorization = headers.get("authorization", "")
        if authorization[:7].lower() == "bearer " and authorization[7:].strip():
            found.add(authorization[7:].strip())
    return sorted(found)


def _settle(services: dict[str, Service]) -> None:
    """Wait until the cancelled job is finished and every gauge of work in progress is back to 0."""
    checks: list[tuple[str, Callable[[Samples], bool]]] = [
        ("gateway", lambda s: value(s, "kimi_gateway_in_flight_requests") == 0),
        ("gateway", lambda s: value(s, "kimi_gateway_open_streams") == 0),
        ("upstream_worker", lambda s: value(s, "kimi_worker_jobs_in_flight") == 0),
        ("upstream_worker", lambda s: value(s, "kimi_worker_jobs_total", outcome="cancelled") >= 1),
        # Queue gauges are sampled at each heartbeat: wait for one taken after the last ack.
        ("upstream_worker", lambda s: value(s, "kimi_queue_length") == 0),
        ("upstream_worker", lambda s: value(s, "kimi_queue_pending") == 0),
    ]
    deadline = time.monotonic() + SETTLE_TIMEOUT_S
    while True:
        failing = [i for i, (name, check) in enumerate(checks) if not check(scrape(services[name].url))]
        if not failing:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"the services did not settle: checks {failing} still fail")
        time.sleep(0.1)


class Traffic:
    """The known traffic of CASES, in order; each case returns the `x-request-id` its client got back."""

    def __init__(self, gateway_url: str, sim_url: str, token_service_url: str, client_key: str) -> None:
        self.gateway_url = gateway_url
        self.sim_url = sim_url
        self.token_service_url = token_service_url
        self.client_key = client_key

    def send_all(self) -> dict[str, str]:
        ids: dict[str, str] = {}
        with openai.OpenAI(
            base_url=f"{self.gateway_url}/v1", api_key=self.client_key, max_retries=0, timeout=10
        ) as client:
            ids["openai"] = self.openai_chat(client)
            ids["openai_stream"] = self.openai_stream(client)
            ids["anthropic"] = self.anthropic_messages()
            ids["gemini"] = self.gemini_generate()
            ids["not_found"] = self.not_found(client)
            ids["failover"] = self.failover(client)
            self.wait_for_probe()
            ids["upstream_error"] = self.upstream_error(client)
            ids["disconnect"] = self.disconnect(client)
        assert list(ids) == list(CASES)
        return ids

    def openai_chat(self, client: openai.OpenAI) -> str:
        raw = client.chat.completions.with_raw_response.create(
            model=MODEL, messages=[{"role": "user", "content": PROMPT}]
        )
        assert raw.parse().choices[0].message.content == answer_for(PROMPT)
        return raw.headers["x-request-id"]

    def openai_stream(self, client: openai.OpenAI) -> str:
        raw = client.chat.completions.with_raw_response.create(
            model=MODEL, messages=[{"role": "user", "content": PROMPT}], stream=True
        )
        with raw.parse() as stream:
            text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
        assert text == answer_for(PROMPT)
        return raw.headers["x-request-id"]

    def anthropic_messages(self) -> str:
        with anthropic.Anthropic(
            base_url=self.gateway_url, api_key=self.client_key, max_retries=0, timeout=10
        ) as client:
            raw = client.messages.with_raw_response.create(
                model=MODEL, max_tokens=256, messages=[{"role": "user", "content": PROMPT}]
            )
            message = raw.parse()
        assert "".join(b.text for b in message.content if b.type == "text") == answer_for(PROMPT)
        return raw.headers["x-request-id"]

    def gemini_generate(self) -> str:
        options = genai_types.HttpOptions(base_url=self.gateway_url, timeout=10_000)
        client = genai.Client(api_key=self.client_key, http_options=options)
        try:
            response = client.models.generate_content(model=MODEL, contents=PROMPT)
        finally:
            client.close()
        assert response.text == answer_for(PROMPT)
        http_response = response.sdk_http_response
        assert http_response is not None and http_response.headers is not None
        return {k.lower(): v for k, v in http_response.headers.items()}["x-request-id"]

    def not_found(self, client: openai.OpenAI) -> str:
        with pytest.raises(openai.NotFoundError) as caught:
            client.chat.completions.create(
                model="no-such-model", messages=[{"role": "user", "content": PROMPT}]
            )
        return caught.value.response.headers["x-request-id"]

    def failover(self, client: openai.OpenAI) -> str:
        self.arm("http_429", path=CHAT_PATH)
        request_id = self.openai_chat(client)
        assert self.armed() == [], "the 429 fault was not used"
        return request_id

    def wait_for_probe(self) -> None:
        """The cooled account comes back through the prober, before any lease could revive it instead."""
        deadline = time.monotonic() + SETTLE_TIMEOUT_S
        while value(scrape(self.token_service_url), "kimi_account_probes_total", result="ok") < 1:
            if time.monotonic() > deadline:
                raise AssertionError("the prober never probed the cooled account")
            time.sleep(0.1)

    def upstream_error(self, client: openai.OpenAI) -> str:
        self.arm("cut_mid_stream", path=CHAT_PATH, after_chunks=1)
        with pytest.raises(openai.APIStatusError) as caught:
            client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": PROMPT}])
        assert caught.value.status_code == 502
        return caught.value.response.headers["x-request-id"]

    def disconnect(self, client: openai.OpenAI) -> str:
        """The headers come with the first keep-alive while Kimi stalls; then the client hangs up."""
        self.arm("stall_mid_stream", path=CHAT_PATH, seconds=5)
        raw = client.chat.completions.with_raw_response.create(
            model=MODEL, messages=[{"role": "user", "content": PROMPT}], stream=True
        )
        raw.parse().close()
        return raw.headers["x-request-id"]

    def arm(self, name: str, **params: Any) -> None:
        http_post_json(f"{self.sim_url}/__sim/faults", {"name": name, **params})

    def armed(self) -> list[Any]:
        status, body = http_get(f"{self.sim_url}/__sim/faults")
        assert status == 200
        armed: list[Any] = json.loads(body)
        return armed


# -- gateway metrics ----------------------------------------------------------------------------------------


def test_gateway_request_counters(run: Run) -> None:
    """Requests count once each by dialect, model and status; one client disconnect is counted."""
    expected = Counter((c.dialect, c.model, str(c.status)) for c in CASES.values())
    assert run.gateway.delta("kimi_gateway_requests_total") == {
        labels(dialect=d, model=m, status=s): float(n) for (d, m, s), n in expected.items()
    }
    assert run.gateway.delta("kimi_gateway_client_disconnects_total") == {labels(dialect="openai"): 1.0}


def test_gateway_histograms(run: Run) -> None:
    """Duration counts every request, overhead every enqueued one, time to first token every request that
    received content (stream or not, the cut one included); each by dialect, with positive sums."""
    every = Counter(c.dialect for c in CASES.values())
    enqueued = Counter(CASES[name].dialect for name in ENQUEUED)
    histograms = {
        "kimi_gateway_request_duration_seconds": every,
        "kimi_gateway_overhead_seconds": enqueued,
        "kimi_gateway_time_to_first_token_seconds": Counter(
            CASES[name].dialect for name in (*SUCCEEDED, "upstream_error")
        ),
    }
    for name, counts in histograms.items():
        assert run.gateway.delta(f"{name}_count") == by_label("dialect", counts), name
        sums = run.gateway.delta(f"{name}_sum")
        assert set(sums) == set(by_label("dialect", counts)) and all(v > 0 for v in sums.values()), name
    overhead = sum(run.gateway.delta("kimi_gateway_overhead_seconds_sum").values())
    duration = sum(run.gateway.delta("kimi_gateway_request_duration_seconds_sum").values())
    assert overhead < duration


def test_gateway_gauges_back_to_zero(run: Run) -> None:
    """No request is in flight and no SSE stream is open once the traffic is over, the disconnect included."""
    assert run.gateway.now("kimi_gateway_in_flight_requests") == 0
    assert run.gateway.now("kimi_gateway_open_streams") == 0


# -- worker metrics -----------------------------------------------------------------------------------------


def test_worker_job_counters(run: Run) -> None:
    """Jobs count by outcome; one failover; upstream errors by protocol and kind; nothing reclaimed."""
    outcomes = Counter(CASES[name].outcome for name in ENQUEUED)
    assert run.worker.delta("kimi_worker_jobs_total") == {
        labels(outcome=str(o)): float(n) for o, n in outcomes.items()
    }
    assert run.worker.delta("kimi_worker_failovers_total") == {labels(): 1.0}
    assert run.worker.delta("kimi_worker_upstream_errors_total") == {
        labels(protocol="connect", kind="rate_limited"): 1.0,
        labels(protocol="connect", kind="protocol"): 1.0,
    }
    assert run.worker.delta("kimi_worker_reclaimed_jobs_total") == {}


def test_worker_account_counters(run: Run) -> None:
    """The worker that met the 429 counts the cooldown and its transition; it refreshed the refresh_token once."""
    assert run.worker.delta("kimi_account_cooldowns_total") == {labels(reason="rate_limited"): 1.0}
    assert run.worker.delta("kimi_account_state_transitions_total") == {
        labels(from_state="active", to_state="cooling", reason="rate_limited"): 1.0
    }
    assert run.worker.delta("kimi_token_refreshes_total") == {labels(result="ok"): 1.0}


def test_worker_upstream_histograms(run: Run) -> None:
    """Every upstream call is timed (each job plus the 429 attempt); all but the 429 had a first byte."""
    calls = len(ENQUEUED) + 1
    assert run.worker.delta("kimi_worker_upstream_duration_seconds_count") == {
        labels(protocol="connect"): float(calls)
    }
    assert run.worker.delta("kimi_worker_upstream_time_to_first_byte_seconds_count") == {
        labels(protocol="connect"): float(calls - 1)
    }
    for name in (
        "kimi_worker_upstream_duration_seconds_sum",
        "kimi_worker_upstream_time_to_first_byte_seconds_sum",
    ):
        assert run.worker.delta(name)[labels(protocol="connect")] > 0


def test_worker_gauges(run: Run) -> None:
    """Queue gauges from XINFO GROUPS show every job delivered and acked, none dead; nothing in flight."""
    assert run.worker.now("kimi_worker_jobs_in_flight") == 0
    assert run.worker.now("kimi_queue_length") == 0  # every finished job was deleted
    assert run.worker.now("kimi_queue_pending") == 0
    assert run.worker.now("kimi_queue_lag") == 0
    assert run.worker.now("kimi_queue_dead_letter_length") == 0
    assert time.time() - 60 < run.worker.now("kimi_worker_heartbeat_timestamp_seconds") <= time.time()


# -- token service metrics ----------------------------------------------------------------------------------


def test_token_service_account_gauges(run: Run) -> None:
    """Both accounts are active again after the cooldown, each with its token's expiry time."""
    for state in ("active", "cooling", "invalid", "expired", "disabled"):
        assert run.token_service.now("kimi_accounts", state=state) == (2 if state == "active" else 0), state
    expiry = run.token_service.delta("kimi_account_token_expiry_timestamp_seconds")
    assert set(expiry) == {labels(account=a, kind=kind) for a, (kind, _) in run.accounts.items()}
    for account, (kind, exp) in run.accounts.items():
        seen = expiry[labels(account=account, kind=kind)]
        # A refresh may store a newer refresh_token (minted a moment later, so expiring a moment later).
        assert (seen == exp) if kind == "kimi_auth" else (exp <= seen <= exp + 60), (kind, seen, exp)


def test_token_service_counters(run: Run) -> None:
    """Two accounts added, one probe that brought the cooled account back; cooldowns belong to the worker."""
    assert run.token_service.delta("kimi_account_state_transitions_total") == {
        labels(from_state="none", to_state="active", reason="added"): 2.0,
        labels(from_state="cooling", to_state="active", reason="probe_ok"): 1.0,
    }
    assert run.token_service.delta("kimi_account_probes_total") == {labels(result="ok"): 1.0}
    assert run.token_service.delta("kimi_account_cooldowns_total") == {}
    assert run.token_service.delta("kimi_token_refreshes_total") == {}


# -- Redis metrics ------------------------------------------------------------------------------------------


def test_redis_metrics_in_every_service(run: Run) -> None:
    """Each service times its own Redis commands under its service label and counts no Redis error."""
    for name, service in run.services.items():
        counts = service.delta("kimi_redis_command_duration_seconds_count")
        assert counts and all(dict(label_set)["service"] == name for label_set in counts), name
        assert sum(service.delta("kimi_redis_command_duration_seconds_sum").values()) > 0, name
        assert service.delta("kimi_redis_errors_total") == {}, name
    # One run of the enqueue script per job enqueued by the gateway (EVALSHA; one EVAL loads it on a fresh
    # Redis), one XACK + XDEL pipeline per job finished by the worker (among its other pipelines).
    gateway = run.gateway.delta("kimi_redis_command_duration_seconds_count")
    assert gateway[labels(service="gateway", command="EVALSHA")] == len(ENQUEUED)
    assert gateway.get(labels(service="gateway", command="EVAL"), 0) <= 1
    worker = run.worker.delta("kimi_redis_command_duration_seconds_count")
    assert worker[labels(service="upstream_worker", command="PIPELINE")] >= len(ENQUEUED)
    assert worker[labels(service="upstream_worker", command="XREADGROUP")] >= 1


# -- logs ---------------------------------------------------------------------------------------------------


def test_every_log_line_is_json(run: Run) -> None:
    """Every line a service wrote is one JSON object with event, level, timestamp and its service name."""
    for name, service in run.services.items():
        assert service.logs, name
        for line in service.logs:
            event = json.loads(line)
            assert isinstance(event, dict), line
            assert {"event", "level", "timestamp"} <= set(event), line
            assert event["service"] == name, line


def test_services_stop_cleanly(run: Run) -> None:
    """SIGTERM stops every service with exit code 0."""
    assert {name: s.exit_code for name, s in run.services.items()} == dict.fromkeys(SERVICES, 0)


def test_request_ids_are_distinct(run: Run) -> None:
    """Every response, errors included, carries its own 32-hex-digit `x-request-id`."""
    ids = list(run.request_ids.values())
    assert len(set(ids)) == len(CASES)
    assert all(re.fullmatch(r"[0-9a-f]{32}", request_id) for request_id in ids)


def test_one_canonical_line_per_request(run: Run) -> None:
    """The gateway writes exactly one `request` line per request, with every field of the issue's list."""
    lines = [e for e in run.gateway.events() if e["event"] == "request"]
    assert len(lines) == len(CASES)
    for name, case in CASES.items():
        mine = [e for e in lines if e["request_id"] == run.request_ids[name]]
        assert len(mine) == 1, name
        line = mine[0]
        fields = ("dialect", "model", "account_id", "status", "duration_ms", "ttft_ms", "chunks", "bytes")
        assert set(fields) <= set(line), name
        assert (line["dialect"], line["model"], line["status"], line["error"]) == (
            case.dialect,
            case.model,
            case.status,
            case.error,
        ), name
        assert line["duration_ms"] > 0, name
        assert (line["account_id"] in run.accounts) == (case.outcome is not None), name
        got_content = case.status == 200 or name == "upstream_error"
        assert (line["ttft_ms"] is not None) == got_content, name
        if case.status == 200:
            assert line["bytes"] > 0, name
            assert line["chunks"] == 4, name  # the simulator streams every answer in 4 chunks


def test_request_id_reaches_the_worker(run: Run) -> None:
    """Each enqueued request id has exactly one worker `job` line (same account, its outcome); the
    rejected one never reaches the worker; the failover is logged under the same id."""
    jobs = [e for e in run.worker.events() if e["event"] == "job"]
    canonical = {e["request_id"]: e for e in run.gateway.events() if e["event"] == "request"}
    assert len(jobs) == len(ENQUEUED)
    for name in ENQUEUED:
        request_id = run.request_ids[name]
        mine = [e for e in jobs if e["request_id"] == request_id]
        assert len(mine) == 1, name
        assert mine[0]["outcome"] == CASES[name].outcome, name
        assert mine[0]["dialect"] == CASES[name].dialect, name
        assert mine[0]["account_id"] == canonical[request_id]["account_id"], name
    rejected = run.request_ids["not_found"]
    assert not any(rejected in line for line in run.worker.logs)
    failovers = [e for e in run.worker.events() if e["event"] == "failover"]
    assert [e["request_id"] for e in failovers] == [run.request_ids["failover"]]


def test_no_secret_in_any_log(run: Run) -> None:
    """No service log holds a token (whole, its JWT payload, or any JWT at all), a key or a cookie value."""
    assert len(run.kimi_bearers) >= 2  # the kimi-auth token and at least one refreshed access token
    for name, service in run.services.items():
        text = "\n".join(service.logs)
        for secret in run.secrets:
            assert secret not in text, f"{name} logged a secret"
        assert JWT_SHAPE.search(text) is None, f"{name} logged a JWT"
