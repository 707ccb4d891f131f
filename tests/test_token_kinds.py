"""The account-kind registry (token_service/kinds.py): recognition, admission, credentials, protocols, caps.

Pure tests (no I/O), plus one scan of the source that pins the registry's promise: no code outside it
compares a kind's name.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from urllib.parse import quote

import jwt
import pytest

from shared.errors import AuthenticationFailed, BadRequest, ServiceUnavailable
from shared.models import listed_models, resolve_model
from shared.settings import PoolSettings
from token_service.client import check_passthrough, passthrough_tokens, protocol_for
from token_service.jwt_info import decode_claims
from token_service.kinds import (
    API_KEY,
    KIMI_AUTH,
    KINDS,
    REFRESH_TOKEN,
    STATES,
    ApiKeyCredential,
    Identity,
    KimiAuthCredential,
    RefreshTokenCredential,
    admit,
    decode_credential,
    encode_credential,
    kind_named,
    kind_of,
    kinds_serving,
    max_in_flight,
    name_of,
    recognize,
    upstream_of,
)

ROOT = Path(__file__).resolve().parent.parent
NOW = 1_800_000_000


def mint(**claims: object) -> str:
    return jwt.encode(claims, "k" * 64, algorithm="HS512")


ACCESS = mint(
    typ="access",
    app_id="kimi",
    sub="d4t8j3es1rh1oljov7g0",
    jti="j1",
    iat=NOW,
    exp=NOW + 7200,
    device_id="7586915550627013133",
    ssid="1731469129988841572",
)
REFRESH = mint(typ="refresh", sub="d4t8j3es1rh1oljov7g0", jti="j2", iat=NOW, exp=NOW + 90 * 86400)
ACCEPTED = (
    "expected a kimi-auth (typ=access, app_id=kimi) or a refresh_token (typ=refresh) "
    "or an official API key (sk-…)"
)


def pasted_forms(token: str, cookie: str) -> list[str]:
    """Every form README lists for pasting a token: bare, `Bearer …`, a whole Cookie header, URL-encoded,
    a browser's name/value export and a JSON export."""
    return [
        token,
        f"  {token}\n",
        f"Bearer {token}",
        f"Cookie: _ga=GA1.1; {cookie}={token}; theme=dark",
        f"{cookie}={quote(token, safe='')}",
        f"Cookie: {cookie}={quote(token, safe='')}",
        f"_ga\tGA1.1\n{cookie}\t{token}\ntheme\tdark",
        f'{{"{cookie}": "{token}"}}',
    ]


@pytest.mark.parametrize("pasted", pasted_forms(ACCESS, "kimi-auth"))
def test_a_kimi_auth_is_recognised_in_every_pasted_form(pasted: str) -> None:
    """A kimi-auth JWT pasted in any README form is the kimi_auth credential of exactly that token."""
    assert recognize(pasted) == KimiAuthCredential(ACCESS)
    assert name_of(pasted) == "kimi_auth"


@pytest.mark.parametrize("pasted", pasted_forms(REFRESH, "refresh_token"))
def test_a_refresh_token_is_recognised_in_every_pasted_form(pasted: str) -> None:
    """A refresh_token JWT pasted in any README form is the refresh_token credential of exactly that token."""
    assert recognize(pasted) == RefreshTokenCredential(REFRESH)
    assert name_of(pasted) == "refresh_token"


@pytest.mark.parametrize(
    ("pasted", "message"),
    [
        ("hello", "not a JWT: expected three dot-separated parts"),
        ("session=abc; theme=dark", "not a JWT: expected three dot-separated parts"),
        ("a.b.c", "not a JWT: the payload does not decode"),
        ("eyJhbGciOiJIUzUxMiJ9.bm90IGpzb24.sig", "not a JWT: the payload does not decode"),
        (mint(typ="id", sub="x"), f"unsupported token type 'id': {ACCEPTED}"),
        (mint(typ="access", app_id="other", sub="x"), f"unsupported token type 'access': {ACCEPTED}"),
        (f"Cookie: kimi-auth={mint(sub='x')}", f"unsupported token type '': {ACCEPTED}"),
    ],
)
def test_an_unknown_credential_is_a_clear_bad_request(pasted: str, message: str) -> None:
    """Text no kind recognises raises BadRequest (400, param `token`) saying what is wrong and what is accepted."""
    with pytest.raises(BadRequest) as caught:
        recognize(pasted)
    assert (caught.value.message, caught.value.param, caught.value.status) == (message, "token", 400)
    assert name_of(pasted) is None


def test_admission_refuses_an_expired_credential_saying_when() -> None:
    """admit() takes a live credential and refuses one whose exp has passed, with its expiry in ISO form."""
    assert admit(ACCESS, now=NOW + 7199) == KimiAuthCredential(ACCESS)
    with pytest.raises(BadRequest, match=r"^token is already expired \(exp 2027-01-15T10:00:00Z\)$"):
        admit(ACCESS, now=NOW + 7200)


def test_admission_uses_the_clock_by_default() -> None:
    """Without `now`, a token valid for another minute is admitted with its kind and exp."""
    token = mint(typ="refresh", sub="u", jti="j", exp=int(time.time()) + 60)
    credential = admit(token)
    assert (kind_of(credential).name, credential.identity().exp) == (
        "refresh_token",
        decode_claims(token).exp,
    )


def test_a_credential_knows_its_identity_and_never_shows_its_secret_in_the_id() -> None:
    """identity(): 12-hex stable id, user, expiry and Kimi's device / session ids from the JWT claims."""
    identity = KimiAuthCredential(ACCESS).identity()
    assert identity == Identity(
        account_id=identity.account_id,
        user_id="d4t8j3es1rh1oljov7g0",
        exp=NOW + 7200,
        iat=NOW,
        device_id="7586915550627013133",
        session_id="1731469129988841572",
    )
    assert re.fullmatch(r"[0-9a-f]{12}", identity.account_id) and identity.account_id not in ACCESS
    assert RefreshTokenCredential(REFRESH).identity().device_id == ""


def test_credentials_are_a_tagged_union_and_bare_tokens_of_before_still_read() -> None:
    """The stored form is JSON tagged by the kind's name; a bare token stored before reads by the hash's kind."""
    stored = encode_credential(RefreshTokenCredential(REFRESH))
    assert stored == f'{{"kind":"refresh_token","token":"{REFRESH}"}}'
    assert decode_credential(stored, "kimi_auth") == RefreshTokenCredential(REFRESH)  # the tag decides
    assert decode_credential(ACCESS, "kimi_auth") == KimiAuthCredential(ACCESS)
    assert decode_credential(REFRESH, "refresh_token") == RefreshTokenCredential(REFRESH)


def test_protocol_per_kind_and_model() -> None:
    """kimi_auth speaks Connect for every model; refresh_token speaks each model's own protocol."""
    rest, connect = resolve_model("kimi"), resolve_model("kimi-k2.5-thinking")
    assert rest is not None and connect is not None
    assert (rest.protocol, connect.protocol) == ("rest", "connect")
    assert protocol_for("kimi_auth", rest) == "connect"
    assert protocol_for("kimi_auth", connect) == "connect"
    assert protocol_for("refresh_token", rest) == "rest"
    assert protocol_for("refresh_token", connect) == "connect"
    for spec in listed_models():
        if spec.web:
            assert (protocol_for("kimi_auth", spec), protocol_for("refresh_token", spec)) == (
                "connect",
                spec.protocol,
            )


def test_each_kind_says_whether_it_refreshes_and_its_caps() -> None:
    """Only refresh_token refreshes; both web kinds cap an account at ACCOUNT_MAX_CONCURRENCY (at least 1)."""
    assert [(kind.name, kind.refreshes) for kind in KINDS] == [
        ("kimi_auth", False),
        ("refresh_token", True),
        ("api_key", False),
    ]
    assert max_in_flight(PoolSettings()) == {"kimi_auth": 1, "refresh_token": 1, "api_key": 1}
    assert max_in_flight(PoolSettings(max_concurrency_per_account=3, api_key_max_concurrency=5)) == {
        "kimi_auth": 3,
        "refresh_token": 3,
        "api_key": 5,
    }
    assert max_in_flight(PoolSettings(max_concurrency_per_account=0, api_key_max_concurrency=0)) == {
        "kimi_auth": 1,
        "refresh_token": 1,
        "api_key": 1,
    }
    limits = REFRESH_TOKEN.limits(PoolSettings(cooldown_429_s=7, quota_window_s=8, cooldown_overload_s=9))
    assert dict(limits.cooldown_s) == {"rate_limited": 7, "quota": 8, "overloaded": 9}
    assert kind_named("kimi_auth") is KIMI_AUTH and kind_of(RefreshTokenCredential(REFRESH)) is REFRESH_TOKEN
    assert STATES == ("active", "cooling", "invalid", "expired", "disabled")


def test_passthrough_bearers_are_credential_shaped_parts() -> None:
    """`Bearer T1,T2` is pass-through when every part is credential-shaped; a client key is not."""
    assert passthrough_tokens(f"{ACCESS}, {REFRESH}") == [ACCESS, REFRESH]
    assert passthrough_tokens(f"{ACCESS},") == [ACCESS]
    assert passthrough_tokens("sk-client-key") is None
    assert passthrough_tokens(f"{ACCESS},sk-client-key") is None
    assert passthrough_tokens(" , ") is None


def test_passthrough_check_names_the_bad_token() -> None:
    """check_passthrough answers each token's credential, or 401 naming the position of the first bad one."""
    live = mint(typ="access", app_id="kimi", sub="u", jti="j", exp=int(time.time()) + 60)
    assert check_passthrough([live]) == [KimiAuthCredential(live)]
    with pytest.raises(AuthenticationFailed) as caught:
        check_passthrough([live, mint(typ="id")])
    assert (caught.value.message, caught.value.status) == (
        f"pass-through token 2 of 2: unsupported token type 'id': {ACCEPTED}",
        401,
    )


#: `== "kimi_auth"`, `!= 'refresh_token'`, `in ("kimi_auth", …)`, `case "refresh_token":`, … on a kind's name.
_KIND_COMPARISON = re.compile(
    r"""(?:[=!]=\s*|\bin\s*[(\[{][^)\]}]*|\bcase\s+)["'](?:kimi_auth|refresh_token|api_key)["']"""
    r"""|["'](?:kimi_auth|refresh_token|api_key)["']\s*(?:[=!]=|\bin\b)"""
)


def test_no_code_outside_the_registry_compares_a_kind() -> None:
    """Outside token_service/kinds.py no service module compares an account kind's name (the simulator aside)."""
    offenders = []
    for package in ("gateway", "token_service", "upstream_worker", "adapters", "shared", "deploy"):
        for path in sorted((ROOT / package).rglob("*.py")):
            if path == ROOT / "token_service" / "kinds.py":
                continue
            for number, line in enumerate(path.read_text().splitlines(), start=1):
                if _KIND_COMPARISON.search(line):
                    offenders.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert offenders == []
    assert _KIND_COMPARISON.search('if kind == "kimi_auth":') and _KIND_COMPARISON.search(
        "case 'refresh_token':"
    )


# -- official API keys ----------------------------------------------------------------------------------------

KEY = "sk-" + "Ab3_" * 12
CN = "https://api.moonshot.cn"
BAD_BASE = (
    "not an API key base URL: expected an http(s) URL without credentials, a host, or one of cn, global"
)


@pytest.mark.parametrize(
    ("pasted", "base_url"),
    [
        (KEY, ""),
        (f"  {KEY}\n", ""),
        (f"Bearer {KEY}", ""),
        (f"{KEY}@{CN}", CN),
        (f"{KEY}@{CN}/v1/", CN),
        (f"{KEY}@api.moonshot.cn", CN),
        (f"{KEY}@cn", CN),
        (f"{KEY}@global", "https://api.moonshot.ai"),
        (f"{KEY}@http://127.0.0.1:9000/moonshot-cn", "http://127.0.0.1:9000/moonshot-cn"),
    ],
)
def test_an_api_key_is_recognised_in_every_pasted_form(pasted: str, base_url: str) -> None:
    """A key pasted alone, after `Bearer`, or with `@` and its base URL, host or region is that api_key credential."""
    assert recognize(pasted) == ApiKeyCredential(KEY, base_url)
    assert name_of(pasted) == "api_key"


@pytest.mark.parametrize(
    ("pasted", "message"),
    [
        ("sk-kimi-" + "a" * 40, "a Kimi Code key (sk-kimi-…) is not an Open Platform API key"),
        ("sk-short", "not an API key: expected sk- and at least 16 letters, digits, '-' or '_'"),
        (f"{KEY}@ftp://api.moonshot.cn", BAD_BASE),
        (f"{KEY}@https://user:pw@api.moonshot.cn", BAD_BASE),
        (f"{KEY}@https://api.moonshot.cn?x=1", BAD_BASE),
    ],
)
def test_a_malformed_api_key_is_a_bad_request_that_never_echoes_it(pasted: str, message: str) -> None:
    """A Kimi Code key, a short key or a bad base URL is refused with what is wrong, not the key itself."""
    with pytest.raises(BadRequest) as caught:
        recognize(pasted)
    assert (caught.value.message, caught.value.param) == (message, "token")


def test_an_api_key_takes_the_default_platform_and_keeps_its_own() -> None:
    """A key pasted alone is stored with MOONSHOT_BASE_URL; one pasted with its base URL keeps it."""
    settings = PoolSettings(moonshot_base_url="https://api.moonshot.cn")
    assert admit(KEY).with_defaults(settings) == ApiKeyCredential(KEY, CN)
    assert admit(f"{KEY}@global").with_defaults(settings) == ApiKeyCredential(KEY, "https://api.moonshot.ai")
    assert admit(ACCESS, now=NOW).with_defaults(settings) == KimiAuthCredential(ACCESS)


def test_an_api_key_credential_is_tagged_and_its_id_hides_the_key() -> None:
    """The key is stored as tagged JSON with its base URL; its account id is 12 hex chars that are not the key's."""
    credential = ApiKeyCredential(KEY, CN)
    stored = encode_credential(credential)
    assert stored == f'{{"kind":"api_key","key":"{KEY}","base_url":"{CN}"}}'
    assert decode_credential(stored, "api_key") == credential
    identity = credential.identity()
    assert re.fullmatch(r"[0-9a-f]{12}", identity.account_id) and identity.account_id not in KEY
    assert identity == ApiKeyCredential(KEY, "https://api.moonshot.ai").identity()
    assert (credential.secret, credential.origin(), ApiKeyCredential(KEY).origin()) == (KEY, CN, None)
    assert kind_of(credential) is API_KEY and kind_named("api_key") is API_KEY


def test_a_client_bearer_sk_key_is_never_a_passthrough_account() -> None:
    """`Bearer sk-…` from a client (many send a dummy key) is a client key, never a pass-through account."""
    assert passthrough_tokens(KEY) is None
    assert passthrough_tokens(f"{ACCESS},{KEY}") is None
    assert passthrough_tokens("sk-anything") is None


def test_the_kinds_that_serve_a_model_follow_from_its_protocols() -> None:
    """Web kinds serve ids with a web lane, api_key ids with an `api` row; none serves what its lane lacks."""
    code, k3, family = resolve_model("kimi-k2.7-code"), resolve_model("kimi-k3"), resolve_model("kimi-search")
    assert code is not None and k3 is not None and family is not None
    assert kinds_serving(code) == {"kimi_web": frozenset(), "api_key": frozenset({"api_key"})}
    assert kinds_serving(k3) == {
        "kimi_web": frozenset({"kimi_auth", "refresh_token"}),
        "api_key": frozenset({"api_key"}),
    }
    assert kinds_serving(family) == {
        "kimi_web": frozenset({"kimi_auth", "refresh_token"}),
        "api_key": frozenset(),
    }
    assert (protocol_for("api_key", k3), protocol_for("refresh_token", k3)) == ("moonshot", "connect")
    for kind, spec in (("refresh_token", code), ("kimi_auth", code), ("api_key", family)):
        with pytest.raises(ServiceUnavailable) as caught:
            protocol_for(kind, spec)
        assert caught.value.message == f"an account of kind {kind!r} cannot serve the model {spec.id!r}"
    assert [upstream_of(kind.name) for kind in KINDS] == ["kimi_web", "kimi_web", "api_key"]
    for spec in listed_models():
        assert bool(kinds_serving(spec)["api_key"]) == (spec.api is not None)
        assert bool(kinds_serving(spec)["kimi_web"]) == spec.web


def test_an_api_key_has_its_own_cap_and_cooldowns() -> None:
    """API_KEY_MAX_CONCURRENCY caps a key; its 429 and quota cooldowns are its own settings."""
    settings = PoolSettings(
        api_key_max_concurrency=4,
        api_key_cooldown_429_s=3,
        api_key_quota_cooldown_s=99,
        cooldown_overload_s=9,
    )
    limits = API_KEY.limits(settings)
    assert limits.max_in_flight == 4
    assert dict(limits.cooldown_s) == {"rate_limited": 3, "quota": 99, "overloaded": 9}
    assert not API_KEY.refreshes and API_KEY.from_bare_secret is None
