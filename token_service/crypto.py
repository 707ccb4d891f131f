"""Secrets at rest: Fernet when TOKEN_ENCRYPTION_KEY is set, a marked plaintext (and a warning) otherwise.

Stored values carry a prefix, so turning encryption on later still reads the accounts saved before, and a
missing key is reported instead of returning ciphertext as a token:
    p:<plain>                  no key (every box made without one warns: `tokens_stored_in_plaintext`)
    f:<fernet>                 a real Fernet key used as is; or, written by older versions, a passphrase
                               stretched with one unsalted SHA-256 (still read, never written any more)
    s:<salt>:<fernet>          a passphrase stretched with scrypt and a random salt (one per SecretBox)
`make run` (deploy/run.py) creates a Fernet key file on first start when no key is set.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import os

from cryptography.fernet import Fernet, InvalidToken

from shared.errors import ServiceUnavailable
from shared.logging import get_logger
from shared.secret import Secret

log = get_logger("token_service.crypto")
#: scrypt's cost (RFC 7914 §2: N=2^14, r=8 is the interactive-login setting, ~16 MB and tens of ms): paid once
#: per salt per process, as derived keys are cached.
_SCRYPT_N, _SCRYPT_R, _SCRYPT_P = 2**14, 8, 1
_SALT_BYTES = 16


class SecretBox:
    """Seals and opens token strings for storage in Redis."""

    def __init__(self, key: Secret | None) -> None:
        self._key = key.reveal() if key else None
        self._fernet = Fernet(self._key.encode()) if self._key and _is_fernet_key(self._key) else None
        self._salt = os.urandom(_SALT_BYTES)
        if self._key is None:
            _warn_plaintext()

    def seal(self, value: str) -> str:
        if self._key is None:
            return "p:" + value
        if self._fernet is not None:
            return "f:" + self._fernet.encrypt(value.encode()).decode()
        salt = base64.urlsafe_b64encode(self._salt).decode()
        return f"s:{salt}:" + _stretched(self._key, self._salt).encrypt(value.encode()).decode()

    def open(self, stored: str) -> str:
        if stored.startswith("p:"):
            return stored[2:]
        if not stored.startswith(("f:", "s:")):
            return stored
        if self._key is None:
            raise ServiceUnavailable("an account secret is encrypted but TOKEN_ENCRYPTION_KEY is not set")
        fernet, token = self._fernet_for(stored)
        try:
            return fernet.decrypt(token.encode()).decode()
        except InvalidToken:
            raise ServiceUnavailable("an account secret does not decrypt with TOKEN_ENCRYPTION_KEY") from None

    def _fernet_for(self, stored: str) -> tuple[Fernet, str]:
        assert self._key is not None
        if stored.startswith("f:"):
            return self._fernet or _legacy(self._key), stored[2:]
        salt, _, token = stored[2:].partition(":")
        try:
            return _stretched(self._key, base64.urlsafe_b64decode(salt.encode())), token
        except (ValueError, binascii.Error):
            raise ServiceUnavailable("an account secret has a damaged salt") from None


def _is_fernet_key(raw: str) -> bool:
    try:
        return len(base64.urlsafe_b64decode(raw.encode())) == 32
    except (ValueError, binascii.Error):
        return False


@functools.lru_cache(maxsize=64)
def _stretched(passphrase: str, salt: bytes) -> Fernet:
    key = hashlib.scrypt(
        passphrase.encode(), salt=salt, n=_SCRYPT_N, r=_SCRYPT_R, p=_SCRYPT_P, dklen=32, maxmem=64 * 2**20
    )
    return Fernet(base64.urlsafe_b64encode(key))


@functools.lru_cache(maxsize=4)
def _legacy(passphrase: str) -> Fernet:
    """How older versions stretched a passphrase: read only, so their accounts still open."""
    return Fernet(base64.urlsafe_b64encode(hashlib.sha256(passphrase.encode()).digest()))


def _warn_plaintext() -> None:
    log.warning(
        "tokens_stored_in_plaintext",
        detail="TOKEN_ENCRYPTION_KEY is not set: Kimi tokens are stored in Redis unencrypted;"
        " set it (a Fernet key or a passphrase); `make run` creates a key file for you",
    )
