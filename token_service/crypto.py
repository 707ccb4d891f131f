"""Secrets at rest: Fernet when TOKEN_ENCRYPTION_KEY is set, a marked plaintext otherwise.

Stored values carry a prefix (`f:` Fernet, `p:` plain) so that turning encryption on later still reads the
accounts saved before, and a missing key is reported instead of returning ciphertext as a token.
"""

from __future__ import annotations

import base64
import hashlib

from cryptography.fernet import Fernet, InvalidToken

from shared.errors import ServiceUnavailable
from shared.secret import Secret


class SecretBox:
    """Seals and opens token strings for storage in Redis."""

    def __init__(self, key: Secret | None) -> None:
        self._fernet = Fernet(_fernet_key(key.reveal())) if key else None

    def seal(self, value: str) -> str:
        if self._fernet is None:
            return "p:" + value
        return "f:" + self._fernet.encrypt(value.encode()).decode()

    def open(self, stored: str) -> str:
        if stored.startswith("p:"):
            return stored[2:]
        if not stored.startswith("f:"):
            return stored
        if self._fernet is None:
            raise ServiceUnavailable("an account secret is encrypted but TOKEN_ENCRYPTION_KEY is not set")
        try:
            return self._fernet.decrypt(stored[2:].encode()).decode()
        except InvalidToken:
            raise ServiceUnavailable("an account secret does not decrypt with TOKEN_ENCRYPTION_KEY") from None


def _fernet_key(raw: str) -> bytes:
    """A real Fernet key is used as is; any other passphrase is stretched into one with sha256."""
    try:
        if len(base64.urlsafe_b64decode(raw.encode())) == 32:
            return raw.encode()
    except ValueError:
        pass
    return base64.urlsafe_b64encode(hashlib.sha256(raw.encode()).digest())
