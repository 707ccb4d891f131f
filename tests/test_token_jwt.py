"""Pure tests of token parsing, expiry info and secret sealing (no I/O); kinds: tests/test_token_kinds.py."""

from __future__ import annotations

from urllib.parse import quote

import jwt
import pytest
from cryptography.fernet import Fernet

from shared.errors import ServiceUnavailable
from shared.secret import Secret
from token_service.crypto import SecretBox
from token_service.jwt_info import account_id_for, decode_claims, extract_jwt, looks_like_jwt, token_info
from token_service.kinds import name_of

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
    membership={"level": 10},
)
REFRESH = mint(typ="refresh", sub="d4t8j3es1rh1oljov7g0", jti="j2", iat=NOW, exp=NOW + 90 * 86400)


@pytest.mark.parametrize(
    "pasted",
    [
        ACCESS,
        f"  {ACCESS}\n",
        f"Bearer {ACCESS}",
        f"Cookie: _ga=GA1.1; kimi-auth={ACCESS}; theme=dark",
        f"kimi-auth={quote(ACCESS, safe='')}",
        f"_ga\tGA1.1\nkimi-auth\t{ACCESS}\ntheme\tdark",
        f'{{"kimi-auth": "{ACCESS}"}}',
    ],
)
def test_extract_jwt_accepts_every_pasted_form(pasted: str) -> None:
    """A bare JWT, Bearer / Cookie: prefixes, URL-encoding and a name-value export all yield the JWT."""
    assert extract_jwt(pasted) == ACCESS


def test_extract_jwt_finds_nothing_in_garbage() -> None:
    """Text without a JWT gives None rather than a guess."""
    assert extract_jwt("session=abc; theme=dark") is None


def test_jwt_shape_is_three_parts_with_a_json_header() -> None:
    """A JWT-shaped string starts `eyJ` and has three dot-separated parts; a key or a cookie dump does not."""
    assert looks_like_jwt(ACCESS) and looks_like_jwt("eyJx.y.")
    assert not looks_like_jwt("sk-abc") and not looks_like_jwt(f"kimi-auth={ACCESS}")
    assert not looks_like_jwt("eyJx.y") and not looks_like_jwt("eyJa.b.c.d")


def test_token_info_matches_the_fix_project_shape() -> None:
    """token_info carries the kimi-free-api-fix fields with ISO times and hours left to one decimal."""
    info = token_info(decode_claims(ACCESS), name_of(ACCESS), now=NOW + 3600)
    assert info == {
        "valid": True,
        "kind": "kimi_auth",
        "app_id": "kimi",
        "type": "access",
        "user_id": "d4t8j3es1rh1oljov7g0",
        "space_id": None,
        "device_id": "7586915550627013133",
        "region": None,
        "issued_at": "2027-01-15T08:00:00Z",
        "expires_at": "2027-01-15T10:00:00Z",
        "is_expired": False,
        "membership_level": 10,
        "remaining_hours": 1.0,
    }


def test_account_id_is_stable_and_not_the_token() -> None:
    """The id is 12 hex chars of sha256(sub+jti): the same for the same token, unrelated to its text."""
    claims = decode_claims(REFRESH)
    account_id = account_id_for(REFRESH, claims)
    assert account_id == account_id_for(REFRESH, decode_claims(REFRESH))
    assert len(account_id) == 12 and int(account_id, 16) >= 0
    assert account_id not in REFRESH


def test_secret_box_seals_with_fernet_and_reads_plaintext_of_before() -> None:
    """With a Fernet key, stored values are Fernet ciphertext; plaintext saved earlier still opens."""
    box = SecretBox(Secret(Fernet.generate_key().decode()))
    sealed = box.seal(ACCESS)
    assert sealed.startswith("f:gAAAAA") and ACCESS not in sealed
    assert box.open(sealed) == ACCESS
    assert box.open(SecretBox(None).seal(ACCESS)) == ACCESS


def test_secret_box_without_key_refuses_ciphertext() -> None:
    """A sealed secret read without TOKEN_ENCRYPTION_KEY is an explicit error, never ciphertext as a token."""
    sealed = SecretBox(Secret("k")).seal(ACCESS)
    with pytest.raises(ServiceUnavailable, match="TOKEN_ENCRYPTION_KEY is not set"):
        SecretBox(None).open(sealed)
