"""One frozen Settings object per service, parsed from the environment once, at the edge.

Names of ../shared/DESIGN.md §2 are the contract (REDIS_URL, KIMI_BASE_URL, ADMIN_API_KEY, GATEWAY_API_KEYS,
LOG_LEVEL, LOG_FORMAT, GATEWAY_PORT, TOKEN_SERVICE_PORT, WORKER_METRICS_PORT); the rest are additions, each
documented in README.md and .env.example. Business code never reads os.environ; tests build Settings directly.
"""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field

from shared.secret import Secret


def _str(env: Mapping[str, str], name: str, default: str) -> str:
    value = env.get(name, "").strip()
    return value or default


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"{name} must be an integer, got {raw!r}") from None


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        return float(raw)
    except ValueError:
        raise ValueError(f"{name} must be a number, got {raw!r}") from None


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in {"1", "true", "yes", "on"}:
        return True
    if raw in {"0", "false", "no", "off"}:
        return False
    raise ValueError(f"{name} must be a boolean (true/false), got {raw!r}")


def _secret(env: Mapping[str, str], name: str) -> Secret | None:
    raw = env.get(name, "").strip()
    return Secret(raw) if raw else None


def _default_log_format() -> str:
    return "console" if sys.stderr.isatty() else "json"


@dataclass(frozen=True, slots=True)
class CommonSettings:
    """What every process needs."""

    redis_url: str = "redis://127.0.0.1:6379/0"
    kimi_base_url: str = "https://www.kimi.com"
    admin_api_key: Secret | None = None
    log_level: str = "INFO"
    log_format: str = "json"
    #: Fail fast when Redis does not answer (LiteLLM PR #35273: no socket timeout → every request hangs).
    redis_socket_timeout_s: float = 5.0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> CommonSettings:
        env = os.environ if env is None else env
        return cls(
            redis_url=_str(env, "REDIS_URL", "redis://127.0.0.1:6379/0"),
            kimi_base_url=_str(env, "KIMI_BASE_URL", "https://www.kimi.com").rstrip("/"),
            admin_api_key=_secret(env, "ADMIN_API_KEY"),
            log_level=_str(env, "LOG_LEVEL", "INFO").upper(),
            log_format=_str(env, "LOG_FORMAT", _default_log_format()).lower(),
            redis_socket_timeout_s=_float(env, "REDIS_SOCKET_TIMEOUT_S", 5.0),
        )


@dataclass(frozen=True, slots=True)
class PoolSettings:
    """How the account pool behaves; read by the token service and by every worker (the lease library)."""

    #: Kimi allows one active stream per user (chat.user_stream_pushing), so one lease per account by default.
    max_concurrency_per_account: int = 1
    #: A crashed worker's lease frees itself after this long; live workers extend it while streaming.
    lease_ttl_s: int = 120
    #: Refresh an access token this long before its own `exp`.
    refresh_margin_s: int = 60
    cooldown_429_s: int = 60
    cooldown_overload_s: int = 30
    cooldown_error_s: int = 30
    #: The free long-text quota window (30 rounds per 3 hours).
    quota_window_s: int = 3 * 3600
    #: Pass-through `Bearer T1,T2` tokens live this long as ephemeral accounts.
    ephemeral_ttl_s: int = 3600
    token_encryption_key: Secret | None = None
    probe_interval_s: float = 30.0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> PoolSettings:
        env = os.environ if env is None else env
        return cls(
            max_concurrency_per_account=_int(env, "ACCOUNT_MAX_CONCURRENCY", 1),
            lease_ttl_s=_int(env, "LEASE_TTL_S", 120),
            refresh_margin_s=_int(env, "REFRESH_MARGIN_S", 60),
            cooldown_429_s=_int(env, "COOLDOWN_429_S", 60),
            cooldown_overload_s=_int(env, "COOLDOWN_OVERLOAD_S", 30),
            cooldown_error_s=_int(env, "COOLDOWN_ERROR_S", 30),
            quota_window_s=_int(env, "QUOTA_WINDOW_S", 3 * 3600),
            ephemeral_ttl_s=_int(env, "EPHEMERAL_ACCOUNT_TTL_S", 3600),
            token_encryption_key=_secret(env, "TOKEN_ENCRYPTION_KEY"),
            probe_interval_s=_float(env, "PROBE_INTERVAL_S", 30.0),
        )


@dataclass(frozen=True, slots=True)
class GatewaySettings:
    common: CommonSettings = field(default_factory=CommonSettings)
    pool: PoolSettings = field(default_factory=PoolSettings)
    host: str = "0.0.0.0"
    port: int = 8000
    api_keys: tuple[Secret, ...] = ()
    #: Accept `Bearer <kimi token>[,<kimi token>…]` from clients as ephemeral accounts.
    allow_passthrough: bool = True
    max_body_bytes: int = 32 * 1024 * 1024
    #: Overall deadline of one request, queue wait included.
    request_timeout_s: float = 600.0
    #: Longest silence from the worker (no event, no keep-alive) before the gateway gives up.
    idle_timeout_s: float = 120.0
    #: SSE keep-alive period while waiting for the first token (client-formats.md §4: ≤ 15 s).
    keepalive_interval_s: float = 10.0
    #: A worker heartbeat older than this does not count for /readyz.
    worker_stale_s: float = 15.0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> GatewaySettings:
        env = os.environ if env is None else env
        keys = tuple(Secret(k.strip()) for k in env.get("GATEWAY_API_KEYS", "").split(",") if k.strip())
        return cls(
            common=CommonSettings.from_env(env),
            pool=PoolSettings.from_env(env),
            host=_str(env, "GATEWAY_HOST", "0.0.0.0"),
            port=_int(env, "GATEWAY_PORT", 8000),
            api_keys=keys,
            allow_passthrough=_bool(env, "ALLOW_PASSTHROUGH_TOKENS", True),
            max_body_bytes=_int(env, "MAX_BODY_BYTES", 32 * 1024 * 1024),
            request_timeout_s=_float(env, "REQUEST_TIMEOUT_S", 600.0),
            idle_timeout_s=_float(env, "IDLE_TIMEOUT_S", 120.0),
            keepalive_interval_s=_float(env, "KEEPALIVE_INTERVAL_S", 10.0),
            worker_stale_s=_float(env, "WORKER_STALE_S", 15.0),
        )


@dataclass(frozen=True, slots=True)
class TokenServiceSettings:
    common: CommonSettings = field(default_factory=CommonSettings)
    pool: PoolSettings = field(default_factory=PoolSettings)
    host: str = "0.0.0.0"
    port: int = 8001
    max_body_bytes: int = 1024 * 1024

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> TokenServiceSettings:
        env = os.environ if env is None else env
        return cls(
            common=CommonSettings.from_env(env),
            pool=PoolSettings.from_env(env),
            host=_str(env, "TOKEN_SERVICE_HOST", "0.0.0.0"),
            port=_int(env, "TOKEN_SERVICE_PORT", 8001),
        )


@dataclass(frozen=True, slots=True)
class WorkerSettings:
    common: CommonSettings = field(default_factory=CommonSettings)
    pool: PoolSettings = field(default_factory=PoolSettings)
    host: str = "0.0.0.0"
    metrics_port: int = 8002
    #: Concurrent jobs per worker process.
    concurrency: int = 32
    consumer_name: str = field(default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}")
    #: A pending job idle this long belongs to a dead consumer (live workers touch their jobs more often).
    claim_idle_ms: int = 30_000
    max_deliveries: int = 3
    #: Accounts tried before the first token, per job.
    max_attempts: int = 3
    connect_timeout_s: float = 15.0
    first_byte_timeout_s: float = 120.0
    #: Agent lanes think for minutes before the first token.
    agent_first_byte_timeout_s: float = 600.0
    idle_timeout_s: float = 90.0
    heartbeat_interval_s: float = 5.0
    #: While a job waits for Kimi's first event, a Keepalive goes on its reply stream this often, so the
    #: gateway's IDLE_TIMEOUT_S (120 s) measures real silence only; keep it at most a quarter of that.
    keepalive_interval_s: float = 10.0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> WorkerSettings:
        env = os.environ if env is None else env
        return cls(
            common=CommonSettings.from_env(env),
            pool=PoolSettings.from_env(env),
            host=_str(env, "WORKER_HOST", "0.0.0.0"),
            metrics_port=_int(env, "WORKER_METRICS_PORT", 8002),
            concurrency=_int(env, "WORKER_CONCURRENCY", 32),
            consumer_name=_str(env, "WORKER_NAME", f"{socket.gethostname()}-{os.getpid()}"),
            claim_idle_ms=_int(env, "WORKER_CLAIM_IDLE_MS", 30_000),
            max_deliveries=_int(env, "WORKER_MAX_DELIVERIES", 3),
            max_attempts=_int(env, "WORKER_MAX_ATTEMPTS", 3),
            connect_timeout_s=_float(env, "KIMI_CONNECT_TIMEOUT_S", 15.0),
            first_byte_timeout_s=_float(env, "KIMI_FIRST_BYTE_TIMEOUT_S", 120.0),
            agent_first_byte_timeout_s=_float(env, "KIMI_AGENT_FIRST_BYTE_TIMEOUT_S", 600.0),
            idle_timeout_s=_float(env, "KIMI_IDLE_TIMEOUT_S", 90.0),
            heartbeat_interval_s=_float(env, "WORKER_HEARTBEAT_INTERVAL_S", 5.0),
            keepalive_interval_s=_float(env, "WORKER_KEEPALIVE_INTERVAL_S", 10.0),
        )
