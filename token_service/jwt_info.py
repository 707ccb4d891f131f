"""Kimi tokens as data: pull a JWT out of what a user pastes, decode its claims, describe its expiry.

Signatures are never checked (Kimi signs with its own HS512 secret); only the payload matters here. Which
kind of account a JWT is (its `typ`, `app_id`) is the registry's business: token_service/kinds.py.
"""

from __future__ import annotations

import base64
import hashlib
import re
import time
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote

import msgspec

from shared.errors import BadRequest

_JWT = re.compile(r"eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")
#: `kimi-auth=<jwt>` in a Cookie header, or `kimi-auth <jwt>` in a "name value" cookie export.
_NAMED = re.compile(r"(?:kimi-auth|refresh_token|access_token)[\s=:\"']+(eyJ[A-Za-z0-9_.-]+)")
_PREFIXES = ("bearer ", "cookie:")

_claims_decoder = msgspec.json.Decoder(dict[str, Any])


class Claims(msgspec.Struct, frozen=True):
    """The payload fields the gateway uses; every one may be absent from a real token."""

    typ: str = ""
    app_id: str = ""
    sub: str = ""
    jti: str = ""
    iat: int | None = None
    exp: int | None = None
    device_id: str = ""
    ssid: str = ""
    space_id: str = ""
    region: str = ""
    membership_level: int | None = None
    #: The 2026 issuer's audience (`["kimi.ai"]`); a string or a list in the token, always a tuple here.
    aud: tuple[str, ...] = ()


def extract_jwt(text: str) -> str | None:
    """The first Kimi JWT in a pasted value: bare, `Bearer …`, `Cookie: …`, URL-encoded, or an export."""
    value = text.strip()
    for prefix in _PREFIXES:
        if value.lower().startswith(prefix):
            value = value[len(prefix) :].strip()
    if "%" in value:
        value = unquote(value)
    named = _NAMED.search(value)
    if named:
        return named.group(1).strip().rstrip(";,")
    found = _JWT.search(value)
    return found.group(0) if found else None


def looks_like_jwt(text: str) -> bool:
    """JWT-shaped (three parts, a JSON header): meant as a Kimi token, whether or not it decodes."""
    return text.startswith("eyJ") and text.count(".") == 2


def decode_claims(token: str) -> Claims:
    """The payload of a JWT, without checking the signature; BadRequest when it is not a JWT."""
    parts = token.split(".")
    if len(parts) != 3:
        raise BadRequest("not a JWT: expected three dot-separated parts", param="token")
    try:
        raw = _claims_decoder.decode(_b64url(parts[1]))
    except (ValueError, msgspec.DecodeError):
        raise BadRequest("not a JWT: the payload does not decode", param="token") from None
    return _claims_from(raw)


def _b64url(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def _claims_from(raw: dict[str, Any]) -> Claims:
    membership = raw.get("membership")
    level = membership.get("level") if isinstance(membership, dict) else None
    return Claims(
        typ=_text(raw.get("typ")),
        app_id=_text(raw.get("app_id")),
        sub=_text(raw.get("sub")),
        jti=_text(raw.get("jti")),
        iat=_int_or_none(raw.get("iat")),
        exp=_int_or_none(raw.get("exp")),
        device_id=_text(raw.get("device_id")),
        ssid=_text(raw.get("ssid")),
        space_id=_text(raw.get("space_id")),
        region=_text(raw.get("region")),
        membership_level=_int_or_none(level),
        aud=_audience(raw.get("aud")),
    )


def _audience(value: object) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list):
        return tuple(item for item in value if isinstance(item, str))
    return ()


def _text(value: object) -> str:
    return str(value) if isinstance(value, str | int) and not isinstance(value, bool) else ""


def _int_or_none(value: object) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return int(value)


def account_id_for(token: str, claims: Claims) -> str:
    """Short, stable, non-secret: 12 hex chars of sha256(sub + jti), or of the token when those are absent."""
    basis = claims.sub + claims.jti if claims.sub and claims.jti else token
    return hashlib.sha256(basis.encode()).hexdigest()[:12]


def iso(ts: float | None) -> str | None:
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z") if ts is not None else None


def is_expired(claims: Claims, now: float | None = None) -> bool:
    return claims.exp is not None and claims.exp <= (time.time() if now is None else now)


def token_info(claims: Claims, kind: str | None, now: float | None = None) -> dict[str, object]:
    """The `token_info` object of kimi-free-api-fix (kimi-web-connect.md §4.6), plus `kind` (None: no kind
    recognises the token)."""
    now = time.time() if now is None else now
    remaining = max(0.0, (claims.exp - now) / 3600) if claims.exp is not None else None
    return {
        "valid": True,
        "kind": kind,
        "app_id": claims.app_id or None,
        "type": claims.typ or None,
        "user_id": claims.sub or None,
        "space_id": claims.space_id or None,
        "device_id": claims.device_id or None,
        "region": claims.region or None,
        "issued_at": iso(claims.iat),
        "expires_at": iso(claims.exp),
        "is_expired": is_expired(claims, now) if claims.exp is not None else None,
        "membership_level": claims.membership_level,
        "remaining_hours": round(remaining, 1) if remaining is not None else None,
    }
