"""JWT-shaped tokens and xid-like ids, as Kimi issues them (kimi-web-rest.md §2.2, kimi-web-connect.md §4.2).

The tokens are real HS512 JWTs signed with a fixed simulator key; clients never verify the signature, and the
simulator itself only decodes the payload and checks it against its own state.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from typing import Any

import msgspec

_XID_ALPHABET = "0123456789abcdefghijklmnopqrstuv"
_SIGNING_KEY = b"kimi-simulator-not-a-secret"
_HEADER = {"alg": "HS512", "typ": "JWT"}
_encoder = msgspec.json.Encoder(order="deterministic")


def new_xid() -> str:
    """A 20-character id over `[0-9a-v]`, the shape of Kimi's chat, user and message ids."""
    return "".join(_XID_ALPHABET[b % 32] for b in secrets.token_bytes(20))


def new_digits(count: int = 19) -> str:
    """A decimal string such as Kimi's `device_id` and `ssid` claims (19 digits, no leading zero)."""
    return str(secrets.randbelow(9) + 1) + "".join(str(secrets.randbelow(10)) for _ in range(count - 1))


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def mint_jwt(claims: dict[str, Any]) -> str:
    """An HS512 JWT carrying `claims` (the signature is valid for the simulator key, and irrelevant)."""
    signing_input = f"{_b64(_encoder.encode(_HEADER))}.{_b64(_encoder.encode(claims))}"
    signature = hmac.new(_SIGNING_KEY, signing_input.encode("ascii"), hashlib.sha512).digest()
    return f"{signing_input}.{_b64(signature)}"


def decode_claims(token: str) -> dict[str, Any]:
    """The payload of a JWT, unverified; raises ValueError when `token` is not JWT-shaped."""
    parts = token.split(".")
    if len(parts) != 3:
        raise ValueError("not a JWT")
    try:
        payload = base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4))
        claims = msgspec.json.decode(payload)
    except (ValueError, msgspec.DecodeError) as exc:
        raise ValueError("undecodable JWT payload") from exc
    if not isinstance(claims, dict):
        raise ValueError("JWT payload is not an object")
    return claims
