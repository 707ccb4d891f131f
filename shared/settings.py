"""One frozen Settings object per service, parsed from the environment once, at the edge.

Every setting is declared once, as a field of a group: its environment variable, type, default and a one-line
doc (`setting(...)`). One generic loader (`SettingsGroup.from_env`) reads every group; a field whose type is
itself a group is loaded from the same environment. Names of ../shared/DESIGN.md §2 are the contract
(REDIS_URL, KIMI_BASE_URL, ADMIN_API_KEY, GATEWAY_API_KEYS, LOG_LEVEL, LOG_FORMAT, GATEWAY_PORT,
TOKEN_SERVICE_PORT, WORKER_METRICS_PORT); `declared_settings()` lists them all for .env.example and its test.
Business code never reads os.environ; tests build Settings directly.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar, get_type_hints

from shared import keys
from shared.secret import Secret

_G = TypeVar("_G", bound="SettingsGroup")
_TRUE, _FALSE = frozenset({"1", "true", "yes", "on"}), frozenset({"0", "false", "no", "off"})


def setting(
    env: str,
    default: Any = dataclasses.MISSING,
    doc: str = "",
    *,
    default_factory: Callable[[], Any] | None = None,
    normalize: Callable[[Any], Any] | None = None,
) -> Any:
    """A field read from the environment variable `env`; `normalize` runs on a parsed (not default) value."""
    metadata = {"env": env, "doc": doc, "normalize": normalize}
    if default_factory is not None:
        return dataclasses.field(default_factory=default_factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


@dataclass(frozen=True, slots=True)
class Declared:
    """One environment variable as declared: for .env.example, the README and their tests."""

    env: str
    default: Any
    doc: str
    group: str


class SettingsGroup:
    """Base of every settings group: the one loader that reads each field's variable by its type."""

    __slots__ = ()
    #: Fields parsed from a comma-separated list.
    _LIST_SEPARATOR: ClassVar[str] = ","

    @classmethod
    def from_env(cls: type[_G], environ: Mapping[str, str] | None = None) -> _G:
        environ = os.environ if environ is None else environ
        hints = get_type_hints(cls)
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):  # type: ignore[arg-type]
            hint = hints[f.name]
            if isinstance(hint, type) and issubclass(hint, SettingsGroup):
                values[f.name] = hint.from_env(environ)
                continue
            name = f.metadata.get("env")
            raw = environ.get(name, "").strip() if name else ""
            if not name or not raw:
                continue
            value = _parse(hint, name, raw)
            normalize = f.metadata.get("normalize")
            values[f.name] = normalize(value) if normalize else value
        return cls(**values)


def _parse(hint: Any, name: str, raw: str) -> Any:
    if hint is str:
        return raw
    if hint is bool:
        lowered = raw.lower()
        if lowered in _TRUE or lowered in _FALSE:
            return lowered in _TRUE
        raise ValueError(f"{name} must be a boolean (true/false), got {raw!r}")
    if hint is int or hint is float:
        try:
            return hint(raw)
        except ValueError:
            kind = "an integer" if hint is int else "a number"
            raise ValueError(f"{name} must be {kind}, got {raw!r}") from None
    if hint == Secret | None:
        return Secret(raw)
    if hint == tuple[Secret, ...]:
        return tuple(Secret(part.strip()) for part in raw.split(",") if part.strip())
    if hint == tuple[str, ...]:
        return tuple(part.strip() for part in raw.split(",") if part.strip())
    raise TypeError(f"no parser for {name} of type {hint!r}")


def _tristate(name: str, raw: str) -> str:
    """`auto`, or a boolean spelled any way the loader accepts, as `true` / `false`."""
    lowered = raw.lower()
    if lowered == "auto":
        return lowered
    if lowered in _TRUE or lowered in _FALSE:
        return "true" if lowered in _TRUE else "false"
    raise ValueError(f"{name} must be auto, true or false, got {raw!r}")


def _default_log_format() -> str:
    return "console" if sys.stderr.isatty() else "json"


#: The routing policies (upstream_worker/routing.py says what each means).
UPSTREAM_POLICIES = ("web_first", "keys_first", "web_only", "keys_only")


def _policy(value: str) -> str:
    policy = value.strip().lower()
    if policy not in UPSTREAM_POLICIES:
        raise ValueError(f"UPSTREAM_POLICY must be one of {', '.join(UPSTREAM_POLICIES)}, got {value!r}")
    return policy


def _model_policies(entries: tuple[str, ...]) -> tuple[str, ...]:
    """`pattern=policy` entries, each checked; kept as `pattern=policy` with the policy normalised."""
    checked = []
    for entry in entries:
        pattern, sep, policy = entry.partition("=")
        if not sep or not pattern.strip():
            raise ValueError(f"UPSTREAM_POLICY_MODELS entries read MODEL_PATTERN=POLICY, got {entry!r}")
        checked.append(f"{pattern.strip()}={_policy(policy)}")
    return tuple(checked)


def _default_consumer_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


@dataclass(frozen=True, slots=True)
class CommonSettings(SettingsGroup):
    """What every process needs."""

    redis_url: str = setting("REDIS_URL", "redis://127.0.0.1:6379/0", "Redis for jobs, replies and accounts")
    kimi_base_url: str = setting(
        "KIMI_BASE_URL",
        "https://www.kimi.com",
        "Kimi web origin; REST /api/... and Connect /apiv2/... hang off it",
        normalize=lambda url: url.rstrip("/"),
    )
    admin_api_key: Secret | None = setting(
        "ADMIN_API_KEY", None, "admin routes key; unset = loopback callers only"
    )
    log_level: str = setting("LOG_LEVEL", "INFO", "DEBUG, INFO, WARNING or ERROR", normalize=str.upper)
    log_format: str = setting(
        "LOG_FORMAT",
        doc="json (default) or console (default on a TTY)",
        default_factory=_default_log_format,
        normalize=str.lower,
    )
    #: Fail fast when Redis does not answer (LiteLLM PR #35273: no socket timeout → every request hangs).
    redis_socket_timeout_s: float = setting("REDIS_SOCKET_TIMEOUT_S", 5.0, "socket timeout of Redis commands")
    #: A burst waits for a pooled connection rather than failing; past this wait it is overload (429).
    redis_pool_wait_s: float = setting(
        "REDIS_POOL_WAIT_S", 2.0, "longest wait for a free pooled Redis connection"
    )
    #: One rule for the gateway's /readyz and enqueue check and the token service's /admin/system.
    worker_stale_s: float = setting("WORKER_STALE_S", 15.0, "a worker heartbeat older than this is dead")


@dataclass(frozen=True, slots=True)
class PoolSettings(SettingsGroup):
    """How the account pool behaves; read by the token service and by every worker (the lease library)."""

    #: Kimi allows one active stream per user (chat.user_stream_pushing), so one lease per account by default.
    max_concurrency_per_account: int = setting(
        "ACCOUNT_MAX_CONCURRENCY", 1, "parallel requests per Kimi account"
    )
    #: A crashed worker's lease frees itself after this long; live workers extend it while streaming.
    lease_ttl_s: int = setting("LEASE_TTL_S", 120, "a crashed worker's lease frees itself after this")
    refresh_margin_s: int = setting("REFRESH_MARGIN_S", 60, "refresh an access token this long before exp")
    cooldown_429_s: int = setting("COOLDOWN_429_S", 60, "cooling after a 429 without Retry-After")
    cooldown_overload_s: int = setting("COOLDOWN_OVERLOAD_S", 30, "cooling after Kimi says it is overloaded")
    cooldown_error_s: int = setting("COOLDOWN_ERROR_S", 30, "cooling after other upstream errors")
    #: The free long-text quota window (30 rounds per 3 hours).
    quota_window_s: int = setting("QUOTA_WINDOW_S", 3 * 3600, "cooling after the long-text quota is used up")
    ephemeral_ttl_s: int = setting(
        "EPHEMERAL_ACCOUNT_TTL_S", 3600, "pass-through Bearer T1,T2 tokens live this long as accounts"
    )
    #: kimi-free-api clients send a handful of tokens; dozens in one bearer is a flood, not failover.
    passthrough_max_tokens: int = setting(
        "PASSTHROUGH_MAX_TOKENS", 8, "Kimi tokens one pass-through bearer may hold (Bearer T1,…,Tn)"
    )
    passthrough_max_accounts: int = setting(
        "PASSTHROUGH_MAX_ACCOUNTS", 1000, "pass-through accounts held at once; new ones beyond it get 503"
    )
    token_encryption_key: Secret | None = setting(
        "TOKEN_ENCRYPTION_KEY", None, "Fernet key (or passphrase) encrypting tokens at rest"
    )
    probe_interval_s: float = setting("PROBE_INTERVAL_S", 30.0, "the prober's pass interval")
    #: A key pasted without its base URL belongs to this platform (keys are regional: .ai global, .cn China).
    moonshot_base_url: str = setting(
        "MOONSHOT_BASE_URL",
        "https://api.moonshot.ai",
        "official API base URL of a key pasted without one",
        normalize=lambda url: url.rstrip("/"),
    )
    #: Tier0 keys allow one request at a time (moonshot-official-api.md §10.4); raise it to the key's tier.
    api_key_max_concurrency: int = setting(
        "API_KEY_MAX_CONCURRENCY", 1, "parallel requests per official API key"
    )
    #: The API's 429 usually says "try again after N seconds", which wins over this.
    api_key_cooldown_429_s: int = setting(
        "API_KEY_COOLDOWN_429_S", 10, "an API key's cooling after a 429 without a wait hint"
    )
    #: A used-up balance: parked until an operator tops up (the prober's probe brings it back sooner).
    api_key_quota_cooldown_s: int = setting(
        "API_KEY_QUOTA_COOLDOWN_S", 600, "an API key's cooling after `exceeded_current_quota_error`"
    )
    #: kimi-web-2026.md §8: Connect's AuthService/RefreshToken first, the legacy REST refresh only behind a flag.
    refresh_rest_fallback: bool = setting(
        "KIMI_REFRESH_REST_FALLBACK", True, "after a failed Connect refresh, try GET /api/auth/token/refresh"
    )
    #: Accounts and tokens are bound to one region (kimi-web-2026.md §1): each region's web origin. An account
    #: whose token names no region is called on KIMI_BASE_URL; an account may also name its own origin.
    cn_base_url: str = setting(
        "KIMI_CN_BASE_URL",
        "https://www.kimi.com",
        "web origin of China-region accounts (token aud kimi.com)",
        normalize=lambda url: url.rstrip("/"),
    )
    global_base_url: str = setting(
        "KIMI_GLOBAL_BASE_URL",
        "https://www.kimi.ai",
        "web origin of international accounts (token aud kimi.ai or region overseas)",
        normalize=lambda url: url.rstrip("/"),
    )


@dataclass(frozen=True, slots=True)
class UpstreamTimeouts(SettingsGroup):
    """Upstream deadlines (seconds), read by the worker's drivers."""

    connect_s: float = setting("KIMI_CONNECT_TIMEOUT_S", 15.0, "TCP + TLS connect to Kimi")
    first_byte_s: float = setting("KIMI_FIRST_BYTE_TIMEOUT_S", 120.0, "Kimi's first byte of an answer")
    #: Agent lanes think for minutes before the first token.
    agent_first_byte_s: float = setting(
        "KIMI_AGENT_FIRST_BYTE_TIMEOUT_S", 600.0, "first byte on the agent lanes"
    )
    #: Longest silence between two chunks once the body has started.
    idle_s: float = setting("KIMI_IDLE_TIMEOUT_S", 90.0, "longest silence between two upstream chunks")
    #: One attachment's upload (kimi-free-api gave the PUT 120 s; a 32 MB PDF on a slow uplink needs it).
    upload_s: float = setting("KIMI_UPLOAD_TIMEOUT_S", 120.0, "one attachment's upload to Kimi")
    #: Kimi reads a small image in about a second and a long PDF in tens (kimi-web-2026.md §6 caps it ~60 s).
    parse_s: float = setting("KIMI_PARSE_TIMEOUT_S", 60.0, "Kimi reading an uploaded file, then 504")

    def first_byte_for(self, is_agent: bool) -> float:
        return self.agent_first_byte_s if is_agent else self.first_byte_s


_MB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class AttachmentSettings(SettingsGroup):
    """Images and documents the gateway takes in (tools-and-attachments.md §5.2–§5.3, §8)."""

    #: Loopback / private addresses the URL fetcher may reach anyway (tests, intranets): `host:port`, `host`
    #: or CIDR entries; empty, every such address is refused.
    fetch_allow: tuple[str, ...] = setting(
        "ATTACHMENT_FETCH_ALLOW", (), "host:port, host or CIDR the fetcher may reach although private"
    )
    #: Within all three APIs' documented limits: OpenAI 20 MB per image, Anthropic 32 MB per PDF request.
    max_image_bytes: int = setting("ATTACHMENT_MAX_IMAGE_BYTES", 20 * _MB, "largest image, decoded")
    max_file_bytes: int = setting("ATTACHMENT_MAX_FILE_BYTES", 32 * _MB, "largest document, decoded")
    #: OpenAI allows 50 MB of image bytes per request.
    max_request_bytes: int = setting(
        "ATTACHMENT_MAX_REQUEST_BYTES", 50 * _MB, "all attachments of one request, decoded"
    )
    max_count: int = setting("ATTACHMENT_MAX_COUNT", 20, "attachments in one request")
    #: A whole URL fetch, redirects included (connect 5 s of it at most).
    fetch_timeout_s: float = setting("ATTACHMENT_FETCH_TIMEOUT_S", 30.0, "one attachment URL fetch in all")


@dataclass(frozen=True, slots=True)
class GatewaySettings(SettingsGroup):
    common: CommonSettings = dataclasses.field(default_factory=CommonSettings)
    pool: PoolSettings = dataclasses.field(default_factory=PoolSettings)
    attachments: AttachmentSettings = dataclasses.field(default_factory=AttachmentSettings)
    #: Loopback unless told otherwise: an open gateway (no GATEWAY_API_KEYS) is for one user on this machine.
    host: str = setting("GATEWAY_HOST", "127.0.0.1", "the gateway's bind address (0.0.0.0: every interface)")
    port: int = setting("GATEWAY_PORT", 8000, "the gateway's port")
    api_keys: tuple[Secret, ...] = setting(
        "GATEWAY_API_KEYS", (), "comma-separated client keys; unset = open gateway"
    )
    #: Accept `Bearer <kimi token>[,<kimi token>…]` from clients as ephemeral accounts: `auto` (only while
    #: no client key exists, static or managed), `true` or `false`.
    allow_passthrough: str = setting(
        "ALLOW_PASSTHROUGH_TOKENS",
        "auto",
        "serve clients that bring their own Kimi tokens: auto (only without client keys), true, false",
        normalize=lambda raw: _tristate("ALLOW_PASSTHROUGH_TOKENS", raw),
    )
    #: /metrics names accounts and models: besides loopback callers, only these networks (or a caller with the
    #: admin key) may read it. Compose sets the private ranges its Prometheus scrapes from.
    metrics_allow: tuple[str, ...] = setting(
        "METRICS_ALLOW", (), "CIDRs that may read /metrics without the admin key (loopback always may)"
    )
    #: Origins whose web pages may call the public API routes from a browser ("*": any). Empty by default: an
    #: open gateway on loopback would otherwise serve any website its visitor opens (docs/SECURITY.md, CORS).
    cors_allow_origins: tuple[str, ...] = setting(
        "CORS_ALLOW_ORIGINS",
        (),
        "origins (scheme://host[:port]) that may call the public API from a browser, or *; empty: none",
        normalize=lambda origins: tuple(o.rstrip("/") for o in origins),
    )
    max_body_bytes: int = setting("MAX_BODY_BYTES", 32 * 1024 * 1024, "largest request body")
    #: Overall deadline of one request, queue wait included.
    request_timeout_s: float = setting("REQUEST_TIMEOUT_S", 600.0, "overall deadline of one request")
    #: Longest silence from the worker (no event, no keep-alive) before the gateway gives up.
    idle_timeout_s: float = setting("IDLE_TIMEOUT_S", 120.0, "longest silence from the worker")
    #: SSE keep-alive period while waiting for the first token (client-formats.md §4: ≤ 15 s).
    keepalive_interval_s: float = setting("KEEPALIVE_INTERVAL_S", 10.0, "SSE keep-alive period")
    #: Jobs queued or running (XLEN kimi:jobs: workers delete what they ack) past which new requests are
    #: refused with 429 + Retry-After; nothing queued is ever trimmed to make room.
    jobs_backlog_max: int = setting(
        "JOBS_BACKLOG_MAX", 10_000, "jobs queued or running before new requests get 429"
    )
    #: Body capture in the request log (shared/client_keys.py): 0 = off (the default: no text is ever stored);
    #: N = the last user message and the answer, secrets redacted, each cut to N characters.
    request_log_body_chars: int = setting(
        "REQUEST_LOG_BODY_CHARS", 0, "request log body capture: 0 = off, N = redacted text capped at N chars"
    )
    #: How long a stored Responses API response (`store`, the default) can be read or continued; its kept Kimi
    #: chat is swept (deleted) by the workers once it has lapsed (upstream_worker/sweeper.py).
    stored_response_ttl_s: float = setting(
        "STORED_RESPONSE_TTL_S",
        keys.STORED_RESPONSE_TTL_S,
        "seconds a stored Responses API response lives; its kept Kimi chat is deleted after it",
    )
    #: A worker heartbeat older than this does not count for /readyz.
    #: The admin API lives in the token service; the gateway forwards /auth/*, /admin/* and /token/check there.
    token_service_url: str = setting(
        "TOKEN_SERVICE_URL",
        "http://127.0.0.1:8001",
        "the token service the gateway forwards admin routes to",
        normalize=lambda url: url.rstrip("/"),
    )

    def passthrough_enabled(self, managed_keys: bool = False) -> bool:
        """Pass-through is on when asked for, or (auto) while the gateway has no client keys: neither
        GATEWAY_API_KEYS nor managed keys in Redis (`managed_keys`, which the caller looked up)."""
        if self.allow_passthrough == "auto":
            return not self.api_keys and not managed_keys
        return self.allow_passthrough == "true"


@dataclass(frozen=True, slots=True)
class TokenServiceSettings(SettingsGroup):
    common: CommonSettings = dataclasses.field(default_factory=CommonSettings)
    pool: PoolSettings = dataclasses.field(default_factory=PoolSettings)
    host: str = setting("TOKEN_SERVICE_HOST", "127.0.0.1", "the token service's bind address")
    port: int = setting("TOKEN_SERVICE_PORT", 8001, "the token service's port")
    #: Admin bodies are token lists: a megabyte is thousands of tokens.
    max_body_bytes: int = 1024 * 1024


@dataclass(frozen=True, slots=True)
class WorkerSettings(SettingsGroup):
    common: CommonSettings = dataclasses.field(default_factory=CommonSettings)
    pool: PoolSettings = dataclasses.field(default_factory=PoolSettings)
    timeouts: UpstreamTimeouts = dataclasses.field(default_factory=UpstreamTimeouts)
    host: str = setting("WORKER_HOST", "127.0.0.1", "the worker's /metrics bind address")
    metrics_port: int = setting("WORKER_METRICS_PORT", 8002, "the worker's /metrics and /healthz port")
    concurrency: int = setting("WORKER_CONCURRENCY", 32, "concurrent jobs per worker process")
    consumer_name: str = setting(
        "WORKER_NAME", doc="consumer name (default hostname-pid)", default_factory=_default_consumer_name
    )
    #: A pending job idle this long belongs to a dead consumer (live workers touch their jobs more often).
    claim_idle_ms: int = setting("WORKER_CLAIM_IDLE_MS", 30_000, "a pending job idle this long is reclaimed")
    max_deliveries: int = setting("WORKER_MAX_DELIVERIES", 3, "deliveries before a job is dead-lettered")
    max_attempts: int = setting("WORKER_MAX_ATTEMPTS", 3, "accounts tried before the first token, per job")
    heartbeat_interval_s: float = setting("WORKER_HEARTBEAT_INTERVAL_S", 5.0, "heartbeat period")
    #: Which upstream serves a model when both web accounts and API keys can (upstream_worker/routing.py).
    upstream_policy: str = setting(
        "UPSTREAM_POLICY",
        "web_first",
        "web_first, keys_first, web_only or keys_only",
        normalize=_policy,
    )
    upstream_policy_models: tuple[str, ...] = setting(
        "UPSTREAM_POLICY_MODELS",
        (),
        "per-model policies, e.g. moonshot-v1-*=keys_first,kimi-k2.7-code=keys_only (first match wins)",
        normalize=_model_policies,
    )
    #: How long a job waits in the pool's first-come-first-served line while every account it may use is at
    #: its cap; then it ends with 429 + Retry-After. The client hears nothing meanwhile (the status is not
    #: committed), so keep it well under IDLE_TIMEOUT_S and the proxies' read timeouts.
    queue_wait_s: float = setting("QUEUE_WAIT_S", 30.0, "longest wait for a free account before a 429")
    #: Places one client (a client key) may hold in the waiting line; past it its requests get 429 at once.
    queue_client_max: int = setting(
        "QUEUE_CLIENT_MAX", 64, "requests of one client key that may wait for an account"
    )
    #: While a job waits for Kimi's first event, a Keepalive goes on its reply stream this often, so the
    #: gateway's IDLE_TIMEOUT_S (120 s) measures real silence only; keep it at most a quarter of that.
    keepalive_interval_s: float = setting(
        "WORKER_KEEPALIVE_INTERVAL_S", 10.0, "keep-alive period before the first token"
    )
    #: How often each worker deletes the Kimi chats of stored responses that have lapsed (`kimi:chats:sweep`);
    #: a minute keeps the sweep's Redis reads negligible, and a chat outlives its response by about that much.
    chat_sweep_interval_s: float = setting(
        "CHAT_SWEEP_INTERVAL_S",
        60.0,
        "seconds between sweeps of the Kimi chats kept for lapsed stored responses; 0 turns the sweeper off",
    )


SERVICE_SETTINGS: tuple[type[SettingsGroup], ...] = (GatewaySettings, TokenServiceSettings, WorkerSettings)


def declared_settings() -> Iterator[Declared]:
    """Every environment variable any service reads, once each, in declaration order."""
    seen: set[str] = set()
    for group in _groups(SERVICE_SETTINGS):
        for f in dataclasses.fields(group):  # type: ignore[arg-type]
            name = f.metadata.get("env")
            if name and name not in seen:
                seen.add(name)
                default = f.default if f.default_factory is dataclasses.MISSING else f.default_factory()
                yield Declared(name, default, f.metadata.get("doc", ""), group.__name__)


def _groups(roots: tuple[type[SettingsGroup], ...]) -> Iterator[type[SettingsGroup]]:
    for root in roots:
        hints = get_type_hints(root)
        for f in dataclasses.fields(root):  # type: ignore[arg-type]
            hint = hints[f.name]
            if isinstance(hint, type) and issubclass(hint, SettingsGroup):
                yield from _groups((hint,))
        yield root
