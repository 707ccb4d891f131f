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

from shared.errors import AuthenticationFailed, BadRequest
from shared.models import listed_models, resolve_model
from shared.settings import PoolSettings
from token_service.client import check_passthrough, passthrough_tokens, protocol_for
from token_service.jwt_info import decode_claims
from token_service.kinds import (
    KIMI_AUTH,
    KINDS,
    REFRESH_TOKEN,
    STATES,
    Identity,
    KimiAuthCredential,
    RefreshTokenCredential,
    admit,
    decode_credential,
    encode_credential,
    kind_named,
    kind_of,
    max_in_flight,
    name_of,
    recognize,
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
ACCEPTED = "expected a kimi-auth (typ=access, app_id=kimi) or a refresh_token (typ=refresh)"


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
        assert (protocol_for("kimi_auth", spec), protocol_for("refresh_token", spec)) == (
            "connect",
            spec.protocol,
        )


def test_each_kind_says_whether_it_refreshes_and_its_caps() -> None:
    """Only refresh_token refreshes; both web kinds cap an account at ACCOUNT_MAX_CONCURRENCY (at least 1)."""
    assert [(kind.name, kind.refreshes) for kind in KINDS] == [("kimi_auth", False), ("refresh_token", True)]
    assert max_in_flight(PoolSettings()) == {"kimi_auth": 1, "refresh_token": 1}
    assert max_in_flight(PoolSettings(max_concurrency_per_account=3)) == {"kimi_auth": 3, "refresh_token": 3}
    assert max_in_flight(PoolSettings(max_concurrency_per_account=0)) == {"kimi_auth": 1, "refresh_token": 1}
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
    r"""(?:[=!]=\s*|\bin\s*[(\[{][^)\]}]*|\bcase\s+)["'](?:kimi_auth|refresh_token)["']"""
    r"""|["'](?:kimi_auth|refresh_token)["']\s*(?:[=!]=|\bin\b)"""
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
