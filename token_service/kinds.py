"""The one registry of account kinds, and the states every account moves through.

A kind is everything the system must know about one sort of upstream credential (one `Kind` row in `KINDS`):
    recognize      pasted text → a credential of this kind, or None (the forms README lists: bare, `Bearer …`,
                   a whole Cookie header, URL-encoded, a name/value export)
    bearer_shape   whether one part of a client's `Bearer T1,T2` is meant as this kind's credential (pass-through)
    refresh        how the credential becomes a short-lived bearer, or None: it is the bearer itself
    probe          one cheap authenticated call, given the credential and the bearer to present
    protocol_for   which upstream protocol serves a model with an account of this kind, None when it cannot
    limits         per-account concurrency cap and cooldowns, from the pool settings
    upstream       its public name, the class routing chooses between: "kimi_web" or "api_key"
Credentials are a msgspec tagged union (`Credential`) tagged by the kind's name; an account hash stores its one
credential sealed as that JSON. Nothing outside this module compares a kind's name: code asks the registry.

Two kinds are Kimi web JWTs, told apart by their payload (kimi-web-rest.md §2.1, kimi-web-connect.md §4.2):
    kimi_auth       typ=access, app_id=kimi: itself the Bearer of the Connect API
    refresh_token   typ=refresh: exchanged for a short-lived access token (GET /api/auth/token/refresh)
the third is an official Open Platform key (moonshot-official-api.md; pasted forms in token_service/api_keys.py):
    api_key         `sk-…` with the base URL of its platform: the Bearer of the official API; never pass-through
A new kind is its credential struct (added to `Credential`), its functions and one `Kind(...)` row
(docs/ARCHITECTURE.md, "Recipes"; details in docs/INTERNALS.md, "Add an upstream kind").
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, Literal, Self, TypeVar, get_args

import msgspec

from shared.errors import BadRequest, ServiceUnavailable
from shared.models import ModelSpec
from shared.settings import PoolSettings
from token_service import api_keys
from token_service.jwt_info import account_id_for, decode_claims, extract_jwt, iso, looks_like_jwt
from token_service.kimi_auth import KimiAuthClient
from token_service.regions import region_of

# -- states -------------------------------------------------------------------------------------------------

AccountState = Literal["active", "cooling", "invalid", "expired", "disabled"]
#: Every state, in the order the admin API and the metrics list them.
STATES: tuple[AccountState, ...] = get_args(AccountState)
#: States a worker's outcome may move an account out of: a disabled or invalid one is never revived by it.
IN_SERVICE: tuple[AccountState, ...] = ("active", "cooling")

#: Why an account cools down; each kind says for how long when Kimi gave no Retry-After.
CoolReason = Literal["rate_limited", "quota", "overloaded"]
COOL_REASONS: tuple[CoolReason, ...] = get_args(CoolReason)

#: A kind's public name: what routing chooses between, the `x-upstream-kind` header and the metrics' `kind`.
Upstream = Literal["kimi_web", "api_key"]
UPSTREAMS: tuple[Upstream, ...] = get_args(Upstream)

# -- credentials --------------------------------------------------------------------------------------------


class Identity(msgspec.Struct, frozen=True):
    """What the pool keeps in the clear about an account (never its secret)."""

    #: Short, stable and non-secret: it appears in logs and metric labels.
    account_id: str
    user_id: str = ""
    exp: int | None = None
    iat: int | None = None
    #: Kimi's per-device ids; empty when the credential carries none (the store then draws stable ones).
    device_id: str = ""
    session_id: str = ""
    #: The Kimi region the credential names (token_service/regions.py), "" when it names none.
    region: str = ""


class CredentialBase(msgspec.Struct, frozen=True, tag_field="kind", forbid_unknown_fields=True):
    """Base of every kind's credential; the tag is the kind's name."""

    @property
    def secret(self) -> str:
        """The one string an upstream sees (a bearer, or what a refresh exchanges); never logged."""
        raise NotImplementedError

    def identity(self) -> Identity:
        raise NotImplementedError

    def origin(self) -> str | None:
        """Where calls as this account go; None: KIMI_BASE_URL (a kind with its own host overrides this)."""
        return None

    def with_defaults(self, settings: PoolSettings) -> Self:
        """The credential as it is stored: what the pasted text left out filled from the settings."""
        return self


class _KimiJwt(CredentialBase, frozen=True):
    token: str

    @property
    def secret(self) -> str:
        return self.token

    def identity(self) -> Identity:
        claims = decode_claims(self.token)
        return Identity(
            account_id=account_id_for(self.token, claims),
            user_id=claims.sub,
            exp=claims.exp,
            iat=claims.iat,
            device_id=claims.device_id,
            session_id=claims.ssid,
            region=region_of(claims) or "",
        )


class KimiAuthCredential(_KimiJwt, tag="kimi_auth", frozen=True):
    """The `kimi-auth` cookie of www.kimi.com: an access JWT used as the Connect API's Bearer."""


class RefreshTokenCredential(_KimiJwt, tag="refresh_token", frozen=True):
    """Kimi's `refresh_token`: exchanged for short-lived access tokens, and rotated by Kimi now and then."""


class ApiKeyCredential(CredentialBase, tag="api_key", frozen=True):
    """An official Open Platform key and the base URL of its platform (keys are regional: §1)."""

    key: str
    #: `https://api.moonshot.ai` or `https://api.moonshot.cn` (or a stand-in); "" until `with_defaults`.
    base_url: str = ""

    @property
    def secret(self) -> str:
        return self.key

    def identity(self) -> Identity:
        # Another namespace than the JWT kinds' ids; the same key on another base URL is the same account.
        return Identity(account_id=hashlib.sha256(f"api_key:{self.key}".encode()).hexdigest()[:12])

    def origin(self) -> str | None:
        return self.base_url or None

    def with_defaults(self, settings: PoolSettings) -> Self:
        return self if self.base_url else msgspec.structs.replace(self, base_url=settings.moonshot_base_url)


Credential = KimiAuthCredential | RefreshTokenCredential | ApiKeyCredential

_credential_encoder = msgspec.json.Encoder()
_credential_decoder = msgspec.json.Decoder(Credential)


def encode_credential(credential: Credential) -> str:
    return _credential_encoder.encode(credential).decode()


def decode_credential(stored: str, kind_name: str) -> Credential:
    """A credential as the store keeps it: tagged JSON, or (written before the union) the bare token of
    `kind_name`, which its kind's `from_bare_secret` reads."""
    if stored.startswith("{"):
        try:
            return _credential_decoder.decode(stored)
        except msgspec.ValidationError:
            raise ServiceUnavailable(f"a stored {kind_name} credential is of a kind not known here") from None
    bare = kind_named(kind_name).from_bare_secret
    if bare is None:
        raise ServiceUnavailable(f"a stored {kind_name} credential is not in the tagged layout")
    credential: Credential = bare(stored)
    return credential


# -- what kinds do ------------------------------------------------------------------------------------------

C = TypeVar("C", bound=CredentialBase)
J = TypeVar("J", bound=_KimiJwt)


@dataclass(frozen=True, slots=True)
class Refreshed(Generic[C]):
    """A refresh's answer: the short-lived bearer, its expiry, and the credential Kimi rotated to, if any."""

    access_token: str
    access_exp: int
    rotated: C | None = None


@dataclass(frozen=True, slots=True)
class Limits:
    """How hard one account of a kind may be used."""

    #: Leases held at once by one account.
    max_in_flight: int
    #: Cooling time per reason when the upstream gave no Retry-After.
    cooldown_s: Mapping[CoolReason, float]


@dataclass(frozen=True, slots=True)
class Kind(Generic[C]):
    """One upstream kind of account; see the module docstring for what each field means."""

    name: str
    #: How an error message lists it among the accepted credentials.
    label: str
    credential_type: type[C]
    recognize: Callable[[str], C | None]
    bearer_shape: Callable[[str], bool]
    #: None: the credential is itself the bearer, and a 401 makes the account invalid at once.
    refresh: Callable[[KimiAuthClient, C], Awaitable[Refreshed[C]]] | None
    #: (client, credential, bearer) → None, or a `shared.errors.UpstreamError`.
    probe: Callable[[KimiAuthClient, C, str], Awaitable[None]]
    #: The protocol an account of this kind speaks for a model; None: it cannot serve that model.
    protocol_for: Callable[[ModelSpec], str | None]
    limits: Callable[[PoolSettings], Limits]
    upstream: Upstream
    #: How a secret stored before credentials were tagged reads (only kinds that existed then have one).
    from_bare_secret: Callable[[str], C] | None = None

    @property
    def refreshes(self) -> bool:
        return self.refresh is not None


# -- today's kinds: Kimi web JWTs ---------------------------------------------------------------------------

#: Only for an access token that carries no `exp` at all; real tokens always say how long they live.
FALLBACK_ACCESS_TTL_S = 300


def _jwt_recognizer(cls: type[J], typ: str, app_id: str | None = None) -> Callable[[str], J | None]:
    """A Kimi JWT, pasted in any form `extract_jwt` knows, whose payload has this `typ` (and `app_id`)."""

    def recognize(text: str) -> J | None:
        token = extract_jwt(text) or text.strip()
        try:
            claims = decode_claims(token)
        except BadRequest:
            return None
        if claims.typ != typ or (app_id is not None and claims.app_id != app_id):
            return None
        return cls(token)

    return recognize


async def _probe_connect(auth: KimiAuthClient, credential: KimiAuthCredential, bearer: str) -> None:
    await auth.probe_connect(bearer)


async def _probe_rest(auth: KimiAuthClient, credential: RefreshTokenCredential, bearer: str) -> None:
    await auth.probe_rest(bearer)


async def _refresh(
    auth: KimiAuthClient, credential: RefreshTokenCredential
) -> Refreshed[RefreshTokenCredential]:
    result = await auth.refresh(credential.token)
    rotated = result.refresh_token if result.refresh_token not in (None, credential.token) else None
    return Refreshed(
        access_token=result.access_token,
        access_exp=_exp_of(result.access_token),
        rotated=RefreshTokenCredential(rotated) if rotated else None,
    )


def _exp_of(access_token: str) -> int:
    try:
        exp = decode_claims(access_token).exp
    except BadRequest:
        exp = None
    return exp if exp is not None else int(time.time()) + FALLBACK_ACCESS_TTL_S


def _web_limits(settings: PoolSettings) -> Limits:
    """Kimi's web chat: ACCOUNT_MAX_CONCURRENCY streams per account (Kimi allows one per user)."""
    return Limits(
        max_in_flight=max(1, settings.max_concurrency_per_account),
        cooldown_s={
            "rate_limited": settings.cooldown_429_s,
            "quota": settings.quota_window_s,
            "overloaded": settings.cooldown_overload_s,
        },
    )


def _always_connect(spec: ModelSpec) -> str | None:
    """A kimi-auth token has no refresh token to reach the REST API with: every web model goes over Connect."""
    return "connect" if spec.web else None


def _model_protocol(spec: ModelSpec) -> str | None:
    """The model's web lane; a model only the official API serves has none."""
    return spec.protocol if spec.web else None


KIMI_AUTH: Kind[KimiAuthCredential] = Kind(
    name="kimi_auth",
    label="a kimi-auth (typ=access, app_id=kimi)",
    credential_type=KimiAuthCredential,
    recognize=_jwt_recognizer(KimiAuthCredential, "access", app_id="kimi"),
    bearer_shape=looks_like_jwt,
    refresh=None,
    probe=_probe_connect,
    protocol_for=_always_connect,
    limits=_web_limits,
    upstream="kimi_web",
    from_bare_secret=KimiAuthCredential,
)

REFRESH_TOKEN: Kind[RefreshTokenCredential] = Kind(
    name="refresh_token",
    label="a refresh_token (typ=refresh)",
    credential_type=RefreshTokenCredential,
    recognize=_jwt_recognizer(RefreshTokenCredential, "refresh"),
    bearer_shape=looks_like_jwt,
    refresh=_refresh,
    probe=_probe_rest,
    protocol_for=_model_protocol,
    limits=_web_limits,
    upstream="kimi_web",
    from_bare_secret=RefreshTokenCredential,
)

# -- official API keys ----------------------------------------------------------------------------------------


def _recognize_key(text: str) -> ApiKeyCredential | None:
    form = api_keys.parse(text)
    return ApiKeyCredential(form.key, form.base_url) if form is not None else None


def _never_passthrough(part: str) -> bool:
    """Many clients send a dummy `sk-…` key to an open gateway: a client's key is never taken for an account."""
    return False


async def _probe_key(auth: KimiAuthClient, credential: ApiKeyCredential, bearer: str) -> None:
    await api_keys.probe(auth.session, credential.base_url or api_keys.REGIONS["global"], bearer)


def _api_protocol(spec: ModelSpec) -> str | None:
    return "moonshot" if spec.api is not None else None


def _key_limits(settings: PoolSettings) -> Limits:
    """The key's tier caps its concurrency; the API's 429s name their wait, which wins over these."""
    return Limits(
        max_in_flight=max(1, settings.api_key_max_concurrency),
        cooldown_s={
            "rate_limited": settings.api_key_cooldown_429_s,
            "quota": settings.api_key_quota_cooldown_s,
            "overloaded": settings.cooldown_overload_s,
        },
    )


API_KEY: Kind[ApiKeyCredential] = Kind(
    name="api_key",
    label="an official API key (sk-…)",
    credential_type=ApiKeyCredential,
    recognize=_recognize_key,
    bearer_shape=_never_passthrough,
    refresh=None,
    probe=_probe_key,
    protocol_for=_api_protocol,
    limits=_key_limits,
    upstream="api_key",
)

#: Every kind, in the order pasted text is tried against them.
KINDS: tuple[Kind[Any], ...] = (KIMI_AUTH, REFRESH_TOKEN, API_KEY)

# -- lookups ------------------------------------------------------------------------------------------------

_BY_NAME: dict[str, Kind[Any]] = {kind.name: kind for kind in KINDS}
_BY_TYPE: dict[type[CredentialBase], Kind[Any]] = {kind.credential_type: kind for kind in KINDS}


def kind_named(name: str) -> Kind[Any]:
    """The kind of an account hash's `kind` field; ServiceUnavailable for one this process does not know."""
    kind = _BY_NAME.get(name)
    if kind is None:
        raise ServiceUnavailable(f"account kind {name!r} is not known to this process")
    return kind


def is_known(name: str) -> bool:
    return name in _BY_NAME


def kind_of(credential: Credential) -> Kind[Any]:
    return _BY_TYPE[type(credential)]


def recognize(text: str) -> Credential:
    """The credential in pasted text, whichever kind it is; BadRequest (param `token`) when none matches."""
    for kind in KINDS:
        credential: Credential | None = kind.recognize(text)
        if credential is not None:
            return credential
    raise _refusal(text)


def admit(text: str, now: float | None = None) -> Credential:
    """`recognize`, and refuse a credential whose `exp` has already passed."""
    credential = recognize(text)
    exp = credential.identity().exp
    if exp is not None and exp <= (time.time() if now is None else now):
        raise BadRequest(f"token is already expired (exp {iso(exp)})", param="token")
    return credential


def name_of(text: str) -> str | None:
    """The kind of pasted text, or None when no kind recognises it."""
    for kind in KINDS:
        if kind.recognize(text) is not None:
            return kind.name
    return None


def is_credential_shaped(part: str) -> bool:
    """Whether one part of a client's `Bearer T1,T2` is meant as an upstream credential of some kind."""
    return any(kind.bearer_shape(part) for kind in KINDS)


def protocol_for(kind_name: str, spec: ModelSpec) -> str:
    """The upstream protocol an account of this kind speaks for this model (the worker's driver key);
    ServiceUnavailable when the kind cannot serve the model (the lease's kinds filter keeps that from
    happening)."""
    protocol = kind_named(kind_name).protocol_for(spec)
    if protocol is None:
        raise ServiceUnavailable(f"an account of kind {kind_name!r} cannot serve the model {spec.id!r}")
    return protocol


def upstream_of(kind_name: str) -> Upstream | None:
    """The public name of a kind (`kimi_web`, `api_key`); None for a kind this process does not know."""
    kind = _BY_NAME.get(kind_name)
    return kind.upstream if kind is not None else None


def kinds_serving(spec: ModelSpec) -> dict[Upstream, frozenset[str]]:
    """For each public upstream, the names of the kinds whose accounts can serve the model (maybe none)."""
    return {
        upstream: frozenset(
            kind.name for kind in KINDS if kind.upstream == upstream and kind.protocol_for(spec) is not None
        )
        for upstream in UPSTREAMS
    }


def max_in_flight(settings: PoolSettings) -> dict[str, int]:
    """Each kind's per-account concurrency cap, as the lease scripts take it (a kind absent here is never
    leased by this process)."""
    return {kind.name: kind.limits(settings).max_in_flight for kind in KINDS}


def _refusal(text: str) -> BadRequest:
    """Why no kind took the text: an API key's defect, the JWT's own, else its type against every kind."""
    key_defect = api_keys.defect(text)
    if key_defect is not None:
        return BadRequest(key_defect, param="token")
    token = extract_jwt(text) or text.strip()
    try:
        claims = decode_claims(token)
    except BadRequest as exc:
        return exc
    accepted = " or ".join(kind.label for kind in KINDS)
    return BadRequest(f"unsupported token type {claims.typ!r}: expected {accepted}", param="token")
